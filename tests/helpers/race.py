"""Run two spawned processes that start together (a barrier) and report through a queue."""
from __future__ import annotations

import multiprocessing as mp
from collections.abc import Callable


def race_two(target: Callable, args_for: Callable[[int], tuple], n_results: int) -> list:
    """Start ``target(*args_for(i), barrier, results)`` for i in 0, 1; collect ``n_results``
    items from the results queue; check both processes exit cleanly."""
    ctx = mp.get_context("spawn")
    barrier, results = ctx.Barrier(2), ctx.Queue()
    procs = [ctx.Process(target=target, args=(*args_for(i), barrier, results)) for i in range(2)]
    for p in procs:
        p.start()
    got = [results.get(timeout=120) for _ in range(n_results)]
    for p in procs:
        p.join(30)
        assert p.exitcode == 0
    return got
