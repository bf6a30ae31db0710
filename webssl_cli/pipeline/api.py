"""Python entry point of extraction: ``webssl_cli.extract(cfg)``."""
from __future__ import annotations

from ..config import ExtractConfig
from .runner import RunResult, run_extract


def extract(cfg: ExtractConfig) -> RunResult:
    """Run an extraction in this process (or launch ``--gpus N`` local workers).

    Stop signals (SIGTERM/SIGINT/SIGUSR1) end the run cleanly with exit code 4 when this is
    called from the main thread; from another thread no handlers are installed (Python
    allows them on the main thread only) and the caller handles signals."""
    from ..config_checks import check_config
    check_config(cfg)
    if cfg.runtime.gpus and cfg.runtime.gpus > 0:
        from ..distributed.launcher import launch_local
        return launch_local(cfg)
    return run_extract(cfg)
