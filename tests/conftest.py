"""Shared pytest setup. Sections are owned by the stage they serve."""
from __future__ import annotations

import os

# --- network isolation (lead) ---
# huggingface_hub reads HF_ENDPOINT at import time and, on any Hub request, may fetch
# `{ENDPOINT}/api/agent-harnesses`. Point every test process (and the subprocesses they
# start, which inherit this environment) at a closed port on 127.0.0.1 so that no test can
# ever reach an outside address; tests that need a Hub start their own server and set
# HF_ENDPOINT themselves.
os.environ.setdefault("HF_ENDPOINT", "http://127.0.0.1:9")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
os.environ.setdefault("DO_NOT_TRACK", "1")
