"""Running `webssl` from the tests, two ways with one result type (``CompletedProcess``):

* ``run_cli(args)``: the installed console script in a new process. Each run pays a fresh
  torch + torchvision import (about 6 s on the 2-core test machine), so it is kept for what
  only a real process shows: the entry point itself, signals, resource limits, environments.
* ``cli_here(args)``: the same ``main`` (typer parsing, the API, error printing, ``sys.exit``
  codes) called in this process, with stdout/stderr captured and ``env`` set only for the
  call. For checking what a command does and says, at no import cost.

``env`` changes this process's environment for the run: a value of None unsets the variable.
"""
from __future__ import annotations

import io
import os
import subprocess
import sys
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path

WEBSSL = str(Path(sys.executable).with_name("webssl"))


def apply_env(target, env: dict | None) -> None:
    """Change the mapping ``target`` by ``env`` (None values unset)."""
    for k, v in (env or {}).items():
        if v is None:
            target.pop(k, None)
        else:
            target[k] = v


def child_env(env: dict | None) -> dict[str, str]:
    """This process's environment changed by ``env``."""
    out = dict(os.environ)
    apply_env(out, env)
    return out


def run_cli(args: list[str], env: dict | None = None, timeout: float = 180,
            **kwargs) -> subprocess.CompletedProcess:
    """``args`` after the program name, in a new process."""
    return subprocess.run([WEBSSL, *map(str, args)], capture_output=True, text=True,
                          timeout=timeout, env=child_env(env), **kwargs)


def cli_here(args: list[str], env: dict | None = None) -> subprocess.CompletedProcess:
    """``main(args)`` in this process; the exit code is what the console script would exit
    with (0 when ``main`` returns)."""
    from webssl_cli.cli.app import main
    out, err = io.StringIO(), io.StringIO()
    saved = {k: os.environ.get(k) for k in (env or {})}
    apply_env(os.environ, env)
    try:
        with redirect_stdout(out), redirect_stderr(err):
            try:
                main([str(a) for a in args])
                code = 0
            except SystemExit as exc:
                code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    finally:
        apply_env(os.environ, saved)
    return subprocess.CompletedProcess(["webssl", *args], code, out.getvalue(), err.getvalue())
