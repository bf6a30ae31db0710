"""`webssl list-models` and `webssl info`: the registry as a table or JSON (no torch import)."""
from __future__ import annotations

import json
import sys
from typing import Optional

import typer

from .errors import exit_on_error
from .options import opt


def _cached(rec, cache_dir: Optional[str] = None) -> dict[str, bool]:
    from ..weights import cached_sources
    return cached_sources(rec, cache_dir)


CACHE_DIR_HELP = ("Cache root to look in, as given to `webssl download --cache-dir` (default: "
                  "$WEBSSL_CACHE or ~/.cache/webssl for .pth, the Hugging Face hub cache for hf).")


def list_models(
    filter: Optional[str] = typer.Argument(None, metavar="FILTER", help="Only models whose name contains this."),
    as_json: bool = opt(False, "--json", help="Print JSON instead of a table."),
    cache_dir: Optional[str] = opt(None, "--cache-dir", help=CACHE_DIR_HELP),
) -> None:
    """List every released Web-SSL model with its size, cost and cache state.

    Exit 2 when FILTER matches no model.

    Example: webssl list-models dino7b --cache-dir /data/webssl --json
    """
    from rich.console import Console
    from rich.table import Table

    from ..registry import search_or_fail
    from ..registry.summary import human_bytes, summarize

    with exit_on_error():
        records = search_or_fail(filter)
    rows = [summarize(m, _cached(m, cache_dir)) for m in records]
    if as_json:
        print(json.dumps(rows, indent=2))
        return
    table = Table(title="Web-SSL models")
    for col in ("name", "family", "params", "D/depth/heads", "patch", "res", "tokens", "GFLOPs",
                "CLS fp16", "patches fp16", "bf16 weights", "data", "license", "cached"):
        table.add_column(col, overflow="fold", no_wrap=col == "name")   # names stay whole
    for r in rows:
        cached = ",".join(k for k, v in r["cached"].items() if v) or "-"
        table.add_row(r["name"], r["family"], f"{r['params'] / 1e9:.2f}B",
                      f"{r['width']}/{r['depth']}/{r['heads']}", str(r["patch"]),
                      str(r["resolution"]), str(r["tokens"]), f"{r['gflops_per_image']:.0f}",
                      human_bytes(r["fp16_bytes_cls"]), human_bytes(r["fp16_bytes_patches"]),
                      human_bytes(r["bf16_weight_bytes"]), r["data"], r["license"], cached)
    Console(width=max(Console().width, 160)).print(table)


def info(model: str = typer.Argument(..., metavar="MODEL", help="Model name (short, full, HF id or .pth name)."),
         cache_dir: Optional[str] = opt(None, "--cache-dir", help=CACHE_DIR_HELP)) -> None:
    """Show one model in full: architecture, cost, weight URLs, preprocessing, cache state.

    Example: webssl info dino1b-full2b-224
    """
    from ..registry import resolve
    from ..registry.summary import summarize

    with exit_on_error():
        resolved = resolve(model)
    if resolved.notice:
        print(resolved.notice, file=sys.stderr)
    print(json.dumps(summarize(resolved.record, _cached(resolved.record, cache_dir), full=True),
                     indent=2))


def register(app: typer.Typer) -> None:
    app.command("list-models")(list_models)
    app.command("info")(info)
