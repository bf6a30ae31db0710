"""Run the real loader (``pipeline.loader.BatchSource``) over every planned unit of an input."""
from __future__ import annotations

from collections.abc import Iterator

from webssl_cli.config import InputConfig, PreprocessConfig
from webssl_cli.pipeline.loader import Batch, BatchSource
from webssl_cli.readers import plan_units


def loader_pieces(icfg: InputConfig, pcfg: PreprocessConfig, batch_size: int,
                  num_workers: int, **kw) -> Iterator[Batch]:
    """Every piece the loader hands over (end markers included), in arrival order; the
    workers are stopped when the caller is done or fails."""
    source = BatchSource(icfg, pcfg, batch_size, num_workers, pin_memory=False, **kw)
    try:
        for unit in plan_units(icfg):
            source.submit(unit)
        while source.outstanding:
            yield source.next_batch()
    finally:
        source.close()
