"""Resolve what a user typed (short, full, HF or .pth-style name, any case) to a record."""
from __future__ import annotations

import difflib
from dataclasses import dataclass

from ..errors import ModelNotFoundError
from .models import BY_NAME, ModelRecord

# Names from the pre-release README that users still type.
RENAMED = {
    "dino7b-full8b-384": ("dino7b-full8b-378",
                          "dino7b-full8b-384 was released as dino7b-full8b-378 "
                          "(384 is not a multiple of the patch size 14)"),
}
NEVER_RELEASED = {
    "mae7b-full2b-224": ("mae7b-full2b-224 was announced in a pre-release README but never "
                         "released: Web-MAE stops at 3B. Closest: mae3b-full2b-224 (largest "
                         "Web-MAE) or dino7b-full8b-224 (7B, Web-DINO)."),
}


@dataclass(frozen=True)
class Resolved:
    record: ModelRecord
    notice: str | None = None   # one line to show the user (e.g. a renamed model)


def normalize(name: str) -> str:
    s = name.strip().lower()
    for prefix in ("https://huggingface.co/", "hf://", "facebook/"):
        if s.startswith(prefix):
            s = s[len(prefix):]
    if s.endswith(".pth"):
        s = s[:-4]
    s = s.replace("_", "-")
    if s.endswith("-ssl-teacher"):
        s = s[: -len("-ssl-teacher")]
    if s.startswith("webssl-"):
        s = s[len("webssl-"):]
    return s


def resolve(name: str) -> Resolved:
    """Return the record for ``name``; raise ModelNotFoundError (exit 2) with advice otherwise."""
    key = normalize(name)
    if key in BY_NAME:
        return Resolved(BY_NAME[key])
    if key in RENAMED:
        target, why = RENAMED[key]
        return Resolved(BY_NAME[target], notice=f"note: {why}; using {target}.")
    if key in NEVER_RELEASED:
        raise ModelNotFoundError(NEVER_RELEASED[key])
    close = suggest(key)
    hint = f" Did you mean: {', '.join(close)}?" if close else ""
    raise ModelNotFoundError(f"unknown model {name!r}.{hint} Run `webssl list-models` to see "
                             f"all models, or pass --model-config FILE for a custom architecture.")


def suggest(name: str, n: int = 3) -> list[str]:
    """Registry names close to ``name`` (for 'did you mean' hints), best first; without a
    close one, names that start with it (``dino300`` -> ``dino300m-*``), else names that
    contain it, in registry order (up to ``2 * n`` of those: one family's sizes)."""
    key = normalize(name)
    close = difflib.get_close_matches(key, list(BY_NAME), n=n, cutoff=0.6)
    if close or not key:
        return close
    starts = [m for m in BY_NAME if m.startswith(key)]
    return (starts or [m for m in BY_NAME if key in m])[:2 * n]


def search(substring: str | None = None) -> list[ModelRecord]:
    """Released models whose short name, full name or family contains ``substring``
    (case-insensitive); all of them without one. ``webssl_cli.list_models`` is this."""
    from .models import MODELS
    if not substring:
        return list(MODELS)
    s = substring.lower()
    return [m for m in MODELS if s in m.name or s in m.full_name or s in m.family]


def search_or_fail(substring: str | None) -> list[ModelRecord]:
    """:func:`search`, but no match raises ModelNotFoundError (exit 2) with suggestions."""
    found = search(substring)
    if found:
        return found
    close = suggest(substring or "")
    hint = f" Did you mean: {', '.join(close)}?" if close else ""
    raise ModelNotFoundError(f"no model matches {substring!r}.{hint} Run `webssl list-models` "
                             f"without a filter to see all models.")
