"""The extraction main loop while an input stalls, and what a run's end says: real runs of the
CLI whose ``pipe:`` inputs wait on a marker file (a stall that ends when the test says so,
never a timed one), checked from the filesystem while the run is still going.

* a stalled input is reported on the progress lines, and a unit read before the stall is
  committed during it (not when the input resumes: a kill in between would lose it);
* two separate commands on one output (no job id): the one that finished its own units exits
  3 when the other gave a unit up, saying so; the final progress line has no eta and counts
  the images written apart from those that went through the model;
* with --limit-units, exit 0 means this run's share was done, and the summary says so.
"""
from __future__ import annotations

import subprocess
import time
from pathlib import Path

from tests.extract_helpers import cli_args
from tests.helpers.cli import WEBSSL, child_env, cli_here
from tests.helpers.images import write_shards
from webssl_cli.store import done_units
from webssl_cli.store.layout import OutputLayout

BOUND = 30.0         # seconds: generous upper bound for what must happen during a stall


def wait_for(what, seconds: float = BOUND) -> bool:
    """Poll ``what()`` until it is true or ``seconds`` passed."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if what():
            return True
        time.sleep(0.1)
    return bool(what())


def stalled(marker: Path, then: str) -> str:
    """A ``pipe:`` input that writes nothing until ``marker`` exists (at most 2 min), then
    runs ``then``."""
    return (f"pipe:i=0; while [ ! -e {marker} ] && [ $i -lt 1200 ]; do sleep 0.1; "
            f"i=$((i+1)); done; {then}")


def start(args: list[str], log: Path, env: dict | None = None) -> subprocess.Popen:
    """The CLI in its own process, stderr to ``log`` (read while it runs)."""
    return subprocess.Popen([WEBSSL, *args], stdout=subprocess.DEVNULL,
                            stderr=log.open("w"), env=child_env(env), start_new_session=True)


def finish(p: subprocess.Popen) -> int:
    try:
        return p.wait(timeout=120)
    finally:
        if p.poll() is None:
            p.kill()


def progress_lines(text: str) -> list[str]:
    return [ln for ln in text.splitlines() if ln.startswith("units ")]


def test_stalled_input_is_reported_and_a_finished_unit_committed_during_it(tmp_path):
    a, b = write_shards(tmp_path / "sh", 2, 5)
    release = tmp_path / "release"
    out = tmp_path / "out"
    log = tmp_path / "run.log"
    args = cli_args([a, stalled(release, f"cat {b}")], out, "--num-workers", "1",
                    "--batch-size", "64", "--progress-every", "1")
    p = start(args, log)
    try:
        # unit a (5 images, far from a batch of 64) was read at once; unit b stalls
        committed = wait_for(lambda: len(done_units(OutputLayout(out), recover=False)) == 1)
        said = wait_for(lambda: "waiting for input for" in log.read_text(), 5)
        still_stalled = p.poll() is None
    finally:
        release.touch()
        code = finish(p)
    text = log.read_text()
    assert committed, f"unit a not committed while unit b's input stalled:\n{text}"
    assert said, f"no progress line said the run waits for input:\n{text}"
    assert still_stalled, text
    assert code == 0, text
    assert len(done_units(OutputLayout(out))) == 2
    assert "waiting for the ranks" not in text          # a lone process waits for nobody
    assert "eta" not in progress_lines(text)[-1]


def test_unit_given_up_by_another_command_makes_this_one_exit_3(tmp_path):
    """Process A holds s1 (stalled until B has taken f) and s2; B takes f, whose input is cut
    short for B only (an environment variable), gives it up after some of its images went
    through the model, and exits 3. A finishes its own units and, as f is not done, exits 3
    too, naming it, instead of 0 for an incomplete output."""
    s1, s2, f = write_shards(tmp_path / "sh", 3, 8)
    took = tmp_path / "b-took-f"
    cut = f.stat().st_size // 2 + 7
    f_input = (f"pipe:touch {took}; if [ -n \"$CUT_SHORT\" ]; then head -c {cut} {f}; "
               f"else cat {f}; fi")
    out = tmp_path / "out"
    args = cli_args([stalled(took, f"cat {s1}"), s2, f_input], out, "--num-workers", "1",
                    "--batch-size", "64")
    log_a, log_b = tmp_path / "a.log", tmp_path / "b.log"
    a = start(args, log_a)
    claims = OutputLayout(out).claims_dir
    try:
        assert wait_for(lambda: claims.is_dir() and len(list(claims.iterdir())) >= 2,
                        120), log_a.read_text()
        b = start(args, log_b, {"CUT_SHORT": "1"})
        code_b = finish(b)
    finally:
        took.touch()
        code_a = finish(a)
    text_a, text_b = log_a.read_text(), log_b.read_text()
    assert code_b == 3 and "could not be completed" in text_b, text_b
    assert code_a == 3, text_a
    assert "1 of 3 units" in text_a and "given up by another process" in text_a, text_a
    assert "failed on other ranks of this job" not in text_a
    assert len(done_units(OutputLayout(out))) == 2
    last_b = progress_lines(text_b)[-1]
    assert "eta" not in last_b and "eta" not in progress_lines(text_a)[-1]
    processed = int(last_b.split("images ")[1].split(" processed")[0])
    assert processed > 0 and " 0 written" in last_b, last_b   # f's rows were discarded


def test_limit_units_exit_0_says_what_it_means(tmp_path):
    shards = write_shards(tmp_path / "sh", 3, 2)
    out = tmp_path / "out"
    r = cli_here(cli_args(shards, out, "--num-workers", "0", "--limit-units", "1"))
    assert r.returncode == 0, r.stderr
    assert "With --limit-units 1 the exit code reports this run's share" in r.stderr
    assert "2 units of the output not done yet" in r.stderr
    last = progress_lines(r.stderr)[-1]
    assert "eta" not in last and "2 written" in last, last
