"""Checks of an ExtractConfig's plain values, before anything is read, written or loaded.

The CLI and the Python API share them: a bad value is a UsageError (exit 2) naming the
option, never a traceback from deep inside a stage. Checks that need the model or the
inputs (resolution vs patch size, feature specs, input kinds) live with those stages.
"""
from __future__ import annotations

import math
import multiprocessing
import os
import re

from .config import ExtractConfig
from .errors import UsageError

NAME_MAX, PATH_MAX = 255, 4095   # Linux's limits, in bytes
LONGEST_FILE = 200   # room for what webssl writes under the manifest: a staging folder named
                     # by host and pid, a feature folder, a temp name (about 110-150 bytes)
# a scheme before "://", or the pipe: / s3: forms readers accept as inputs
_URL = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]+://|pipe:|s3:)")


def _positive(value: float, option: str) -> None:
    if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
        raise UsageError(f"{option} must be a positive number, got {value!r}")


def check_output_dir(out_dir: str, manifest_name: str = "_webssl") -> None:
    """``--out`` is a folder on a local or mounted shared filesystem, not a URL, with a path
    short enough for every file webssl writes under it."""
    if not out_dir:
        raise UsageError("--out must name an output folder")
    if _URL.match(out_dir):
        raise UsageError(f"--out {out_dir}: output to URLs is not supported. Write to a local "
                         "folder or a shared filesystem every rank mounts, then copy it "
                         "(e.g. `aws s3 sync OUT s3://bucket/prefix/`).")
    full = os.fsencode(os.path.join(os.path.abspath(out_dir), manifest_name))
    long_name = max(full.split(b"/"), key=len)
    if len(long_name) > NAME_MAX:
        raise UsageError(f"--out {out_dir}: the name {os.fsdecode(long_name[:40])}... is "
                         f"{len(long_name)} bytes, over the {NAME_MAX} a file system allows; "
                         "choose a shorter --out")
    if len(full) + LONGEST_FILE > PATH_MAX:
        raise UsageError(f"--out {out_dir}: the path is too long: the files webssl writes "
                         f"under it would pass the {PATH_MAX}-byte path limit; choose a "
                         "shorter --out")


def _whole(value: object, option: str) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise UsageError(f"{option} must be a whole number, got {value!r}")


CPU_SHARE_FORM = "--cpu-share must be auto or a number from 0 to 1"


def parse_cpu_share(text: str) -> float | None:
    """``--cpu-share``: "auto" is None (balanced while running), else a number 0..1."""
    if text.strip().lower() == "auto":
        return None
    try:
        return float(text)
    except ValueError:
        raise UsageError(f"{CPU_SHARE_FORM}, got {text!r}") from None


def check_config(cfg: ExtractConfig) -> None:
    rt = cfg.runtime
    for value, option in ((rt.num_workers, "--num-workers"), (rt.gpus, "--gpus"),
                          (rt.prefetch_factor, "prefetch_factor")):
        _whole(value, option)
    if rt.limit_units is not None:
        _whole(rt.limit_units, "--limit-units")
    if rt.feature_memory_mib is not None:
        _whole(rt.feature_memory_mib, "--feature-memory")
        if rt.feature_memory_mib < 0:
            raise UsageError(f"--feature-memory must be 0 (spill every batch) or more MiB, "
                             f"got {rt.feature_memory_mib}")
    if rt.cpu_share is not None:
        share = rt.cpu_share
        if isinstance(share, bool) or not isinstance(share, (int, float)) or not 0 <= share <= 1:
            raise UsageError(f"{CPU_SHARE_FORM}, got {share!r}")
        if rt.decode != "gpu":
            raise UsageError("--cpu-share only applies with --decode gpu (with --decode cpu the "
                             "workers decode every image)")
    bad = [i for i in cfg.input.inputs if not isinstance(i, str)]
    if bad:
        raise UsageError(f"InputConfig.inputs must be paths or URLs (str or pathlib.Path), got "
                         f"{bad[0]!r}")
    if not isinstance(cfg.output.out_dir, str):
        raise UsageError(f"OutputConfig.out_dir must be a folder path (str or pathlib.Path), "
                         f"got {cfg.output.out_dir!r}")
    bs = rt.batch_size
    if bs != "auto" and not (isinstance(bs, int) and not isinstance(bs, bool) and bs >= 1):
        raise UsageError(f"--batch-size must be a positive number or 'auto', got {bs!r}")
    if rt.num_workers < 0:
        raise UsageError(f"--num-workers must be 0 (read in the main process) or more, got "
                         f"{rt.num_workers}")
    if (rt.num_workers > 0 or rt.gpus > 0) and multiprocessing.current_process().daemon:
        raise UsageError("extract runs in a daemonic process (a multiprocessing.Pool worker, "
                         "say), which cannot start the DataLoader worker processes: use "
                         "num_workers=0 and gpus=0 there, or call it from a non-daemon "
                         "multiprocessing.Process")
    if rt.prefetch_factor < 1:
        raise UsageError(f"prefetch_factor must be at least 1, got {rt.prefetch_factor}")
    _positive(rt.lease_seconds, "--lease")
    if rt.heartbeat_seconds is not None:
        _positive(rt.heartbeat_seconds, "RuntimeConfig.heartbeat_seconds")
        if rt.heartbeat_seconds >= rt.lease_seconds:
            raise UsageError(f"RuntimeConfig.heartbeat_seconds ({rt.heartbeat_seconds:g}) must "
                             f"be well below the lease ({rt.lease_seconds:g} s), or live claims "
                             "look stale to other ranks; leave it None for min(30, lease/4)")
    _positive(rt.progress_every, "--progress-every")
    if rt.plan_wait_seconds < 0:
        raise UsageError(f"plan_wait_seconds must be 0 or more, got {rt.plan_wait_seconds}")
    if rt.gpus < 0:
        raise UsageError(f"--gpus must be 0 (this process only) or a number of GPUs, got "
                         f"{rt.gpus}")
    if rt.limit_units is not None and rt.limit_units < 0:
        raise UsageError(f"--limit-units must be 0 (plan only) or more, got {rt.limit_units} "
                         "(leave it out to do every unit)")
    if cfg.model.resolution is not None and cfg.model.resolution < 1:
        raise UsageError(f"--resolution must be a positive multiple of the patch size, got "
                         f"{cfg.model.resolution}")
    check_weights_choice(cfg)
    if not cfg.input.inputs:
        raise UsageError("at least one --input is required")
    check_output_dir(cfg.output.out_dir, cfg.output.manifest_name)
    check_manifest_name(cfg.output.out_dir, cfg.output.manifest_name)


def check_manifest_name(out_dir: str, name: str) -> None:
    """A new manifest folder's name starts with ``_`` or ``.``: dataset readers (pyarrow,
    Spark, Hive) skip only such names, so ``ds.dataset(OUT)`` never trips over run records
    or staged files. An existing one (made by an older version) is still used."""
    from .store.layout import OutputLayout
    OutputLayout(out_dir, name)            # a plain folder name, not one of the data names
    if name.startswith(("_", ".")) or os.path.isdir(os.path.join(out_dir, name)):
        return
    raise UsageError(f"--manifest-name {name}: must start with '_' or '.' (e.g. _{name}), so "
                     "that pyarrow/Spark dataset readers of --out skip it as they skip "
                     "_webssl/")


def check_weights_choice(cfg: ExtractConfig) -> None:
    """``--source`` is hf or pth, and is not given with ``--weights`` (which never downloads)."""
    from .weights.resolve import check_source
    check_source(cfg.model.source, cfg.model.weights)
