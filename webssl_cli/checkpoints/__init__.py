"""Checkpoint reading and conversion (small pure functions with loud, specific errors)."""
from .errors import CheckpointMismatchError
from .load import (LoadReport, check_fits, file_fingerprint, load_weights, match_state_dict,
                   to_our_names)
from .read import read_checkpoint

__all__ = ["CheckpointMismatchError", "LoadReport", "check_fits", "file_fingerprint",
           "load_weights", "match_state_dict", "read_checkpoint", "to_our_names"]
