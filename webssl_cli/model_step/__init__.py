"""The model step (pure: uint8 batch -> features) and feature definitions."""
from .features import Feature, parse_features
from .step import ModelStep, pick_device, pick_precision

__all__ = ["Feature", "ModelStep", "parse_features", "pick_device", "pick_precision"]
