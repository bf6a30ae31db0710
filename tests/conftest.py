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
# nothing a test runs writes into the user's weights cache (e.g. the weights' sha256 memo)
import tempfile as _tempfile  # noqa: E402
os.environ.setdefault("WEBSSL_CACHE", _tempfile.mkdtemp(prefix="webssl-test-cache-"))


# --- input servers (readers) ---
# A real S3 server (SeaweedFS `weed mini`, moto as fallback) for the whole session, and a helper
# fixture that points the standard AWS environment at it (isolated from ~/.aws).
import pytest as _pytest_readers


@_pytest_readers.fixture(scope="session")
def s3_endpoint(tmp_path_factory):
    """(endpoint_url, access_key, secret_key) of an S3 server on 127.0.0.1."""
    from tests.helpers.servers import s3_server

    with s3_server(tmp_path_factory.mktemp("s3")) as info:
        yield info


@_pytest_readers.fixture
def s3_env(s3_endpoint, monkeypatch, tmp_path):
    """Standard AWS environment for ``s3_endpoint`` (credentials, region; no ~/.aws files,
    no endpoint variable): returns the endpoint URL."""
    endpoint, key, secret = s3_endpoint
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", key)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", secret)
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-aws-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-aws-credentials"))
    for name in ("AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "WEBSSL_S3_ENDPOINT_URL",
                 "AWS_PROFILE", "AWS_SESSION_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    return endpoint
