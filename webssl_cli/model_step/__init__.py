"""The model step (pure: uint8 batch -> features) and feature definitions."""
from .features import Feature, parse_features
from .step import NONFINITE, ModelStep, nonfinite_rows, pick_device, pick_precision

__all__ = ["NONFINITE", "Feature", "ModelStep", "nonfinite_rows", "parse_features",
           "pick_device", "pick_precision"]
