"""Launchers (issue 24): a 4-fold ``cv`` of ad-lite on the OASIS fixture, sequentially (``local``) against
``local:2``, and the per-child overhead of ``submitit-local:2`` against ``local:2``.

Each measurement is a fresh runs folder (nothing reused) and one ``medrun`` process, with a shared, warm fixture
cache. The sequential run uses torch's default thread count (every core); ``local:2`` gives each child
``cores // 2`` threads. Run from the repository root:

    python benchmarks/bench_launchers.py [--epochs 3] [--img-size 32] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def medrun(args, runs: Path, cache: Path) -> float:
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "MKL_NUM_THREADS")}
    env.update(MEDRUN_PLAIN="1", MEDRUN_CACHE=str(cache))
    t0 = time.perf_counter()
    r = subprocess.run([sys.executable, "-m", "medrun.cli.main", *map(str, args), "--runs-dir", str(runs)],
                       env=env, capture_output=True, text=True)
    took = time.perf_counter() - t0
    if r.returncode:
        sys.exit(f"medrun {' '.join(map(str, args))} failed ({r.returncode}):\n{r.stderr[-3000:]}")
    return took


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--img-size", type=int, default=32)
    ap.add_argument("--folds", type=int, default=4)
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args()
    cv = ["cv", "ad-lite", "--dataset", "oasis", "--fixture", "-o", f"dataset.img_size={a.img_size}",
          "-o", f"train.epochs={a.epochs}", "-o", f"dataset.folds={a.folds}", "-o", "train.batch_size=16"]
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        cache = tmp / "cache"
        medrun(["train", "ad-lite", "--dataset", "oasis", "--fixture", "--dry-run"], tmp / "warm", cache)  # fixture
        out = {"cores": len(os.sched_getaffinity(0)), "folds": a.folds, "epochs": a.epochs, "img_size": a.img_size,
               "load_before": os.getloadavg()[0]}
        out["sequential_s"] = medrun(cv, tmp / "seq", cache)
        out["local2_s"] = medrun([*cv, "--launcher", "local:2"], tmp / "local2", cache)
        try:
            import submitit  # noqa: F401

            out["submitit_local2_s"] = medrun([*cv, "--launcher", "submitit-local:2"], tmp / "sub2", cache)
        except ImportError:
            out["submitit_local2_s"] = None
        out["load_after"] = os.getloadavg()[0]
    out["speedup_local2"] = out["sequential_s"] / out["local2_s"]
    if out["submitit_local2_s"] is not None:
        out["submitit_overhead_per_child_s"] = (out["submitit_local2_s"] - out["local2_s"]) / a.folds
    if a.json:
        print(json.dumps(out, indent=2))
        return
    print(f"{a.folds}-fold cv of ad-lite (fixture, {a.img_size}px, {a.epochs} epochs) on {out['cores']} cores "
          f"(load {out['load_before']:.1f} -> {out['load_after']:.1f})")
    print(f"  sequential (local)   {out['sequential_s']:7.1f} s")
    print(f"  local:2              {out['local2_s']:7.1f} s   speed-up x{out['speedup_local2']:.2f}")
    if out["submitit_local2_s"] is not None:
        print(f"  submitit-local:2     {out['submitit_local2_s']:7.1f} s   "
              f"overhead per child vs local:2 {out['submitit_overhead_per_child_s']:+.1f} s")


if __name__ == "__main__":
    main()
