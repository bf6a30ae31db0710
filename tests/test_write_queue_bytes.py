"""The write queue bounded by bytes as well as by count: while one write is stalled (an fsync
behind other writeback, a shared filesystem), small finished units queue past ``ahead``
without holding the model back, up to a hard cap; big ones block after ``ahead`` as before.

Real threads and real blocking writes: each write waits on an Event the test controls, and
whether a submit blocked is seen on a helper thread (join with a timeout, then is_alive),
the stalled write released afterwards. No timing is asserted."""
from __future__ import annotations

import threading
import time

import pytest

from webssl_cli.pipeline.write_queue import GRACE_WRITE_BYTES, WriteQueue

GIVE = 10.0        # seconds a thread is given to finish what must finish (never reached)
SETTLE = 0.3       # seconds a submit that must block is given to (wrongly) return


def stalled(gate: threading.Event, done: list[int], i: int):
    def fn() -> None:
        assert gate.wait(GIVE)
        done.append(i)
    return fn


def submit_in_thread(q: WriteQueue, fn, nbytes: int | None = None) -> threading.Thread:
    kw = {} if nbytes is None else {"nbytes": nbytes}
    t = threading.Thread(target=q.submit, args=(fn,), kwargs=kw, daemon=True)
    t.start()
    return t


def blocks_after(q: WriteQueue, passing: int, nbytes: int | None) -> None:
    """``passing`` stalled writes of ``nbytes`` are queued without blocking the submitter,
    the next one blocks until the stalled writes are let go; then all of them ran."""
    gate, done = threading.Event(), []
    try:
        for i in range(passing):
            t = submit_in_thread(q, stalled(gate, done, i), nbytes)
            t.join(GIVE)
            assert not t.is_alive(), f"submit {i} blocked"
        last = submit_in_thread(q, stalled(gate, done, passing), nbytes)
        last.join(SETTLE)
        assert last.is_alive() and done == []
    finally:
        gate.set()
    last.join(GIVE)
    assert not last.is_alive()
    q.drain()
    assert done == list(range(passing + 1)) and q.close(cancel=False) is None


def test_small_writes_queue_past_ahead_while_one_is_stalled_up_to_the_cap() -> None:
    q = WriteQueue(ahead=2, allowance=1000, max_queued=8)
    gate, done = threading.Event(), []
    try:
        for i in range(8):                    # 1 running + 7 waiting: past ahead, under 8
            t = submit_in_thread(q, stalled(gate, done, i), nbytes=10)
            t.join(GIVE)
            assert not t.is_alive(), f"submit {i} blocked with {i} small writes queued"
        assert len(q) == 8 and q.queued_bytes == 80 and done == []
        ninth = submit_in_thread(q, stalled(gate, done, 8), nbytes=10)
        ninth.join(SETTLE)
        assert ninth.is_alive() and done == []          # the hard cap holds it back
    finally:
        gate.set()
    ninth.join(GIVE)
    assert not ninth.is_alive()
    q.drain()
    assert done == list(range(9)) and len(q) == 0 and q.queued_bytes == 0
    assert q.close(cancel=False) is None


def test_big_writes_block_after_ahead_as_before() -> None:
    blocks_after(WriteQueue(ahead=2, allowance=1000), 3, 600)    # 2400 bytes > 1000


def test_small_writes_block_once_their_bytes_exceed_the_allowance() -> None:
    """Bytes of the writes not yet finished count, however many: the fifth write of 300
    bytes takes them to 1500 > 1000; once the stalled one finishes, what is left fits."""
    q = WriteQueue(ahead=2, allowance=1000)
    gates = [threading.Event() for _ in range(5)]
    done: list[int] = []
    try:
        for i in range(3):                    # 900 bytes: within the allowance
            t = submit_in_thread(q, stalled(gates[i], done, i), nbytes=300)
            t.join(GIVE)
            assert not t.is_alive()
        t = submit_in_thread(q, stalled(gates[3], done, 3), nbytes=50)   # 950: still fits
        t.join(GIVE)
        assert not t.is_alive()
        fifth = submit_in_thread(q, stalled(gates[4], done, 4), nbytes=300)
        fifth.join(SETTLE)
        assert fifth.is_alive()                          # 1250 > 1000: blocked
        gates[0].set()                                   # 950 left: the submit returns
        fifth.join(GIVE)
        assert not fifth.is_alive() and done == [0] and q.queued_bytes == 950
    finally:
        for g in gates:
            g.set()
    q.drain()
    assert done == [0, 1, 2, 3, 4] and q.queued_bytes == 0
    assert q.close(cancel=False) is None


def test_a_failed_write_surfaces_at_the_next_submit_and_at_the_drain() -> None:
    q = WriteQueue(ahead=2, allowance=1 << 20)
    gate = threading.Event()

    def fail() -> None:
        assert gate.wait(GIVE)
        raise OSError(28, "No space left on device")

    q.submit(fail, nbytes=10)
    q.submit(lambda: None, nbytes=10)
    gate.set()
    q.futures[1].result(GIVE)                  # both ran; the first failed
    with pytest.raises(OSError, match="No space left"):
        q.submit(lambda: None, nbytes=10)
    assert q.queued_bytes == 0

    gate2 = threading.Event()

    def fail2() -> None:
        assert gate2.wait(GIVE)
        raise OSError(5, "Input/output error")

    q.submit(fail2, nbytes=10)
    for _ in range(5):                         # small: queued past ahead behind it
        q.submit(lambda: None, nbytes=10)
    gate2.set()
    with pytest.raises(OSError, match="Input/output"):
        q.drain()
    q.drain()                                  # the writes behind it ran
    assert len(q) == 0 and q.queued_bytes == 0 and q.close(cancel=False) is None


def test_default_construction_blocks_after_ahead_whatever_the_bytes() -> None:
    """No allowance (the spill queue, callers passing no bytes): blocks after ahead + 1."""
    for q in (WriteQueue(ahead=2), WriteQueue(2, name="webssl-spill")):
        blocks_after(q, 3, None)


def test_default_construction_with_tiny_nbytes_still_blocks_after_ahead() -> None:
    blocks_after(WriteQueue(ahead=1), 2, 1)


def test_waiting_in_the_drain_is_told_apart_from_waiting_on_a_full_queue() -> None:
    """The last writes' drain costs the model nothing: the summary shows it apart and does
    not call writing the bottleneck for it (byte queueing leaves more writes for the end)."""
    from webssl_cli.pipeline.progress import Counters, summary
    q = WriteQueue(ahead=0)
    gate, done = threading.Event(), []
    q.submit(stalled(gate, done, 0))
    threading.Timer(SETTLE, gate.set).start()
    q.drain()
    assert done == [0] and q.wait_seconds == 0.0 and q.drain_seconds > 0
    assert q.close(cancel=False) is None
    now = time.perf_counter()
    c = Counters(images=1000, started=now - 12, loop_started=now - 10, first_batch=0.5,
                 model_seconds=9.0, write_seconds=3.0, write_drain_seconds=3.0)
    text = summary(c, workers=4)
    assert "waiting for writes 0.0s (and 3.0s for the last ones)" in text
    assert "the model is the bottleneck" in text
    c.write_wait_seconds = 3.0
    assert "writing is the bottleneck" in summary(c, workers=4)


def test_a_stop_lets_queued_writes_finish_within_the_grace_then_drops_the_rest() -> None:
    """On a stop signal the queued small units are still written if the disk allows it
    within the grace (up to 32 may be queued: minutes of model time); a big one (spilled
    rows count) is dropped at once, whatever the grace: it could run for minutes past it."""
    q = WriteQueue(ahead=1, allowance=1000)
    gate, done = threading.Event(), []
    for i in range(5):
        q.submit(stalled(gate, done, i), nbytes=1,
                 cost=GRACE_WRITE_BYTES + 1 if i == 2 else 1)
    big = list(q.futures)[2]
    threading.Thread(target=lambda: (wait_until(big.cancelled), gate.set()), daemon=True).start()
    assert q.close(cancel=True, grace=GIVE) is None
    assert done == [0, 1, 3, 4] and big.cancelled()


def test_past_the_grace_the_writes_not_started_are_dropped() -> None:
    """The disk stays stalled through the grace: only the running write is awaited (it is
    let go once everything behind it was dropped), the rerun redoes the others."""
    q = WriteQueue(ahead=1, allowance=1000)
    gate, done = threading.Event(), []
    for i in range(5):
        q.submit(stalled(gate, done, i), nbytes=1)
    behind = list(q.futures)[1:]
    threading.Thread(target=lambda: (wait_until(lambda: all(f.cancelled() for f in behind)),
                                     gate.set()), daemon=True).start()
    assert q.close(cancel=True, grace=SETTLE) is None
    assert done == [0]


def wait_until(cond) -> None:
    t0 = time.monotonic()
    while not cond() and time.monotonic() - t0 < GIVE:
        time.sleep(0.01)
