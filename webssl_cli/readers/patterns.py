"""Shell-style shard patterns: brace ranges/lists (``shards-{000000..000099}.tar``,
``{train,val}``) and glob characters."""
from __future__ import annotations

import re

from ..errors import UsageError

MAX_EXPANSION = 10_000_000
_BRACE = re.compile(r"\{([^{}]*)\}")
_RANGE = re.compile(r"(-?\d+)\.\.(-?\d+)")


def has_glob(text: str) -> bool:
    return any(c in text for c in "*?[")


def has_brace(text: str) -> bool:
    return any(_options(m.group(1)) is not None for m in _BRACE.finditer(text))


def expand_braces(pattern: str) -> list[str]:
    """All strings a brace pattern stands for, in order; a pattern without braces -> [pattern].

    ``{a..b}`` counts (up or down) and zero-pads to the wider bound when either has a leading
    zero; ``{x,y}`` lists alternatives; a brace group that is neither stays literal.
    """
    out = _expand(pattern)
    if len(out) > MAX_EXPANSION:
        raise UsageError(f"--input {pattern}: expands to more than {MAX_EXPANSION:,} names")
    return out


def _expand(pattern: str) -> list[str]:
    for m in _BRACE.finditer(pattern):
        options = _options(m.group(1))
        if options is None:
            continue
        head, tail = pattern[:m.start()], pattern[m.end():]
        result: list[str] = []
        for opt in options:
            result.extend(_expand(head + opt + tail))
            if len(result) > MAX_EXPANSION:
                break
        return result
    return [pattern]


def _options(body: str) -> list[str] | None:
    rng = _RANGE.fullmatch(body)
    if rng:
        a_text, b_text = rng.groups()
        a, b = int(a_text), int(b_text)
        padded = any(t.lstrip("-").startswith("0") and len(t.lstrip("-")) > 1
                     for t in (a_text, b_text))
        width = max(len(a_text), len(b_text)) if padded else 0
        step = 1 if b >= a else -1
        if abs(b - a) >= MAX_EXPANSION:
            raise UsageError(f"brace range {{{body}}} has more than {MAX_EXPANSION:,} values")
        return [str(i).zfill(width) for i in range(a, b + step, step)]
    if "," in body:
        return body.split(",")
    return None


def static_dir(pattern: str) -> str:
    """The folder part of ``pattern`` before its first wildcard or brace, ending in "/"."""
    cut = min([i for i in (pattern.find(c) for c in "*?[{") if i >= 0] or [len(pattern)])
    head = pattern[:cut]
    return head[: head.rfind("/") + 1]
