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


def machine(threads: int | None = None) -> str:
    """The line naming the machine a benchmark ran on (CPU, cores, torch and its intra-op threads, Python)."""
    import os
    import platform

    import torch

    cpu = platform.processor() or platform.machine()
    n = threads if threads is not None else torch.get_num_threads()
    return (f"{cpu}, {os.cpu_count()} cores, torch {torch.__version__} ({n} intra-op thread{'s' * (n != 1)}), "
            f"Python {platform.python_version()}, no GPU used")


def run_child(code: str, args: list[str], threads: int) -> dict:
    """Run ``python -c code *args`` with ``threads`` OpenMP threads (a fresh process, so its peak memory is its
    own) and return the JSON object its last stdout line holds."""
    import json
    import os
    import subprocess
    import sys

    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    out = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, check=True, env=env)
    return json.loads(out.stdout.strip().splitlines()[-1])
