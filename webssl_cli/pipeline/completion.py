"""What a rank's exit code promises about the output folder at the end of a run: no damaged
finished units (``check_damage``), and with ``--limit-units`` what exit 0 means
(``limit_note``); ``--limit-units 0`` runs nothing at all (``plan_only``). The check that
every planned unit is done needs the rank's claims and is ``RankRun.check_complete``."""
from __future__ import annotations

from ..distributed import RankInfo
from ..errors import EXIT_INCOMPLETE, EXIT_OK
from ..store import done_units
from .others import units
from .progress import log
from .result import RunResult
from .setup import Prepared


def check_damage(prep: Prepared, rank: RankInfo) -> int:
    """Exit 0 promises a complete output: finished units whose data files are missing and
    could not be redone (their input is gone) make it 3."""
    from ..store.repair import damaged_units
    damaged = damaged_units(prep.layout, done_units(prep.layout))
    if not damaged:
        return EXIT_OK
    log(rank, f"{len(damaged)} finished unit(s) have missing or changed files and were "
              f"not redone: {', '.join(sorted(damaged)[:5])}; see `webssl status "
              f"{prep.layout.out_dir}`")
    return EXIT_INCOMPLETE


def limit_note(prep: Prepared) -> str:
    """With --limit-units, what exit 0 means: this run's share was done, not the output."""
    limit = prep.cfg.runtime.limit_units
    if limit is None:
        return ""
    left = len(prep.units) - len(done_units(prep.layout))
    return (f" With --limit-units {limit} the exit code reports this run's share (0: "
            f"every unit it took is done); {units(left)} of the output not done yet.")


def plan_only(prep: Prepared, rank: RankInfo) -> RunResult:
    """--limit-units 0: the plan and run config are written (prepare); no model is loaded
    and no worker started. Damage found in finished units still makes it 3."""
    done = len(done_units(prep.layout))
    code = check_damage(prep, rank)
    text = (f"--limit-units 0: plan and run config written ({units(len(prep.units))}, "
            f"{done} done); no unit was run")
    log(rank, text)
    return RunResult(code, len(prep.units), 0, summary=text)
