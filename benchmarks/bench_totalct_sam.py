"""totalct-sam sliding-window inference per 128³ volume, and the peak memory (totalct-sam.md, issue 8 "Performance").

Standalone: ``python benchmarks/bench_totalct_sam.py`` prints a Markdown section (heading, machine, table).
The model is the full-size one (SAM-Med3D vit_b_ori at 128³, 104 classes, the memorizing block with a full
16,384-entry memory, k = 32; and the Table 3 ablation without it), random weights (timings do not depend on
them). One 128³ z-scored volume goes through ``monai.inferers.sliding_window_inference`` with 128³ windows and
50 % overlap (one window: the paper's per-case time covers whole CTs, which take several), prompt-free, as the
pipeline's eval does. Each configuration runs in a fresh subprocess with ``THREADS`` intra-op thread(s): the time
is the best of ``REPEATS`` runs (the best, because the development machine is shared and other jobs only ever
add time; no separate warm-up, a 128³ pass takes a minute on this CPU); the
peak memory is the process's peak resident set size (``ru_maxrss``) during inference minus the resident size
before it (weights and memory buffers already loaded), plus the total.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys

REPEATS = 2
THREADS = 1  # on the shared 2-core machine, two contending intra-op threads were ~10× slower than one

CHILD = r"""
import json, resource, sys, time
import torch
torch.set_num_threads(THREADS)
from monai.inferers import sliding_window_inference
from medrun.models.memorizing import TotalCTSAM
from medrun.models.sam3d import Sam3dConfig

memory = sys.argv[1] == "1"
torch.manual_seed(0)
net = TotalCTSAM(Sam3dConfig(num_classes=104), memory=memory).eval()
if memory:  # a full memory, as after training
    net.memory_block.memory.add(torch.randn(16384, 8, 24), torch.randn(16384, 8, 24))
x = torch.randn(1, 1, 128, 128, 128)
rss = lambda: resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # MiB (Linux: KiB)
def current():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096 / 2**20
before = current()
times = []
with torch.no_grad():
    for i in range(REPEATS):
        t0 = time.perf_counter()
        out = sliding_window_inference(x, (128,) * 3, 1, net.semantic, overlap=0.5)
        times.append(time.perf_counter() - t0)
assert out.shape == (1, 105, 128, 128, 128)
print(json.dumps({"best": min(times), "slowest": max(times), "before_mib": before,
                  "peak_mib": rss(), "params": sum(p.numel() for p in net.parameters())}))
""".replace("REPEATS", str(REPEATS)).replace("THREADS", str(THREADS))


def _machine() -> str:
    import torch

    cpu = platform.processor() or platform.machine()
    return (f"{cpu}, {os.cpu_count()} cores, torch {torch.__version__} ({THREADS} intra-op thread), "
            f"Python {platform.python_version()}, no GPU used")


def main() -> None:
    rows = []
    for memory in (True, False):
        out = subprocess.run([sys.executable, "-c", CHILD, "1" if memory else "0"], capture_output=True, text=True,
                             check=True)
        r = json.loads(out.stdout.strip().splitlines()[-1])
        rows.append((memory, r))
    print("## totalct-sam: sliding-window inference per 128³ volume\n")
    print(f"Machine: {_machine()}. Shared with other jobs while measured.\n")
    print("| model | params | best s / volume | slowest s | peak RSS during inference (MiB) | peak RSS total (MiB) |")
    print("|---|---|---|---|---|---|")
    for memory, r in rows:
        name = "TotalCT-SAM (memory 16,384 × k 32)" if memory else "without memory (Table 3 ablation)"
        print(f"| {name} | {r['params']:,} | {r['best']:.2f} | {r['slowest']:.2f} | "
              f"{r['peak_mib'] - r['before_mib']:.0f} | {r['peak_mib']:.0f} |")
    print(f"\nBest of {REPEATS}; one 128³ window (50 % overlap), prompt-free, random weights, "
          "float32. Paper (8×A100, whole CTs): 5.45 s (Table 1) / 6.45 s (Table 3) with memory, 6.33 s without.")


if __name__ == "__main__":
    main()
