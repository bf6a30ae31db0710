"""Python entry point of extraction: ``webssl_cli.extract(cfg)``."""
from __future__ import annotations

from ..config import ExtractConfig
from .runner import RunResult, run_extract


def extract(cfg: ExtractConfig) -> RunResult:
    """Run an extraction in this process (or launch ``--gpus N`` local workers)."""
    if cfg.runtime.gpus and cfg.runtime.gpus > 0:
        from ..distributed.launcher import launch_local
        return launch_local(cfg)
    return run_extract(cfg)
