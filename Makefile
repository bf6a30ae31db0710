PY ?= python3
VENV := .venv
VPY := $(VENV)/bin/python

.PHONY: install test bench gpu-check device-wheels clean

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

# Wheels the GPU machine lacks (it has torch, numpy, pillow, pyarrow; Python 3.12, no
# internet): carry .whl/ to it, then
#   pip install --no-index --no-deps --target /tmp/site .whl/*.whl && PYTHONPATH=/tmp/site:$$PWD ...
device-wheels:
	rm -rf .whl && $(PY) -m pip download -q -d .whl --only-binary=:all: --python-version 3.12 \
	    --implementation cp --platform manylinux2014_x86_64 --platform manylinux_2_17_x86_64 \
	    --platform manylinux_2_28_x86_64 webdataset "transformers>=4.45" typer rich
	rm -f .whl/numpy-*.whl

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache
