"""webssl: batch feature extraction for Meta's Web-SSL vision models.

Python API (the CLI is a thin shell over it). Heavy modules are imported lazily so that
``webssl list-models`` never imports torch.
"""
from __future__ import annotations

__version__ = "0.1.0"

from typing import TYPE_CHECKING

__all__ = ["__version__", "create_model", "read_features", "iter_features", "extract",
           "list_models", "resolve"]

if TYPE_CHECKING:   # what type checkers and IDEs see; at run time __getattr__ loads lazily
    from .backbone.factory import create_model
    from .pipeline.api import extract
    from .registry import resolve
    from .registry import search as list_models
    from .store import iter_features, read_features


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))


def __getattr__(name: str):
    if name == "create_model":
        from .backbone.factory import create_model
        return create_model
    if name == "read_features":
        from .store import read_features
        return read_features
    if name == "iter_features":
        from .store import iter_features
        return iter_features
    if name == "extract":
        from .pipeline.api import extract
        return extract
    if name == "list_models":
        from .registry import search
        return search
    if name == "resolve":
        from .registry import resolve
        return resolve
    raise AttributeError(name)
