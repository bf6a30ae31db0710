"""What one rank's extraction returns: its exit code, counts and timings."""
from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class RunResult:
    exit_code: int
    units_total: int
    units_done_here: int
    units_failed: list[str] = field(default_factory=list)
    images: int = 0               # rows processed here; with --gpus (the launcher's result):
                                  # rows the workers committed (their own counts stay theirs)
    failures: int = 0
    seconds: float = 0.0          # whole run, setup and model load included
    loop_seconds: float = 0.0     # streaming, workers' start-up included (setup and load not)
    first_batch_seconds: float = 0.0   # from the start of streaming to the first model batch
    steady_seconds: float = 0.0   # first model batch to the last one's features: images /
                                  # steady_seconds is the rate a long run sustains
    summary: str = ""
    peak_feature_bytes: int = 0   # features held in host memory waiting for their unit's write
    decode_thread_seconds: float = 0.0   # --decode gpu: the decode thread's busy time
    spilled_bytes: int = 0        # features spilled to disk to stay under --feature-memory
    cpu_share: float | None = None   # --decode gpu: share of the GPU-decodable JPEGs the
                                     # workers decoded on the CPU (decode_share)
