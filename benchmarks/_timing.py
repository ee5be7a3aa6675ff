"""Timing shared by the benchmarks (imported as ``_timing``: each benchmark runs as a script from this folder)."""

from __future__ import annotations

import time


def best(fn, repeats: int = 3, warmup: bool = False) -> float:
    """The fastest of ``repeats`` calls of ``fn``, in seconds (after one untimed call when ``warmup``)."""
    if warmup:
        fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)
