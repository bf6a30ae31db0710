"""webssl: batch feature extraction for Web-SSL models."""
