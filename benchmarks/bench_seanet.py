"""Denoising cost of one 512² CT slice: SEANet against RED-CNN on the same input (seanet card, issue 16).

Issue 16: "seanet denoising s/slice at 512² against RED-CNN on the same input". All networks are at the paper's
size with random weights (the cost does not depend on the weights) and denoise the same simulated 512² slice
(a Shepp-Logan phantom through the fixture's CT simulator at quarter dose), in normalised units:

- SEANet and CTformer take 64² patches (a fixed token grid), so a slice is tiled by MONAI's sliding window, as the
  pipeline's eval and denoise do: roi 64, overlap 0.5 (225 windows), Gaussian blending, 16 windows per call.
- RED-CNN and SEANet² are fully convolutional: timed on the whole slice in one call (RED-CNN's own test protocol;
  tiling it the same way would cost about 3.5 times its whole-slice time, the windows overlapping by half).

Forward only, no_grad, batch 1 slice; every network is warmed up on one 64² patch, then timed ``REPEATS`` times
(best kept). ``BENCH_THREADS`` sets torch's threads (default 1).
"""

from __future__ import annotations

import os
import platform
import sys

import numpy as np
import torch
from _timing import best

SIZE, REPEATS = 512, 1


def slice_512() -> torch.Tensor:
    from medrun.datasets import mayo

    rng = np.random.default_rng(0)
    hu = mayo.simulate(mayo.phantom(rng, SIZE), rng, 2.5e5, views=180, pixel_mm=0.7)
    return torch.from_numpy(mayo.normalise(np.maximum(hu, -1024)).astype(np.float32))[None, None]


def main() -> None:
    from monai.inferers import sliding_window_inference

    from medrun.models import seanet as S

    threads = int(os.environ.get("BENCH_THREADS", "1"))
    torch.set_num_threads(threads)
    x = slice_512()
    torch.manual_seed(0)
    nets = {"SEANet (E 64, depth 12, 8 heads)": S.seanet(), "CTformer (same backbone, no SRU)": S.ctformer(),
            "RED-CNN (96 channels)": S.redcnn(), "SEANet² (RED-CNN + SRU)": S.seanet2()}
    rows = []
    with torch.no_grad():
        for name, net in nets.items():
            net.eval()

            def tiled(net=net):
                return sliding_window_inference(x, (64, 64), 16, net, overlap=0.5, mode="gaussian")

            net(x[..., :64, :64])  # warm-up
            fn = tiled if "RED-CNN" not in name else (lambda net=net: net(x))
            mode = "sliding window 64², overlap 0.5" if "RED-CNN" not in name else "whole slice"
            rows.append((name, mode, sum(p.numel() for p in net.parameters()), best(fn, REPEATS)))
            print(f"{name}: {rows[-1][-1]:.2f} s", file=sys.stderr, flush=True)
    ref = next(s for n, m, _, s in rows if n.startswith("RED-CNN") and m == "whole slice")
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print("## SEANet: denoising seconds per 512² slice against RED-CNN (benchmarks/bench_seanet.py)\n")
    print(f"Machine: {platform.machine()}, {os.cpu_count()} CPU cores, no GPU, torch {torch.__version__} "
          f"({threads} thread{'s' if threads > 1 else ''}), Python {sys.version.split()[0]}; shared with other jobs "
          f"while measured (load average {load:.1f}). Paper-size networks, random weights, one simulated 512² slice, "
          f"forward only; best of {REPEATS} timed call(s) after a 64² warm-up.\n")
    print("| network | input | params | s / slice | × RED-CNN whole slice |")
    print("|---|---|---:|---:|---:|")
    for name, mode, n, secs in rows:
        print(f"| {name} | {mode} | {n:,} | {secs:.2f} | {secs / ref:.2f}× |")


if __name__ == "__main__":
    main()
