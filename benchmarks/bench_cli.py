"""CLI start-up: `medrun --help` and `medrun list` wall time against MONAI's bundle CLI help, in one run.

Target: ≤ 0.3 s on 2 cores. Each command runs in a fresh process; we report the median of several runs.
"""

from __future__ import annotations

import os
import platform
import shutil
import statistics
import subprocess
import sys
import time


def wall(cmd: list[str], repeat: int) -> float:
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main() -> None:
    medrun = shutil.which("medrun", path=os.path.dirname(sys.executable)) or shutil.which("medrun")
    rows = [
        ("medrun --help", wall([medrun, "--help"], 7)),
        ("medrun list", wall([medrun, "list"], 7)),
        ("medrun validate manifests/ad-lite/oasis.yaml", wall([medrun, "validate", "manifests/ad-lite/oasis.yaml"], 5)),
        ("python -c pass (interpreter alone)", wall([sys.executable, "-c", "pass"], 7)),
        ("python -m monai.bundle --help (reference)", wall([sys.executable, "-m", "monai.bundle", "--help"], 2)),
    ]
    print("## CLI start-up (benchmarks/bench_cli.py)\n")
    print(
        f"Machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}. "
        "Median wall time of fresh processes.\n"
    )
    print("| command | seconds | target |")
    print("|---|---|---|")
    for name, secs in rows:
        target = "≤ 0.3" if name.startswith("medrun --help") or name.startswith("medrun list") else ""
        print(f"| `{name}` | {secs:.3f} | {target} |")


if __name__ == "__main__":
    main()
