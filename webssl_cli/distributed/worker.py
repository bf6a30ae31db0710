"""Entry of one `--gpus` worker process: ``python -m webssl_cli.distributed.worker CFG.json``."""
from __future__ import annotations

import os
import signal
import sys
from pathlib import Path

from ..config_io import config_from_json
from ..errors import Preempted, StopSignal, WebsslError
from .signals import command_handlers, current_policy, ignore_stop_signals


def main() -> None:
    launcher = os.environ.get("WEBSSL_LAUNCHER_PID", "")
    try:
        with command_handlers():      # before the imports: a stop while torch loads is exit 4
            if launcher.isdigit():     # a clean stop (SIGTERM) if the launcher dies, killed say
                current_policy().launcher = int(launcher)
                from ..pipeline.worker_lifecycle import die_with_parent
                die_with_parent(int(launcher), signal.SIGTERM)
            from ..pipeline.runner import run_extract
            cfg = config_from_json(Path(sys.argv[1]).read_text())
            result = run_extract(cfg)
    except (WebsslError, StopSignal, Preempted) as exc:   # StopSignal: before the runner's
        # handlers; Preempted: should one escape the runner's own handling
        print(f"error: {exc}", file=sys.stderr)
        ignore_stop_signals()
        sys.exit(exc.exit_code)
    ignore_stop_signals()
    sys.exit(result.exit_code)


if __name__ == "__main__":
    main()
