"""Writing one finished unit (on the writer thread): its rows in key order, the data files
staged and fsynced, the failure ledger, then the done-record last (``store.commit_unit``)."""
from __future__ import annotations

import shutil
import sys
import time
from typing import Callable

import numpy as np

from ..distributed import RankInfo
from ..errors import WebsslError
from .held_memory import HeldFeatures
from .progress import Counters, log
from .setup import Prepared
from .unit_state import UnitState


class UnitWriter:
    def __init__(self, prep: Prepared, rank: RankInfo, counters: Counters, held: HeldFeatures,
                 release: Callable[[str], None]) -> None:
        self.prep, self.rank, self.counters, self.held = prep, rank, counters, held
        self.release = release            # the unit's claim, once it is committed
        self.feature_names = [f.name for f in prep.features]
        t = (prep.pcfg.resolution // prep.choice.spec.patch_size) ** 2
        self.shapes = {f.name: f.shape(prep.choice.spec.embed_dim, t) for f in prep.features}
        self.np_dtype = np.dtype(prep.cfg.output.out_dtype)
        self._provenance: dict | None = None

    def write(self, st: UnitState) -> None:
        """Stage, fsync and commit one finished unit. A filesystem error becomes a message
        naming the unit, the output folder and what to check."""
        try:
            self._write(st)
        except OSError as exc:
            raise WebsslError(
                f"writing unit {st.unit.id} ({st.unit.name}) under {self.prep.layout.out_dir} "
                f"failed: {exc}{free_space(self.prep.layout.out_dir)}. Check free space, quota "
                "and permissions of --out; finished units are kept, rerun the same command to "
                "resume.") from exc

    def _write(self, st: UnitState) -> None:
        from ..store import (DoneRecord, UnitRows, commit_unit, discard_staged, write_failures,
                             write_unit)
        t0 = time.perf_counter()
        unit, layout = st.unit, self.prep.layout
        keys, sources, metas, feats, failures = st.ordered(self.feature_names, self.shapes,
                                                            self.np_dtype)
        json_col = metas if self.prep.cfg.input.keep_json else None
        rows = UnitRows(keys=keys, sources=sources, features=feats, json=json_col)
        files = write_unit(layout, self.prep.cfg.output.format, unit, rows, self.provenance())
        try:
            ledger = write_failures(layout, unit, failures)
        except BaseException:
            discard_staged(layout, files)
            raise
        rec = DoneRecord(unit_id=unit.id, unit_name=unit.name, source=unit.source,
                         rows=len(keys), failed=len(failures), files=files, ledger=ledger,
                         rank=self.rank.owner, seconds=time.perf_counter() - st.started,
                         finished_at=time.strftime("%Y-%m-%dT%H:%M:%S%z"))
        won = commit_unit(layout, rec)
        if not won:
            log(self.rank, f"unit {unit.id} ({unit.name}) was committed by another rank; "
                           "this copy was discarded")
        self.release(unit.id)
        self.held.release(st.nbytes)
        self.counters.units_done += 1 if won else 0
        self.counters.write_seconds += time.perf_counter() - t0

    def provenance(self) -> dict:
        """Stored in every output file: the run's settings, the run config's fingerprint and
        id, and the versions of the libraries that decode, resize and compute."""
        if self._provenance is None:
            from ..preprocess import describe
            from ..store import load_run_config
            config = load_run_config(self.prep.layout)
            fields = self.prep.fields
            self._provenance = {
                "webssl": fields, "fingerprint_fields": sorted(fields),
                "fingerprint": config.fingerprint if config else None,
                "run_id": config.run_id if config else None,
                "versions": {**describe(self.prep.pcfg)["versions"],
                             "python": sys.version.split()[0],
                             "webssl": fields.get("tool_version")}}
        return self._provenance


def free_space(folder) -> str:
    """How much room the folder's file system has left, for a write error that does not say
    (numpy's short write: "5120 requested and 1984 written")."""
    try:
        free = shutil.disk_usage(folder).free
    except OSError:
        return ""
    return f" ({free / 2**20:.1f} MiB free on that file system)"
