"""`webssl extract`: parse options into an ExtractConfig and call the pipeline."""
from __future__ import annotations

from typing import List, Optional

import typer

from .errors import exit_on_error
from .options import PRECISION_DEFAULT, opt


def extract(
    inputs: List[str] = opt(..., "--input", "-i", help="Image folder, path list (.txt), parquet file/folder, tar shard(s) (file, folder, glob, {000..099} braces; quote globs and braces: 'shards/{000..099}.tar'), s3://bucket/prefix/, http(s):// URL or pipe:CMD. Repeatable."),
    out: str = opt(..., "--out", "-o", help="Output folder (features + _webssl/ manifest)."),
    model: Optional[str] = opt(None, "--model", "-m", help="Registry model (see `webssl list-models`)."),
    model_config: Optional[str] = opt(None, "--model-config", help="Architecture JSON file instead of --model (keys: docs/options.md; needs --weights)."),
    weights: Optional[str] = opt(None, "--weights", help="Checkpoint file or HF folder; never touches the network."),
    features: str = opt("cls", "--features", help="Comma list of cls, patch_mean, patches (all patch tokens, row-major), patch_grid:N (tokens pooled to NxN), layers:K (CLS of each of the last K blocks, final-normed). See docs/output-format.md."),
    fmt: str = opt("parquet", "--format", help="npy is the embedding-reader parquet_npy layout."),
    out_dtype: str = opt("float16", "--out-dtype", help="Dtype of the stored features."),
    normalize: bool = opt(False, "--normalize", help="L2-normalize every feature vector."),
    overwrite: bool = opt(False, "--overwrite", help="Discard an earlier run in --out with different settings."),
    manifest_name: str = opt("_webssl", "--manifest-name", help="Name of the manifest folder inside --out; a new one must start with _ or . (dataset readers skip such names)."),
    shard_size: int = opt(10_000, "--shard-size", help="Images per unit for folders, lists and parquet."),
    image_key: Optional[str] = opt(None, "--image-key", help="WebDataset extension(s) holding the image, one or a comma list tried in order (jpg or jpg,png; default: first of jpg/jpeg/png/webp)."),
    image_column: Optional[str] = opt(None, "--image-column", help="Parquet column with image bytes (default: found by name, e.g. image or jpg, else the first binary column)."),
    key_column: Optional[str] = opt(None, "--key-column", help="Parquet column with sample keys."),
    keep_json: bool = opt(False, "--keep-json", help="Copy WebDataset .json sidecars into the output."),
    s3_endpoint_url: Optional[str] = opt(None, "--s3-endpoint-url", envvar="WEBSSL_S3_ENDPOINT_URL", help="S3-compatible endpoint."),
    preprocess: str = opt("resize-crop", "--preprocess", help="resize-crop (official README), squash (official demo) or shortest-crop (HF processor)."),
    max_image_pixels: int = opt(178_956_970, "--max-image-pixels", help="Refuse images whose declared width x height is larger (decompression bombs); they go to the failure ledger."),
    jpeg_draft: bool = opt(False, "--jpeg-draft", help="Decode JPEGs at least twice the resize target at 1/2, 1/4 or 1/8 scale (libjpeg DCT scaling): 1.5-3x faster decoding of big photos (measured on 1000-4000 px JPEGs), 224 px crops measured 49.7 dB PSNR, mean |diff| 0.52 levels from the exact path. Recorded in the output."),
    resolution: Optional[int] = opt(None, "--resolution", help="Input side (multiple of the patch size); default: the model's."),
    device: Optional[str] = opt(None, "--device", help="Default: cuda if available."),
    precision: Optional[str] = opt(None, "--precision", help=f"Default: {PRECISION_DEFAULT}."),
    batch_size: str = opt("64", "--batch-size", help="Images per batch, or 'auto' (largest that fits on the GPU, with 10% headroom; 16 on CPU)."),
    num_workers: int = opt(4, "--num-workers", help="DataLoader worker processes for reading/decoding."),
    decode: str = opt("cpu", "--decode", help="gpu: batched nvJPEG on the GPU (CUDA only)."),
    cpu_share: str = opt("auto", "--cpu-share", help="With --decode gpu: share (0-1) of the GPU-decodable JPEGs that the --num-workers processes decode on the CPU instead, so both decode at once (0: all to the GPU). auto: balanced from their measured speeds while running."),
    attention: str = opt("auto", "--attention", help="Attention kernel."),
    compile: bool = opt(False, "--compile", help="torch.compile the model (one compile per process)."),
    pad_ffn: Optional[bool] = opt(None, "--pad-ffn/--no-pad-ffn", help="Zero-pad the SwiGLU hidden size to a multiple of 256 (same features, aligned matmuls; dino300m 1.11x on an H100). Default: on for CUDA, off for CPU."),
    gpus: int = opt(0, "--gpus", help="Start N worker processes on this node, one per GPU."),
    source: Optional[str] = opt(None, "--source", help="Weights source to download from (default: hf where the model has an HF repo, else pth); not with --weights."),
    cache_dir: Optional[str] = opt(None, "--cache-dir", help="Cache root for both sources (default: $WEBSSL_CACHE or ~/.cache/webssl for .pth, the Hugging Face hub cache for hf)."),
    offline: bool = opt(False, "--offline", help="Never download weights (also when WEBSSL_OFFLINE=1 or HF_HUB_OFFLINE=1 is set)."),
    lease: float = opt(300.0, "--lease", help="Seconds after which another rank may take over a silent unit."),
    progress_every: float = opt(30.0, "--progress-every", help="Seconds between progress lines when not on a terminal."),
    feature_memory: Optional[int] = opt(None, "--feature-memory", help="MiB of features the units in flight may hold in memory, per process; past it the largest spills to <out>/<manifest>/staging (same output files). Default: 1/16 of the memory available at the start, 256-4096 MiB."),
    limit_units: Optional[int] = opt(None, "--limit-units", help="Stop after this many units (sampling, tests); 0 only writes the plan and run config."),
) -> None:
    """Extract Web-SSL features from images into sharded Parquet or NPY files.

    Resumable: rerun the same command to continue; done units are skipped.
    Multi-GPU: --gpus N on one node, or launch under torchrun / srun (see configs/).

    Example: webssl extract --model dino300m-full2b-224 --input photos/ --out feats/

    The first run with a --model downloads its weights into the cache (as `webssl download`
    does; later runs reuse them): pass --weights FILE to use a checkpoint you have, or
    --offline to never download.

    Exit codes: 0 all units done (with --limit-units: every unit this run took);
    1 runtime failure; 2 usage or input error;
    3 some units could not be completed (see `webssl status OUT`);
    4 stopped by SIGTERM/SIGINT/SIGUSR1 (rerun to resume).
    """
    from ..config import ExtractConfig, InputConfig, ModelConfig, OutputConfig, RuntimeConfig
    from ..config_checks import parse_cpu_share
    from ..errors import UsageError
    from ..pipeline.api import run   # the command's signal policy: exit codes, no raise

    with exit_on_error():
        if batch_size != "auto" and not batch_size.isdigit():
            raise UsageError(f"--batch-size must be a positive number or 'auto', got {batch_size!r}")
        cfg = ExtractConfig(
            input=InputConfig(tuple(inputs), shard_size, image_key, image_column, key_column,
                              keep_json, s3_endpoint_url),
            model=ModelConfig(model, model_config, weights, source, cache_dir,
                              offline, device,
                              precision, attention, compile, resolution, pad_ffn),
            output=OutputConfig(out, tuple(features.split(",")), fmt, out_dtype, normalize,
                                overwrite, manifest_name),
            runtime=RuntimeConfig(batch_size=batch_size if batch_size == "auto" else int(batch_size),
                                  num_workers=num_workers, progress_every=progress_every,
                                  lease_seconds=lease,
                                  decode=decode, cpu_share=parse_cpu_share(cpu_share),
                                  gpus=gpus, limit_units=limit_units,
                                  feature_memory_mib=feature_memory),
            preprocess_mode=preprocess,
            max_image_pixels=max_image_pixels,
            jpeg_draft=jpeg_draft,
        )
        result = run(cfg)
    raise typer.Exit(result.exit_code)


def register(app: typer.Typer) -> None:
    app.command("extract")(extract)
