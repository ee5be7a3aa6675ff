"""`medrun report` on a whole runs folder: the first report (every page written, every complete run verified)
and the next one (nothing changed: only the index is rewritten).

Target (issue 23): the report of the `make smoke` runs folder (27+ runs) in under 10 s. Pass the folder as the
first argument (e.g. `runs/` after `make smoke`); without one, 40 sealed runs with learning curves, a 200-case
per_case.csv and two figures each are generated.
"""

from __future__ import annotations

import os
import platform
import sys
import tempfile
import time
from pathlib import Path

from medrun.artifacts import RunDir, run_path
from medrun.artifacts.env import capture_env
from medrun.artifacts.fingerprint import code_fingerprint
from medrun.artifacts.report.render import build
from medrun.pipelines.runner import default_manifest

PAPER = "pipeline: ad-lite\nseed: {i}\npaper:\n  card: ad-lite\n  table: Table 1\n  expect:\n    accuracy: 0.9\n"


def make_runs(runs: Path, n: int) -> None:
    code, env = code_fingerprint(), capture_env()
    curves = "epoch,step,train_loss,val_accuracy\n" + "".join(f"{e},{e * 10},{1 / (e + 1)},{e / 50}\n"
                                                              for e in range(50))
    cases = "case,accuracy,prob\n" + "".join(f"case{c},{c % 2},{(c % 7) / 7}\n" for c in range(200))
    png = bytes.fromhex("89504e470d0a1a0a") + os.urandom(20_000)
    for i in range(n):
        rid = f"{i + 1:012x}" + "a" * 52
        rd = RunDir(run_path(runs, "ad-lite", "train", rid)).open()
        rd.write_text("manifest.yaml", PAPER.format(i=i))
        rd.write_json("env.json", env)
        rd.write_json("data.lock.json", {"fingerprint": "0" * 64, "trees": {}, "splits": {}})
        rd.write_json("run.json", {"id": rid, "pipeline": "ad-lite", "stage": "train", "status": "running",
                                   "dataset": "oasis", "fixture": True, "code": code, "seed": i,
                                   "started": "2026-01-01T00:00:00+0000"})
        rd.write_json("metrics.json", {"accuracy": 0.5 + i / 100, "auroc": 0.6})
        rd.write_text("logs/metrics.csv", curves)
        rd.write_text("per_case.csv", cases)
        for name in ("figures/learning_curves.png", "figures/confusion.png"):
            (rd.path / name).parent.mkdir(parents=True, exist_ok=True)
            (rd.path / name).write_bytes(png)
        (rd.path / "checkpoints" / "model.safetensors").write_bytes(os.urandom(5 << 20))
        rd.seal()
        rd.close()


def main() -> None:
    tmp = Path(tempfile.mkdtemp())
    if len(sys.argv) > 1:  # the user's stat cache, as `medrun report` would use it after the runs were sealed here
        runs, what = Path(sys.argv[1]), f"`{sys.argv[1]}`"
    else:
        os.environ["MEDRUN_CACHE"] = str(tmp / "cache")
        runs, what = tmp / "runs", "40 generated sealed runs (5 MB checkpoint, 50-epoch log, 200 cases each)"
        make_runs(runs, 40)
    out = tmp / "report"
    t0 = time.perf_counter()
    first = build(runs, out, defaults=default_manifest)
    t1 = time.perf_counter()
    second = build(runs, out, defaults=default_manifest)
    t2 = time.perf_counter()
    print("## medrun report\n")
    print(f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs; {what}.\n")
    print("| report | runs | pages written | seconds | target |\n|---|---|---|---|---|")
    print(f"| first (all pages, every run verified) | {first['runs']} | {len(first['written'])} | {t1 - t0:.2f} "
          f"| < 10 s |")
    print(f"| again, nothing changed | {second['runs']} | {len(second['written'])} | {t2 - t1:.2f} | |")


if __name__ == "__main__":
    main()
