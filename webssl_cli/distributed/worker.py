"""Entry of one `--gpus` worker process: ``python -m webssl_cli.distributed.worker CFG.json``."""
from __future__ import annotations

import sys
from pathlib import Path

from ..config_io import config_from_json
from ..errors import EXIT_PREEMPTED, WebsslError


def main() -> None:
    try:
        from ..pipeline.runner import run_extract
        cfg = config_from_json(Path(sys.argv[1]).read_text())
        result = run_extract(cfg)
    except KeyboardInterrupt:            # Ctrl-C before the runner's handlers were installed
        print("SIGINT received: stopping (nothing claimed yet)", file=sys.stderr)
        sys.exit(EXIT_PREEMPTED)
    except WebsslError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(exc.exit_code)
    sys.exit(result.exit_code)


if __name__ == "__main__":
    main()
