PY ?= python3
VENV := .venv
VPY := $(VENV)/bin/python

.PHONY: install test bench gpu-check clean

install:
	$(PY) -m venv $(VENV)
	$(VPY) -m pip install -q --upgrade pip
	$(VPY) -m pip install -q -e ".[test]"

test:
	$(VPY) -m pytest -q -ra tests

bench:
	$(VPY) -m benchmarks.run_cpu

gpu-check:
	PYTHONPATH=. $(VPY) benchmarks/gpu_check.py --out benchmarks/results/gpu-$$(date +%F).md

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache
