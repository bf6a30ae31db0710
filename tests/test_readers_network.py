"""Remote inputs over an unreliable network, against real servers on 127.0.0.1 that fail on
purpose (:class:`~tests.helpers.servers.FlakyServer`): transient failures (5xx, 429 with
Retry-After, reset connections) are retried; a server that stays down fails the unit (not
committed, exit 3) instead of filling the ledger, and the rerun after it is back completes;
HTTP shards resume mid-stream with Range; planning tells a down server (exit 1) from a wrong
input (exit 2); ``pipe:`` commands die with their whole process group.

Backoff waits are shrunk with ``WEBSSL_HTTP_BACKOFF_S`` so the tests do not sleep.
"""
from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path

import pytest

from tests.extract_helpers import cli_args
from tests.helpers import images as gen
from tests.helpers.cli import cli_here
from tests.helpers.servers import FlakyServer, free_ports
from webssl_cli import read_features
from webssl_cli.config import InputConfig
from webssl_cli.errors import UsageError, WebsslError
from webssl_cli.readers import ReadError, iter_samples, pipe_stream, plan_units
from webssl_cli.store import OutputLayout, done_units


@pytest.fixture(autouse=True)
def fast_backoff(monkeypatch):
    monkeypatch.setenv("WEBSSL_HTTP_BACKOFF_S", "0.01")
    monkeypatch.delenv("WEBSSL_HTTP_TIMEOUT", raising=False)


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("net")
    gen.write_shards(root / "wds", n_shards=1, per_shard=6, seed=3)
    (root / "imgs").mkdir()
    for i in range(6):
        (root / "imgs" / f"{i}.jpg").write_bytes(gen.make_jpeg(40, 30, seed=i))
    return root


def url_list(tmp_path: Path, base: str, names: list[str]) -> Path:
    lst = tmp_path / "urls.txt"
    lst.write_text("".join(f"{base}/imgs/{n}\n" for n in names))
    return lst


def samples(c: InputConfig) -> list:
    return [s for u in plan_units(c) for s in iter_samples(u, c)]


# --- image URLs (files units) ----------------------------------------------------------------

def test_image_urls_retry_transient_failures_but_not_404(tmp_path, data):
    with FlakyServer(data, retry_after=1) as srv:
        srv.fail("/imgs/0.jpg", 500, 503)
        srv.fail("/imgs/1.jpg", "reset")
        srv.fail("/imgs/2.jpg", 429)                       # Retry-After: 1
        lst = url_list(tmp_path, srv.base, ["0.jpg", "1.jpg", "2.jpg", "404.jpg"])
        got = {s.key.rsplit("/", 1)[-1]: s for s in samples(InputConfig(inputs=(str(lst),)))}
        for n in ("0", "1", "2"):
            assert got[f"{n}.jpg"].data == (data / "imgs" / f"{n}.jpg").read_bytes()
        assert len(srv.requests("/imgs/0.jpg")) == 3 and len(srv.requests("/imgs/1.jpg")) == 2
        # the backoff is 0.01 s here: a wait of a second is the server's Retry-After
        assert srv.arrival_gaps("/imgs/2.jpg")[0] >= 0.9
        bad = got["404.jpg"]
        assert bad.data is None and bad.error_type == "HTTPError" and "404" in bad.error
        assert len(srv.requests("/imgs/404.jpg")) == 1      # a 404 is final: not retried


def test_persistent_5xx_is_a_sample_failure_when_others_read(tmp_path, data):
    with FlakyServer(data) as srv:
        srv.fail("/imgs/1.jpg", *[503] * 10)
        lst = url_list(tmp_path, srv.base, ["0.jpg", "1.jpg"])
        got = samples(InputConfig(inputs=(str(lst),)))
        assert got[0].data is not None
        assert got[1].data is None and got[1].error_type == "TransientNetworkError"
        assert "HTTP 503" in got[1].error and "4 attempts" in got[1].error
        assert len(srv.requests("/imgs/1.jpg")) == 4        # 1 + 3 retries


def test_after_a_host_failed_its_later_urls_get_one_attempt(tmp_path, data):
    """Web-scale URL lists have many dead hosts: the backoff is paid once per host."""
    with FlakyServer(data) as srv:
        for n in (1, 2, 3):
            srv.fail(f"/imgs/{n}.jpg", *[503] * 10)
        lst = url_list(tmp_path, srv.base, ["0.jpg", "1.jpg", "2.jpg", "3.jpg", "4.jpg"])
        got = samples(InputConfig(inputs=(str(lst),)))
        assert [s.data is not None for s in got] == [True, False, False, False, True]
        assert [len(srv.requests(f"/imgs/{n}.jpg")) for n in (1, 2, 3)] == [4, 1, 1]
        assert "(1 attempt)" in got[2].error


def test_server_down_fails_the_unit_instead_of_every_sample(tmp_path, data):
    port = free_ports(1)[0]
    lst = url_list(tmp_path, f"http://127.0.0.1:{port}", [f"{i}.jpg" for i in range(6)])
    c = InputConfig(inputs=(str(lst),))
    (unit,) = plan_units(c)
    got = []
    with pytest.raises(ReadError) as info:
        for s in iter_samples(unit, c):
            got.append(s)
    msg = str(info.value)
    assert "no image could be read" in msg and f"127.0.0.1:{port}" in msg
    assert "Connection refused" in msg and "rerun" in msg
    assert len(got) == 3       # gave up after 3 dead URLs in a row, not after all 6


def test_bad_http_timeout_setting_is_clear(tmp_path, data, monkeypatch):
    monkeypatch.setenv("WEBSSL_HTTP_TIMEOUT", "soon")
    with FlakyServer(data) as srv:
        with pytest.raises(UsageError, match="WEBSSL_HTTP_TIMEOUT='soon' is not a positive"):
            plan_units(InputConfig(inputs=(f"{srv.base}/wds/shard-000000.tar",)))
        r = cli_here(cli_args([f"{srv.base}/wds/shard-000000.tar"], tmp_path / "o"),
                     env={"WEBSSL_HTTP_TIMEOUT": "-3"})
        assert r.returncode == 2 and "WEBSSL_HTTP_TIMEOUT='-3'" in r.stderr


def test_idle_read_timeout_is_worded_as_no_data(tmp_path, data, monkeypatch):
    monkeypatch.setenv("WEBSSL_HTTP_TIMEOUT", "0.3")
    with FlakyServer(data, stall_s=2.0) as srv:
        srv.fail("/imgs/1.jpg", *["stall"] * 4)
        lst = url_list(tmp_path, srv.base, ["0.jpg", "1.jpg"])
        got = samples(InputConfig(inputs=(str(lst),)))
        assert got[0].data is not None and got[1].data is None
        assert "no data for 0.3 s" in got[1].error and "ReadTimeout" not in got[1].error


def test_server_down_run_exits_3_uncommitted_then_rerun_completes(tmp_path, data):
    port = free_ports(1)[0]
    lst = url_list(tmp_path, f"http://127.0.0.1:{port}", [f"{i}.jpg" for i in range(4)])
    out = tmp_path / "out"
    args = cli_args([lst], out, "--num-workers", "1")
    r = cli_here(args)
    assert r.returncode == 3, r.stderr
    assert "no image could be read" in r.stderr and "rerun" in r.stderr
    assert done_units(OutputLayout(out), recover=False) == {}
    with FlakyServer(data, port=port):
        r = cli_here(args)
    assert r.returncode == 0, r.stderr
    keys, x = read_features(out, "cls")
    assert sorted(k.rsplit("/", 1)[-1] for k in keys) == [f"{i}.jpg" for i in range(4)]


# --- tar shards over HTTP --------------------------------------------------------------------

def test_http_shard_retries_open_and_resumes_mid_stream(data):
    local = [(s.key, s.data) for s in samples(InputConfig(inputs=(str(data / "wds"),)))]
    with FlakyServer(data, ranges=True) as srv:
        path = "/wds/shard-000000.tar"
        srv.fail(path, 500, method="GET")
        srv.fail(path, "reset", "reset", method="GET")
        got = [(s.key, s.data) for s in samples(InputConfig(inputs=(srv.base + path,)))]
        assert got == local
        ranges = [r[2] for r in srv.requests(path)]
        assert ranges[:2] == [None, None] and len(ranges) == 4
        assert all(r and r.startswith("bytes=") and r != "bytes=0-" for r in ranges[2:])
        size = (data / "wds" / "shard-000000.tar").stat().st_size
        assert int(ranges[2][6:-1]) == size // 2            # resumed where it broke


def test_http_shard_resume_refused_when_the_file_changed(data):
    with FlakyServer(data, ranges=True) as srv:
        path = "/wds/shard-000000.tar"
        srv.fail(path, ("reset", '"v2"'), method="GET")   # the file changes mid-transfer
        c = InputConfig(inputs=(srv.base + path,))
        with pytest.raises(ReadError, match=r"resuming at byte \d+: the server answered HTTP "
                                            r"200 instead of 206"):
            samples(c)
        assert [r[2] for r in srv.requests(path)][-1].startswith("bytes=")


def test_http_shard_without_ranges_fails_clearly_after_a_break(data):
    with FlakyServer(data, ranges=False) as srv:
        path = "/wds/shard-000000.tar"
        srv.fail(path, "reset", method="GET")
        c = InputConfig(inputs=(srv.base + path,))
        with pytest.raises(ReadError, match="cannot resume: the server sent neither"):
            samples(c)


def test_http_shard_persistent_503_says_so(data):
    with FlakyServer(data) as srv:
        path = "/wds/shard-000000.tar"
        c = InputConfig(inputs=(srv.base + path,))
        (unit,) = plan_units(c)
        srv.fail(path, *[503] * 10, method="GET")
        with pytest.raises(ReadError, match=r"HTTP 503 .*\(4 attempts\).*rerun"):
            list(iter_samples(unit, c))


# --- planning -----------------------------------------------------------------------------------

def test_planning_retries_a_transient_503(data):
    with FlakyServer(data) as srv:
        srv.fail("/wds/shard-000000.tar", 503, 503, method="HEAD")
        (unit,) = plan_units(InputConfig(inputs=(f"{srv.base}/wds/shard-000000.tar",)))
        assert unit.kind == "tar"
        srv.fail("/lst.txt", 502, method="GET")
        (data / "lst.txt").write_text(f"{srv.base}/imgs/0.jpg\n")
        (unit,) = plan_units(InputConfig(inputs=(f"{srv.base}/lst.txt",)))
        assert unit.items == (f"{srv.base}/imgs/0.jpg",)


def test_planning_down_server_is_exit_1_not_a_usage_error(tmp_path, data):
    with FlakyServer(data) as srv:
        url = f"{srv.base}/wds/shard-000000.tar"
        srv.fail("/wds/shard-000000.tar", *[503] * 10)
        with pytest.raises(WebsslError) as info:
            plan_units(InputConfig(inputs=(url,)))
        assert not isinstance(info.value, UsageError) and info.value.exit_code == 1
        r = cli_here(cli_args([url], tmp_path / "o1"))
        assert r.returncode == 1, r.stderr
        assert url in r.stderr and "HTTP 503" in r.stderr and "rerun" in r.stderr
        r = cli_here(cli_args([f"{srv.base}/wds/absent.tar"], tmp_path / "o2"))
        assert r.returncode == 2 and "HTTP 404" in r.stderr
    dead = f"http://127.0.0.1:{free_ports(1)[0]}/x.tar"
    r = cli_here(cli_args([dead], tmp_path / "o3"))
    assert r.returncode == 1 and "Connection refused" in r.stderr and dead in r.stderr


# --- parquet over HTTP (ranged reads) ------------------------------------------------------------

@pytest.fixture(scope="module")
def pq_data(tmp_path_factory) -> Path:
    """A parquet of 20 images in row groups of 7 (three groups: several ranged reads)."""
    root = tmp_path_factory.mktemp("pq")
    gen.write_parquet(root / "p.parquet", [gen.make_jpeg(40, 30, seed=i) for i in range(20)])
    return root


def _pairs(got: list) -> list:
    return [(s.key, s.data) for s in got]


@pytest.mark.parametrize("ranges", [True, False])
def test_http_parquet_reads_like_the_local_file_despite_transient_failures(pq_data, ranges):
    """Every ranged request (the size probe, the footer, each column chunk) is retried: 503s
    and connections reset mid-body cost retries, not the unit. A server without Range
    support is read whole."""
    local = _pairs(samples(InputConfig(inputs=(str(pq_data / "p.parquet"),))))
    with FlakyServer(pq_data, ranges=ranges) as srv:
        srv.fail("/p.parquet", 503, "reset", 503, 502, "reset")
        got = _pairs(samples(InputConfig(inputs=(f"{srv.base}/p.parquet",))))
        gets = srv.requests("/p.parquet")
        assert srv.faults[(None, "/p.parquet")] == []      # every planned failure was met
    assert got == local and len(got) == 20
    if ranges:
        assert all(r[2] and r[2].startswith("bytes=") for r in gets)


def test_http_parquet_parts_fetch_the_unit_about_once_between_them(tmp_path):
    """Three parts (DataLoader workers) of one unit over HTTP: the bytes they ask the server
    for, footers aside, add up to about the file, not three times it (each part's read-ahead
    used to run to the end of the file)."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq
    from webssl_cli.readers.parquet_reader import iter_parquet_samples
    rng = np.random.default_rng(0)
    path = tmp_path / "g.parquet"
    pq.write_table(pa.table({"image": pa.array([rng.bytes(60_000) for _ in range(120)],
                                               type=pa.binary())}), path, row_group_size=10,
                   write_statistics=False)
    size = path.stat().st_size
    with FlakyServer(tmp_path, ranges=True) as srv:
        c = InputConfig(inputs=(f"{srv.base}/g.parquet",), shard_size=120)
        (unit,) = plan_units(c)
        before = len(srv.requests("/g.parquet"))
        rows = [s.index for part in range(3) for s in iter_parquet_samples(unit, c, part, 3)]
        asked = 0
        for _, _, rng_header in srv.requests("/g.parquet")[before:]:
            start, _, end = rng_header.removeprefix("bytes=").partition("-")
            if int(start) < size - 200_000:       # data, not the footer or the size probe
                asked += (int(end) if end else size - 1) - int(start) + 1
    assert sorted(rows) == list(range(120))
    assert asked < 1.3 * size, (asked, size)


def test_http_parquet_that_changes_while_read_fails_the_unit(pq_data):
    with FlakyServer(pq_data, ranges=True) as srv:
        c = InputConfig(inputs=(f"{srv.base}/p.parquet",))
        (unit,) = plan_units(c)
        # the third request of the read (after the size probe and the footer) breaks, and
        # the file is replaced on the server from then on
        srv.fail("/p.parquet", "serve", "serve", ("reset", '"v2"'))
        with pytest.raises(ReadError, match="changed on the server while it was read"):
            list(iter_samples(unit, c))


def test_http_parquet_down_at_planning_is_a_network_failure_not_a_usage_error(pq_data):
    with FlakyServer(pq_data, ranges=True) as srv:
        srv.fail("/p.parquet", *[503] * 4, method="GET")     # HEAD answers, reads fail
        with pytest.raises(WebsslError, match=r"HTTP 503 .*4 attempts.*not at fault") as info:
            plan_units(InputConfig(inputs=(f"{srv.base}/p.parquet",)))
    assert not isinstance(info.value, UsageError)


# --- pipe: commands -----------------------------------------------------------------------------

def _gone(pid: int, within: float = 5.0) -> bool:
    """True once ``pid`` no longer runs (gone, or a zombie about to be reaped)."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except (ProcessLookupError, FileNotFoundError):
            return True
        if state in ("Z", "X"):
            return True
        time.sleep(0.05)
    return False


@pytest.fixture
def ignoring_stop_signals():
    """Like a DataLoader worker: SIGINT/SIGTERM ignored while the pipe: command starts."""
    saved = {s: signal.signal(s, signal.SIG_IGN) for s in (signal.SIGINT, signal.SIGTERM)}
    yield
    for s, h in saved.items():
        signal.signal(s, h)


def test_pipe_command_group_is_killed_after_a_bad_shard(tmp_path, ignoring_stop_signals):
    pidfile = tmp_path / "pid"
    cmd = (f"pipe:head -c 1024 /dev/urandom; sleep 321 & echo $! > {pidfile}; wait")
    c = InputConfig(inputs=(cmd,))
    (unit,) = plan_units(c)
    with pytest.raises(ReadError, match="no valid tar header"):
        list(iter_samples(unit, c))     # not blocked until the background sleep ends
    pid = int(pidfile.read_text())
    if not _gone(pid):
        os.kill(pid, signal.SIGKILL)
        pytest.fail(f"the pipe: command's child {pid} (sleep 321) outlived the unit")


def test_pipe_command_group_is_killed_when_the_reader_stops(tmp_path, data, ignoring_stop_signals):
    pidfile = tmp_path / "pid"
    shard = data / "wds" / "shard-000000.tar"
    cmd = f"pipe:sleep 321 & echo $! > {pidfile}; cat {shard}; wait"
    c = InputConfig(inputs=(cmd,))
    (unit,) = plan_units(c)
    it = iter_samples(unit, c)
    assert next(it).data is not None
    it.close()                                   # the consumer stops early
    pid = int(pidfile.read_text())
    if not _gone(pid):
        os.kill(pid, signal.SIGKILL)
        pytest.fail(f"the pipe: command's child {pid} (sleep 321) outlived the reader")


def _read_all_in_thread(c: InputConfig) -> tuple[threading.Thread, dict]:
    got: dict = {}

    def read() -> None:
        try:
            got["keys"] = [s.key for s in samples(c)]
        except Exception as exc:   # noqa: BLE001 - the test reports it
            got["error"] = exc
    t = threading.Thread(target=read, daemon=True)
    t.start()
    return t, got


@pytest.mark.parametrize("tail", ["sleep 321 & echo $! > {pid}",          # child holds stdout
                                  "echo $$ > {pid}; exec sleep 321"])     # the command lingers
def test_pipe_command_that_keeps_stdout_open_does_not_hold_the_unit(tmp_path, data, tail,
                                                                    ignoring_stop_signals,
                                                                    monkeypatch, caplog):
    """After the archive's end, a silent writer that keeps the pipe open (a background child,
    or the command itself going on) ends the drain: the unit is complete, not held until the
    writer exits (321 s), and the writer's group is stopped. A command itself still running
    is waited for ``PIPE_LINGER_S`` (shortened here) and warned about."""
    monkeypatch.setattr(pipe_stream, "PIPE_LINGER_S", 2.0)
    pidfile = tmp_path / "pid"
    shard = data / "wds" / "shard-000000.tar"
    c = InputConfig(inputs=(f"pipe:cat {shard}; " + tail.format(pid=pidfile),))
    with caplog.at_level("WARNING", logger="webssl.readers"):
        t, got = _read_all_in_thread(c)
        t.join(timeout=120)          # far below the 321 s the writer would hold the pipe
    pid = int(pidfile.read_text())
    assert not t.is_alive(), "the reader waited on the silent writer"
    assert "error" not in got, got.get("error")
    assert got["keys"] == [s.key for s in samples(InputConfig(inputs=(str(shard),)))]
    lingers = tail.endswith("exec sleep 321")
    assert ("what it writes later is not read" in caplog.text) == lingers, caplog.text
    if not _gone(pid):
        os.kill(pid, signal.SIGKILL)
        pytest.fail(f"the pipe: command's writer {pid} (sleep 321) outlived the unit")


def test_pipe_command_writing_after_the_drain_stopped_is_not_a_failure(data, monkeypatch):
    """Padding that comes after the drain gave up (``PIPE_LINGER_S`` of silence, shortened
    here) meets a closed pipe: the command dies of SIGPIPE (status 141), but the archive was
    whole: the unit counts."""
    monkeypatch.setattr(pipe_stream, "PIPE_LINGER_S", 1.0)
    shard = data / "wds" / "shard-000000.tar"
    c = InputConfig(inputs=(f"pipe:cat {shard}; sleep 3; head -c 300000 /dev/zero",))
    assert [s.key for s in samples(c)] == [
        s.key for s in samples(InputConfig(inputs=(str(shard),)))]


def test_pipe_command_failing_after_a_whole_archive_still_fails_the_unit(data):
    shard = data / "wds" / "shard-000000.tar"
    with pytest.raises(ReadError, match="status 3"):
        samples(InputConfig(inputs=(f"pipe:cat {shard}; exit 3",)))


def test_pipe_command_runs_with_default_stop_signals(ignoring_stop_signals):
    c = InputConfig(inputs=('pipe:grep SigIgn /proc/self/status >&2; exit 3',))
    with pytest.raises(ReadError) as info:
        samples(c)
    mask = int(str(info.value).split("SigIgn:")[1].split()[0], 16)
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGPIPE):
        assert not mask & (1 << (sig - 1)), f"{sig.name} is ignored in the pipe: command"
