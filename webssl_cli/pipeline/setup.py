"""Everything decided before the first image is read: model choice, resolution, features,
input plan, weights, run fingerprint. Bad input fails here (exit 2), before a model loads."""
from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .. import __version__
from ..backbone.factory import ModelChoice, choose_given
from ..config import PREPROCESS_MODES, ExtractConfig, PreprocessConfig
from ..distributed import RankInfo
from ..errors import UsageError
from ..model_step.features import Feature, parse_features
from ..units import Unit


@dataclass
class Prepared:
    cfg: ExtractConfig
    choice: ModelChoice
    pcfg: PreprocessConfig
    features: tuple[Feature, ...]
    layout: Any
    units: list[Unit]
    weights: Path | None
    fields: dict[str, Any]


def choose_model(cfg: ExtractConfig) -> ModelChoice:
    return choose_given(cfg.model.model, cfg.model.model_config)


def preprocess_config(cfg: ExtractConfig, choice: ModelChoice) -> PreprocessConfig:
    spec = choice.spec
    res = cfg.model.resolution or spec.img_size
    if res % spec.patch_size:
        lo = res // spec.patch_size * spec.patch_size
        raise UsageError(f"--resolution {res} is not a multiple of the patch size "
                         f"{spec.patch_size} of {choice.name}; try {lo} or {lo + spec.patch_size}")
    if cfg.preprocess_mode not in PREPROCESS_MODES:
        raise UsageError(f"--preprocess must be one of {', '.join(PREPROCESS_MODES)}")
    if cfg.max_image_pixels < 1:
        raise UsageError(f"--max-image-pixels must be positive, got {cfg.max_image_pixels}")
    if choice.record is not None:
        pre = choice.record.preprocess
        return PreprocessConfig(res, cfg.preprocess_mode, pre.mean, pre.std, cfg.max_image_pixels,
                                cfg.jpeg_draft)
    return PreprocessConfig(res, cfg.preprocess_mode, max_image_pixels=cfg.max_image_pixels,
                            jpeg_draft=cfg.jpeg_draft)


def locate_weights(cfg: ExtractConfig, choice: ModelChoice) -> Path:
    m = cfg.model
    if m.weights:
        p = Path(m.weights).expanduser()
        if not p.exists():
            raise UsageError(f"--weights {p}: no such file or directory")
        if p.is_file():
            check_sidecar(p, cfg.model.cache_dir)
        return p
    if choice.record is None:
        raise UsageError("--model-config needs --weights FILE (a custom architecture has no "
                         "registry weights to download)")
    from ..weights import WeightsRequest, resolve_weights
    return resolve_weights(WeightsRequest(model=choice.record, source=m.source,
                                          cache_dir=m.cache_dir, offline=m.offline))


def check_sidecar(weights: Path, cache_dir: str | None) -> None:
    """A ``.sha256`` beside a ``--weights`` file must match it. The hash is the one the run
    config records (``weights_sha256``, memoized in the cache), so a big checkpoint in a
    read-only folder is hashed once, not on every run and rank, and not twice per run."""
    from ..checkpoints.identity import weights_sha256
    from ..errors import CheckpointError
    from ..weights.checksum import read_sidecar, sidecar_path
    from ..weights.paths import pth_cache_root
    expected = read_sidecar(weights)
    if expected is None:
        return
    actual = weights_sha256(weights, pth_cache_root(cache_dir) / "sha256")
    if actual != expected:
        raise CheckpointError(
            f"--weights {weights}: checksum mismatch: the file hashes to sha256 {actual} but "
            f"{sidecar_path(weights).name} beside it records {expected}. The file was changed "
            "or replaced after the sidecar was written: put the right file back, or delete the "
            "stale sidecar if this file is the one you mean")


def _weights_identity(weights: Path, cache_dir: str | None) -> dict[str, str]:
    """The run config's weights fields; an unreadable file is an input error naming it."""
    from ..checkpoints import file_fingerprint
    from ..checkpoints.identity import weights_sha256
    from ..weights.paths import pth_cache_root
    try:
        return {"weights_checksum": file_fingerprint(weights),   # quick: name, size, first MiB
                "weights_sha256": weights_sha256(weights, pth_cache_root(cache_dir) / "sha256")}
    except OSError as exc:
        raise UsageError(f"weights {weights}: cannot read {exc.filename or weights} "
                         f"({exc.strerror or exc}); make the file and its folder readable") from None


def run_fields(cfg: ExtractConfig, choice: ModelChoice, pcfg: PreprocessConfig,
               features: tuple[Feature, ...], weights: Path, precision: str) -> dict[str, Any]:
    """What defines the output; a rerun that differs in any of these is refused."""
    from ..preprocess import describe
    from ..store import normalize_input
    return {
        "model": choice.name,
        "architecture": choice.spec.to_dict(),
        **_weights_identity(weights, cfg.model.cache_dir),
        "preprocessing": {k: v for k, v in describe(pcfg).items() if k != "versions"},
        "resolution": pcfg.resolution,
        "position_embedding": choice.spec.position_embedding(pcfg.resolution),
        "precision": precision,
        "features": [f.name for f in features],
        "normalize": cfg.output.normalize,
        "format": cfg.output.format,
        "out_dtype": cfg.output.out_dtype,
        "inputs": [normalize_input(i) for i in cfg.input.inputs],   # one spelling per input
        "shard_size": cfg.input.shard_size,
        "image_key": cfg.input.image_key,
        "image_column": cfg.input.image_column,
        "key_column": cfg.input.key_column,
        "keep_json": cfg.input.keep_json,
        "tool_version": __version__,
    }


def prepare(cfg: ExtractConfig, rank: RankInfo, precision: str) -> Prepared:
    from ..readers import plan_units
    from ..store import (OutputLayout, check_run_config, is_local_input, save_or_load_plan,
                         tidy_on_start)

    if cfg.output.format not in ("parquet", "npy"):
        raise UsageError(f"--format must be parquet or npy, got {cfg.output.format!r}")
    if cfg.output.out_dtype not in ("float16", "float32"):
        raise UsageError(f"--out-dtype must be float16 or float32, got {cfg.output.out_dtype!r}")
    choice = choose_model(cfg)
    pcfg = preprocess_config(cfg, choice)
    grid = pcfg.resolution // choice.spec.patch_size
    features = parse_features(cfg.output.features, choice.spec.depth, (grid, grid))
    layout = OutputLayout(cfg.output.out_dir, cfg.output.manifest_name)
    # Validate the inputs before anything heavy (exit 2 on an empty/unreadable input).
    planned: list[Unit] | None = None
    if rank.is_planner and not layout.plan_path.exists():
        planned = plan_units(cfg.input)
    weights = locate_weights(cfg, choice)
    if rank.is_planner:    # a wrong weights file stops the run before it writes anything
        from ..backbone.factory import check_weights
        check_weights(choice.spec if choice.record is None else choice.record.name, weights)
    fields = run_fields(cfg, choice, pcfg, features, weights, precision)
    if rank.is_planner:
        check_run_config(layout, fields, overwrite=cfg.output.overwrite)
        if planned is None and not layout.plan_path.exists():
            planned = plan_units(cfg.input)

    def say(msg: str) -> None:
        print(f"{rank.prefix} {msg}".strip(), file=sys.stderr, flush=True)

    if rank.is_planner and choice.spec.outside_reference(pcfg.resolution):
        say(f"note: {choice.name} at {pcfg.resolution} px: position embedding "
            f"{fields['position_embedding']} (recorded with the output)")
    # resuming: warn about inputs added since the plan was made (local inputs only: cheap)
    local = all(is_local_input(i) for i in cfg.input.inputs)
    recheck = (lambda: plan_units(cfg.input)) if planned is None and local else None
    units = save_or_load_plan(layout, lambda: planned if planned is not None else plan_units(cfg.input),
                              is_planner=rank.is_planner,
                              wait_seconds=cfg.runtime.plan_wait_seconds,
                              fields=None if rank.is_planner else fields,
                              overwrite=cfg.output.overwrite, recheck=recheck, say=say)
    if not rank.is_planner:
        check_run_config(layout, fields, overwrite=False)
    elif cfg.runtime.limit_units != 0:     # a plan-only run changes no data
        tidy_on_start(layout, say)         # sweep stale temp files; reopen damaged done units
    return Prepared(cfg, choice, pcfg, features, layout, units, weights, fields)
