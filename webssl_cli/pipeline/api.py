"""Python entry point of extraction: ``webssl_cli.extract(cfg)``."""
from __future__ import annotations

from ..config import ExtractConfig
from .runner import RunResult, run_extract


def extract(cfg: ExtractConfig) -> RunResult:
    """Run an extraction in this process (or launch ``--gpus N`` local workers).

    Stop signals, when this is called from the main thread:

    * SIGINT (Ctrl-C) stops the run cleanly (units in flight abandoned, their claims
      released, finished units kept) and then raises ``KeyboardInterrupt``, as any Python
      call interrupted by Ctrl-C does; call again with the same config to resume.
    * SIGTERM / SIGUSR1 (a scheduler's preemption) stop it the same way and it returns a
      RunResult with exit code 4.
    * A second stop signal during that cleanup raises at once (``KeyboardInterrupt`` for
      SIGINT, :class:`webssl_cli.errors.StopSignal` otherwise); the process is never
      exited (the ``webssl`` command, unlike this function, exits at once with 4).

    From another thread no handlers are installed (Python allows them on the main thread
    only) and the caller handles signals."""
    from ..distributed.signals import api_policy
    with api_policy() as policy:
        result = run(cfg)
    if policy.first == "SIGINT":
        raise policy.interruption("SIGINT")
    return result


def run(cfg: ExtractConfig) -> RunResult:
    """The extraction under the process's current stop-signal policy (the ``webssl``
    command's: a stop signal ends the run with exit code 4 in the result, a second one
    exits the process at once)."""
    from ..config_checks import check_config
    check_config(cfg)
    if cfg.runtime.gpus and cfg.runtime.gpus > 0:
        from ..distributed.launcher import launch_local
        return launch_local(cfg)
    return run_extract(cfg)
