"""Consoles: rich on a terminal, plain lines otherwise (logs, CI, pipes)."""

from __future__ import annotations

import functools
import json
import sys


@functools.cache
def stdout():
    from rich.console import Console

    return Console(highlight=False, soft_wrap=True)


@functools.cache
def stderr():
    from rich.console import Console

    return Console(stderr=True, highlight=False, soft_wrap=True)


def log(message: str) -> None:
    """Progress lines go to stderr so that ``--json`` output on stdout stays machine-readable."""
    print(message, file=sys.stderr, flush=True)


def emit_json(obj) -> None:
    sys.stdout.write(json.dumps(obj, indent=2, default=str) + "\n")
    sys.stdout.flush()
