"""`webssl download`: fetch a model's weights into the cache (once) and print their path."""
from __future__ import annotations

import sys
from typing import Optional

import typer

from .errors import exit_on_error
from .options import opt


def download(
    model: str = typer.Argument(..., metavar="MODEL", help="Model name (short, full, HF or .pth style), "
                                          "see `webssl list-models`."),
    source: Optional[str] = opt(
        None, "--source", help="hf (safetensors through huggingface_hub; default where the "
                               "model has an HF repo) or pth (the official .pth file)."),
    teacher: bool = opt(False, "--teacher",
                        help="The *_ssl_teacher.pth checkpoint (Web-DINO, pth only)."),
    cache_dir: Optional[str] = opt(
        None, "--cache-dir", help="Cache root for both sources (default: $WEBSSL_CACHE or "
                                  "~/.cache/webssl for .pth, the Hugging Face hub cache for hf)."),
    verify: bool = opt(False, "--verify",
                       help="Rehash the cached file(s) fully; a damaged file is "
                            "deleted and downloaded again."),
    quiet: bool = opt(False, "--quiet", "-q", help="No progress output."),
) -> None:
    """Download MODEL's weights into the cache and print their path.

    Safe to run from many processes at once (one downloads, the others wait on a lock) and to
    interrupt: Ctrl-C exits 4 and keeps the partial file; rerunning the same command resumes
    the download where it stopped. Already cached weights are not fetched
    again. Each .pth file gets a sha256 recorded beside it and checked on later loads.

    Example:

        webssl download dino1b-full2b-224 --source pth --cache-dir /data/webssl
    """
    from ..errors import EXIT_PREEMPTED
    from ..registry import resolve
    from ..weights import WeightsRequest, resolve_weights

    with exit_on_error():
        resolved = resolve(model)
        if resolved.notice:
            print(resolved.notice, file=sys.stderr)
        req = WeightsRequest(model=resolved.record, source=source, teacher=teacher,
                             cache_dir=cache_dir, offline=False, progress=not quiet,
                             verify=verify)
        try:
            path = resolve_weights(req)
        except KeyboardInterrupt as exc:   # Ctrl-C where no stop-signal handler is installed
            print(f"error: {exc or 'interrupted; rerun the same command to resume the download'}",
                  file=sys.stderr)
            raise typer.Exit(EXIT_PREEMPTED) from None
    print(path)


def register(app: typer.Typer) -> None:
    app.command("download")(download)
