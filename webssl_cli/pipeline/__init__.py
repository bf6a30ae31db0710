"""The extraction pipeline: setup, loader (stage 1), runner (stages 2-3), progress."""
