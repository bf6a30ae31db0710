"""The run config: the fingerprinted settings of an output folder, and --overwrite.

The first run of a folder writes ``run.json`` (fields + sha256 fingerprint of their
canonical JSON). Every later run must have the same fingerprint, or it is refused with
the list of differing fields, unless ``--overwrite`` discards the previous outputs.
"""
from __future__ import annotations

import hashlib
import json
import os
import secrets
import shutil
from typing import Any

from ..errors import UsageError, WebsslError
from ..atomic_io import exclusive_create, fsync_dir, prune_empty_dirs, remove_quietly
from .commit import committed_files, forget_cached_records, read_done_records
from .layout import OutputLayout
from .records import RunConfig, dumps, utc_now

STORE_VERSION = 1


def canonical_fields(fields: dict[str, Any]) -> dict[str, Any]:
    """Fields as they read back from JSON (tuples -> lists); TypeError if not JSON-able."""
    try:
        return json.loads(json.dumps(fields, sort_keys=True))
    except TypeError as exc:
        raise TypeError(f"run config fields must be JSON values: {exc}") from None


def fingerprint(fields: dict[str, Any]) -> str:
    """sha256 of the canonical JSON (sorted keys, no spaces) of the fields."""
    text = json.dumps(canonical_fields(fields), sort_keys=True, separators=(",", ":"),
                      ensure_ascii=True)
    return hashlib.sha256(text.encode()).hexdigest()


def diff_fields(old: dict[str, Any], new: dict[str, Any], prefix: str = "") -> list[str]:
    """``name: old -> new`` for each differing field, sorted; nested dicts are compared
    key by key (``preprocessing.resize_short: 64 -> 80``)."""
    def show(d: dict[str, Any], k: str) -> str:
        return json.dumps(d[k], sort_keys=True) if k in d else "(absent)"
    lines: list[str] = []
    for k in sorted(set(old) | set(new)):
        a, b = old.get(k, ...), new.get(k, ...)
        if a == b:
            continue
        if isinstance(a, dict) and isinstance(b, dict):
            lines += diff_fields(a, b, f"{prefix}{k}.")
        else:
            lines.append(f"{prefix}{k}: {show(old, k)} -> {show(new, k)}")
    return lines


def normalize_input(spec: str) -> str:
    """One spelling per input, so a resume with ``shards/``, ``./shards`` or an absolute
    path is the same run: local paths (``file://`` and ``~`` too) become absolute and
    normalized (no trailing slash); ``s3://`` prefixes lose a trailing slash; other URLs and
    ``pipe:`` commands are kept as given."""
    if spec.startswith("pipe:"):
        return spec
    if spec.startswith("s3://"):
        stripped = spec.rstrip("/")
        return stripped if len(stripped) > len("s3://") else spec
    if "://" in spec and not spec.startswith("file://"):
        return spec
    if spec.startswith("file://"):
        spec = spec[len("file://"):]
    return os.path.abspath(os.path.expanduser(spec))


def is_local_input(spec: str) -> bool:
    """Whether an --input names local files (a folder, list, file, glob or brace pattern)."""
    return not spec.startswith("pipe:") and ("://" not in spec or spec.startswith("file://"))


def _normalized(fields: dict[str, Any]) -> dict[str, Any]:
    """``fields`` with its ``inputs`` (if any) in their normalized spelling (run.json files
    written before inputs were normalized: relative paths are taken from the current folder)."""
    inputs = fields.get("inputs")
    if not isinstance(inputs, list) or not all(isinstance(i, str) for i in inputs):
        return fields
    return {**fields, "inputs": [normalize_input(i) for i in inputs]}


# fields added to run configs later: a run config written before one existed is compared
# without it (an older folder still resumes)
LATER_FIELDS = ("weights_sha256", "key_column", "keep_json", "position_embedding")


def _comparable(config: RunConfig, fields: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in fields.items() if k in config.fields or k not in LATER_FIELDS}


def same_settings(config: RunConfig, fields: dict[str, Any]) -> bool:
    """Whether a run with ``fields`` resumes the folder of ``config`` (same fingerprint, or
    the same once the stored inputs are normalized and fields it predates are left out)."""
    if config.fingerprint == fingerprint(fields):
        return True
    return fingerprint(_normalized(config.fields)) == fingerprint(_comparable(config, fields))


def settings_diff(config: RunConfig, fields: dict[str, Any]) -> list[str]:
    """``name: previous -> now`` lines between a run config and ``fields``."""
    return diff_fields(_normalized(config.fields), canonical_fields(_comparable(config, fields)))


def load_run_config(layout: OutputLayout) -> RunConfig | None:
    path = layout.run_config_path
    try:
        return RunConfig.from_dict(json.loads(path.read_text()))
    except (FileNotFoundError, NotADirectoryError):
        return None
    except (ValueError, KeyError) as exc:
        raise WebsslError(f"run config {path} is unreadable ({exc}); it is written once by the "
                          "first run: rerun with --overwrite to start the folder over, or use "
                          "another --out") from None


def _new_config(fields: dict[str, Any]) -> RunConfig:
    return RunConfig(fingerprint=fingerprint(fields), fields=canonical_fields(fields),
                     created=utc_now(), run_id=secrets.token_hex(8))


def check_run_config(layout: OutputLayout, fields: dict[str, Any], *, overwrite: bool) -> RunConfig:
    """Write the run config on the first run; afterwards require the same fingerprint.

    A different fingerprint raises UsageError listing ``name: old -> new`` per field,
    unless ``overwrite``: then every previous output file, done-record, ledger, claim and
    the plan are removed and the folder starts over (see docs/output-format.md). With the
    same fingerprint ``overwrite`` changes nothing: the run resumes. Call it with
    ``overwrite=True`` from one process only (the planner), before other ranks start.
    """
    layout.check_out_dir()
    new = _new_config(fields)
    try:
        old = load_run_config(layout)
    except WebsslError:
        if not overwrite:
            raise
        wipe_outputs(layout)
        old = None
    if old is not None and not same_settings(old, fields):
        if not overwrite:
            raise refusal(layout, old, fields)
        wipe_outputs(layout)
        old = None
    if old is None:
        layout.ensure_dirs()
        if exclusive_create(layout.run_config_path, dumps({**new.to_dict(),
                                                           "store_version": STORE_VERSION})):
            return new
        return check_run_config(layout, fields, overwrite=False)   # another rank won the race
    return old


def never_started(layout: OutputLayout) -> bool:
    """True when no unit of the folder was ever claimed, staged, committed, done or failed:
    only the run config and the plan are there. (A run may still be loading its model, so
    this only changes what the refusal says; it never replaces settings by itself.)"""
    dirs = (layout.done_dir, layout.commits_dir, layout.claims_dir, layout.staging_dir,
            layout.failures_dir, layout.unit_failures_dir)
    return not any(d.is_dir() and any(d.iterdir()) for d in dirs)


def refusal(layout: OutputLayout, old: RunConfig, fields: dict[str, Any]) -> UsageError:
    """The error for a run whose settings differ from the folder's run config."""
    diff = settings_diff(old, fields)
    changes = "\n  ".join(diff)
    if diff and all(line.startswith("inputs:") for line in diff):
        done = len(read_done_records(layout))
        return UsageError(
            f"output folder {layout.out_dir} was written from other inputs (see "
            f"{layout.run_config_path}); previous -> now:\n  {changes}\n"
            "To resume it, rerun with the previous inputs. To extract these inputs, choose "
            f"another --out: --overwrite would discard the {done} finished unit"
            f"{'' if done == 1 else 's'} of this folder and start it over from these inputs.")
    if never_started(layout):
        return UsageError(
            f"output folder {layout.out_dir} holds the settings of a run that started no "
            f"unit (see {layout.run_config_path}: it stopped before its first unit, or is "
            f"still loading its model); these fields differ (previous -> now):\n  {changes}\n"
            "Nothing was extracted under them: if no other command is using this folder, "
            "rerun with --overwrite to replace them, or choose another --out.")
    return UsageError(
        f"output folder {layout.out_dir} was written with different settings "
        f"(see {layout.run_config_path}); these fields differ (previous -> now):\n  "
        f"{changes}\nRerun with --overwrite to discard the previous outputs and start "
        "over, or choose another --out.")


def wipe_outputs(layout: OutputLayout) -> None:
    """Remove every output file that any commit of this folder made, then the manifest.

    Data files first (the manifest still lists them, so an interrupted wipe can simply be
    repeated), then the manifest folder is renamed to a hidden trash name and deleted.
    """
    for rel in committed_files(layout):
        path = layout.abs(rel)
        remove_quietly(path)
        prune_empty_dirs(path.parent, layout.out_dir)
    if layout.manifest_dir.exists():
        trash = layout.out_dir / f".{layout.manifest_name}.trash-{secrets.token_hex(4)}"
        os.replace(layout.manifest_dir, trash)
        fsync_dir(layout.out_dir)
        shutil.rmtree(trash, ignore_errors=True)
    for stray in layout.out_dir.glob(f".{layout.manifest_name}.trash-*"):
        shutil.rmtree(stray, ignore_errors=True)
    forget_cached_records()
