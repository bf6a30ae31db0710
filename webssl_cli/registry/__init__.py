"""Model registry: records (data), name resolution and closed-form costs. Imports no torch."""
from .cost import feature_bytes, flops_per_image, param_count
from .models import MODELS, ModelRecord, Preprocess
from .resolve import Resolved, resolve, search, search_or_fail, suggest
from .spec import ArchSpec, swiglu_hidden

__all__ = ["ArchSpec", "MODELS", "ModelRecord", "Preprocess", "Resolved", "feature_bytes",
           "flops_per_image", "param_count", "resolve", "search", "search_or_fail", "suggest",
           "swiglu_hidden"]
