"""The output store of ``webssl extract``: layout, plan, run config, writers, commits,
claims and read-back. See docs/output-format.md for the on-disk format and protocols."""
from ..atomic_io import atomic_output, atomic_write_bytes, exclusive_create, sha256_file
from .claims import ClaimLostError, ClaimStore, list_claims
from .commit import commit_unit, done_units, pending_commits, read_done_records, roll_forward
from .layout import FORMATS, OutputLayout, feature_slug
from .plan import load_plan, save_or_load_plan
from .reader import (UnitFeatures, fixed_size_list_to_numpy, iter_features, read_features,
                     read_provenance)
from .records import ClaimInfo, DoneRecord, FileInfo, RunConfig
from .repair import reopen_damaged_units, sweep_temp_files, tidy_on_start
from .runconfig import (check_run_config, diff_fields, fingerprint, is_local_input,
                        load_run_config, normalize_input, wipe_outputs)
from .staging import discard_staged
from .status import StatusReport, get_status
from .unit_failures import UnitFailure, failed_in_job, list_unit_failures, record_unit_failure
from .writers import UnitRows, write_failures, write_unit

__all__ = [
    "ClaimInfo", "ClaimLostError", "ClaimStore", "DoneRecord", "FORMATS", "FileInfo",
    "OutputLayout", "RunConfig", "StatusReport", "UnitFailure", "UnitRows", "atomic_output",
    "atomic_write_bytes", "check_run_config", "commit_unit", "diff_fields", "discard_staged",
    "done_units", "exclusive_create", "failed_in_job", "feature_slug", "fingerprint",
    "fixed_size_list_to_numpy", "get_status", "is_local_input", "list_claims",
    "list_unit_failures", "load_plan", "load_run_config", "normalize_input", "pending_commits",
    "read_done_records", "read_features", "iter_features", "UnitFeatures", "read_provenance",
    "record_unit_failure",
    "reopen_damaged_units", "roll_forward", "save_or_load_plan", "sha256_file",
    "sweep_temp_files", "tidy_on_start", "wipe_outputs", "write_failures", "write_unit",
]
