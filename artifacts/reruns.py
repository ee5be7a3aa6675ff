"""Re-running a finished run and comparing the result with it (used by ``medrun rerun``; no torch here)."""

from __future__ import annotations

import datetime
import os
from pathlib import Path

from .hashing import sha256_file
from .index import flatten
from .rundir import RunDir

RERUNS = ".reruns"
WEIGHTS = "checkpoints/model.safetensors"


def rerun_root(original: RunDir) -> Path:
    """``<runs>/.reruns/<UTC time stamp>_<pid>/``: a fresh runs root per rerun. The rerun normally gets the same run
    id as the original (same manifest, code and data), so it must not land in the original's runs root."""
    runs_root = original.path.parent.parent
    stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%dT%H%M%S_%fZ")
    return runs_root / RERUNS / f"{stamp}_{os.getpid()}"


def is_timing(key: str) -> bool:
    """Wall-clock measurements a stage reports beside its results (``eval_seconds``, ``secs_per_epoch``): they
    differ on every run and say nothing about what was computed, so they are listed but never a difference."""
    last = key.rsplit(".", 1)[-1]
    return last in ("seconds", "secs") or last.endswith(("_seconds", "_secs")) or last.startswith("secs_per_")


def compare_runs(original: RunDir, rerun: RunDir) -> dict:
    """Every difference in metrics (dotted keys; timings listed apart) and in the sha256 of ``model.safetensors``."""
    diffs, timings = [], []
    ma, mb = flatten(original.metrics()), flatten(rerun.metrics())
    for k in sorted(set(ma) | set(mb)):
        if ma.get(k) != mb.get(k):
            (timings if is_timing(k) else diffs).append(
                {"what": f"metrics.{k}", "original": ma.get(k), "rerun": mb.get(k)}
            )
    wa, wb = original.path / WEIGHTS, rerun.path / WEIGHTS
    sha_a = sha256_file(wa) if wa.exists() else None
    sha_b = sha256_file(wb) if wb.exists() else None
    if sha_a != sha_b:
        diffs.append({"what": WEIGHTS + " sha256", "original": sha_a, "rerun": sha_b})
    return {"identical": not diffs, "differences": diffs, "timings": timings,
            "weights_sha256": {"original": sha_a, "rerun": sha_b}}
