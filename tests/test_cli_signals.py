"""A stop signal outside a run's own handling (start-up, a download) ends the command with
exit 4 and a one-line message, not a signal death (143) or click's 'Aborted!' (1)."""
from __future__ import annotations

import signal
import socket
import subprocess
import threading

import pytest

from tests.helpers.cli import WEBSSL, child_env


@pytest.fixture
def silent_server():
    """A 127.0.0.1 server that accepts connections and never answers; ``accepted`` is set at
    the first connection, when the client is blocked waiting for a reply."""
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen()
    accepted = threading.Event()
    held: list[socket.socket] = []

    def serve() -> None:
        try:
            while True:
                conn, _ = srv.accept()
                held.append(conn)
                accepted.set()
        except OSError:
            pass

    threading.Thread(target=serve, daemon=True).start()
    yield f"http://127.0.0.1:{srv.getsockname()[1]}/", accepted
    srv.close()
    for c in held:
        c.close()


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_signal_during_a_download_exits_4(sig, silent_server, tmp_path) -> None:
    base, accepted = silent_server
    env = child_env({"WEBSSL_PTH_BASE_URL": base, "WEBSSL_CACHE": str(tmp_path / "cache"),
                     "WEBSSL_OFFLINE": None, "HF_HUB_OFFLINE": None})
    p = subprocess.Popen([WEBSSL, "download", "dino300m-full2b-224", "--source", "pth"],
                         env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert accepted.wait(120), "the download never connected"
        p.send_signal(sig)
        _, err = p.communicate(timeout=60)
    finally:
        p.kill()
    assert p.returncode == 4, err[-2000:]
    assert f"stopped by {sig.name}" in err or "interrupted" in err, err[-2000:]
    assert "Traceback" not in err


@pytest.mark.parametrize("orphan", [True, False])
def test_a_repeated_sigterm_after_the_launcher_died_still_stops_cleanly(orphan) -> None:
    """A --gpus worker whose launcher is gone may get the kernel's parent-death SIGTERM twice
    (a threaded launcher): the repeat must not make it exit at once, leaving its claims.
    Without a dead launcher, a second SIGTERM still exits at once (4). Real signals to a real
    process running the stop handlers."""
    import sys
    import textwrap
    script = textwrap.dedent(f"""
        import os, sys, time
        from webssl_cli.distributed.signals import StopFlag, current_policy, preemption_handlers
        if {orphan!r}:
            current_policy().launcher = os.getppid() + 10**6   # not our parent: it is gone
        flag = StopFlag()
        with preemption_handlers(flag, "[w]"):
            print("ready", flush=True)
            while not flag:
                time.sleep(0.01)
            time.sleep(1.5)                                    # cleanup; the repeat comes
            print("cleaned up", flush=True)
    """)
    p = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True, env=child_env({}))
    assert p.stdout.readline().strip() == "ready"
    p.send_signal(signal.SIGTERM)
    import time
    time.sleep(0.3)
    p.send_signal(signal.SIGTERM)
    out, err = p.communicate(timeout=60)
    if orphan:
        assert p.returncode == 0 and "cleaned up" in out, err
        assert "SIGTERM again after the launcher died" in err
    else:
        assert p.returncode == 4 and "cleaned up" not in out, err


def test_api_with_gpus_stopped_while_planning_returns_exit_4(silent_server, tmp_path) -> None:
    """``webssl_cli.extract`` with ``gpus=2``: a SIGTERM while the launcher plans (here a
    Parquet URL whose server never answers) returns a RunResult with exit code 4 instead of
    killing the caller's interpreter."""
    import sys
    import textwrap
    from tests.extract_helpers import SPEC, WEIGHTS
    base, accepted = silent_server
    script = textwrap.dedent(f"""
        import webssl_cli
        from webssl_cli.config import (ExtractConfig, InputConfig, ModelConfig, OutputConfig,
                                       RuntimeConfig)
        cfg = ExtractConfig(InputConfig(({base + "p.parquet"!r},)),
                            ModelConfig(model_config={str(SPEC)!r}, weights={str(WEIGHTS)!r},
                                        resolution=28, device="cpu"),
                            OutputConfig({str(tmp_path / "out")!r}),
                            RuntimeConfig(gpus=2, num_workers=0))
        print("RESULT", webssl_cli.extract(cfg).exit_code, flush=True)
    """)
    p = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True, env=child_env({}))
    try:
        assert accepted.wait(120), "planning never connected"
        p.send_signal(signal.SIGTERM)
        out, err = p.communicate(timeout=120)
    finally:
        p.kill()
    assert "RESULT 4" in out and p.returncode == 0, (p.returncode, out, err[-2000:])
    assert "Traceback" not in err
