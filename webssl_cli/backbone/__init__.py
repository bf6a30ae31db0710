"""The native Web-SSL ViT (one concept per file) and its factory."""
from .vit import WebSSLViT

__all__ = ["WebSSLViT"]
