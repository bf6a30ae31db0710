"""The end-of-share wait's bookkeeping: its report, its throttling, and that the summary's
rates leave the wait out (the runs themselves are in test_distributed)."""
from __future__ import annotations

import time

from webssl_cli.pipeline.others import OthersWait, waiting_message
from webssl_cli.pipeline.progress import Counters, summary
from webssl_cli.store.records import ClaimInfo
from webssl_cli.units import Unit


def _unit(i: int) -> Unit:
    return Unit(index=i, kind="tar", source=f"/d/{i}.tar", name=f"s{i}")


def test_message_names_each_holder_with_its_latest_heartbeat() -> None:
    left = [_unit(i) for i in range(4)]
    claims = [ClaimInfo("000000", "a:1:rank1", 40.0, False),
              ClaimInfo("000001", "a:1:rank1", 3.0, False),
              ClaimInfo("000002", "b:7:rank2", 12.0, False),
              ClaimInfo("000009", "c:9:rank3", 1.0, False)]       # a unit not open: ignored
    text = waiting_message(left, claims, 300)
    assert "4 units not done" in text
    assert "a:1:rank1: 2 units, heartbeat 3 s ago" in text and "b:7:rank2: 1 unit," in text
    assert "1 being committed" in text and "rank3" not in text and "300 s lease" in text


def test_first_wait_is_reported_then_at_most_once_a_minute() -> None:
    w = OthersWait()
    assert w.should_say(5) and not w.should_say(5) and not w.should_say(4)
    w.said_at -= 61
    assert w.should_say(4) and not w.should_say(3)
    assert [w.next_poll() for _ in range(3)] == [0.25, 0.375, 0.5625]
    for _ in range(20):
        w.next_poll()
    assert w.next_poll() == 5.0


def test_summary_rates_leave_the_wait_out() -> None:
    now = time.perf_counter()
    c = Counters(images=100, started=now - 32, loop_started=now - 30, first_batch=1.0,
                 model_seconds=8.0)
    c.others_wait_seconds = 9.0            # waited, then took a unit over and streamed on
    c.mark_streamed()
    c.others_wait_seconds = 29.0 - 10.0    # a final wait after the last batch: 10 s more
    assert abs(c.steady_seconds - (30 - 1 - 9)) < 0.5      # only the wait inside the window
    text = summary(c, workers=1)
    assert "100 images in 11.0s (9.1 img/s; 2.0s setup" in text
    assert "Waited 19.0s (not counted above) for units other ranks held." in text
