"""Distribution: rank detection, the `--gpus N` launcher, signals and heartbeats."""
from .env import RankInfo, detect_rank

__all__ = ["RankInfo", "detect_rank"]
