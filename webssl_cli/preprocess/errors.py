"""The one error type of the decode/preprocess stage.

A :class:`DecodeError` is never fatal to a run: the pipeline catches it per sample and writes
``(key, source, "decode", error_type, message)`` into the unit's failure ledger.
"""
from __future__ import annotations


class DecodeError(Exception):
    """Bytes that do not give an RGB image (``error_type`` is a short stable tag)."""

    def __init__(self, error_type: str, message: str) -> None:
        super().__init__(error_type, message)
        self.error_type = error_type
        self.message = message

    def __str__(self) -> str:
        return f"{self.error_type}: {self.message}"
