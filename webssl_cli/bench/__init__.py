"""`webssl bench`: measured speed of the model step and of the input pipeline on this machine.

- :func:`bench_model` — random-init real-size model, synthetic uint8 input through the model
  step: images/s, ms per image, TFLOP/s, MFU, peak memory, and (``images=N``) the projected
  wall time and output size of a run of N images.
- :func:`bench_input` — the extract loader alone (read + decode + preprocess) on real input.
"""
from .config import BenchConfig, BenchResult
from .inputs import bench_input, bench_input_for
from .model import bench_model
from .modes import check_mode_options
from .peaks import KNOWN_PEAKS, match_peak, peak_for
from .projection import feature_bytes_per_image, human_seconds, project

__all__ = ["KNOWN_PEAKS", "BenchConfig", "BenchResult", "bench_input", "bench_input_for", "bench_model",
           "check_mode_options", "feature_bytes_per_image", "human_seconds", "match_peak",
           "peak_for", "project"]
