"""CMU-Net training throughput at 256² against MONAI's UNet of similar size, and the vectorised ("ssd") selective
scan against the sequential loop at L = 4096 (cmu-net.md, issue 5 "Performance").

Standalone: ``python benchmarks/bench_cmu_net.py`` prints a Markdown section (heading, machine, tables).

Training: one SGD step (forward, cmu-net's Dice + CE loss with deep supervision where the model has heads,
backward, update) on the same random batch of ``BATCH`` 1×256×256 images with random binary masks, for CMU-Net at
full size (5 stages 32–512, d_state 16, ``scan="ssd"``, T = 64), its plain U-Net variant (no Mamba, no CBAM: the
same convolutions) and MONAI's ``UNet`` with the same widths and ``num_res_units=3`` (9.6 M parameters against
CMU-Net's 10.1 M). Images/s = BATCH / (median seconds per step over ``STEPS`` steps after one warm-up); batch 1 and a
single timed step because at 256² the level-1 Mamba runs over 65,536 tokens and one step takes minutes on the
2-core CPU.

Scan: the shapes of ``benchmarks/bench_selective_scan.py`` (batch 1, E = 64, N = 16, L = 4096), whose table has
the chunked scan; here ``selective_scan_ssd`` at T = 64 against the same sequential loop, reusing that script's
inputs and timer.
"""

from __future__ import annotations

import os
import platform
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))

BATCH, SIZE, STEPS = (
    1,
    256,
    1,
)  # one image, one timed step: a CMU-Net step at 256² takes minutes on the shared 2-core CPU


def _step_time(net, loss_fn) -> tuple[float, int]:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(BATCH, 1, SIZE, SIZE, generator=g)
    y = (torch.rand(BATCH, 1, SIZE, SIZE, generator=g) > 0.8).long()
    opt = torch.optim.SGD(net.parameters(), lr=0.01, momentum=0.99, nesterov=True)
    net.train()
    times = []
    for i in range(STEPS + 1):
        t0 = time.perf_counter()
        loss = loss_fn(net(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        if i:
            times.append(time.perf_counter() - t0)
    return statistics.median(times), sum(p.numel() for p in net.parameters())


def _machine() -> str:
    cpu = platform.processor() or platform.machine()
    load = f", load average {os.getloadavg()[0]:.1f} at start" if hasattr(os, "getloadavg") else ""
    return (f"{cpu}, {os.cpu_count()} cores{load}, torch {torch.__version__} ({torch.get_num_threads()} threads), "
            f"Python {platform.python_version()}, no GPU used")


def main() -> None:
    from monai.networks.nets import UNet

    from medrun.models.cmunet import CMUNet
    from medrun.pipelines.cmu_net.pipeline import DeepSupervisionLoss

    loss = DeepSupervisionLoss()
    print("## CMU-Net: training throughput at 256² and the vectorised scan (benchmarks/bench_cmu_net.py)\n")
    print(f"Machine: {_machine()}.\n")
    print(f"One SGD step on a batch of {BATCH} × 1×{SIZE}×{SIZE}; median of {STEPS} steps after a warm-up.\n")
    print("| model | parameters | s/step | images/s |")
    print("|---|---:|---:|---:|")
    models = [("CMU-Net (scan ssd, T = 64)", lambda: CMUNet(scan="ssd", chunk_size=64)),
              ("CMU-Net plain U-Net variant (no Mamba, no CBAM)", lambda: CMUNet(variant="unet")),
              ("MONAI UNet (32–512, num_res_units 3)",
               lambda: UNet(2, 1, 2, (32, 64, 128, 256, 512), (2, 2, 2, 2), num_res_units=3))]
    for name, make in models:
        torch.manual_seed(0)
        secs, params = _step_time(make(), loss)
        print(f"| {name} | {params:,} | {secs:.2f} | {BATCH / secs:.3f} |", flush=True)

    from bench_selective_scan import CHANNELS, LENGTH, STATE, _time

    from medrun.models.selective_scan import selective_scan_sequential, selective_scan_ssd

    print(f"\nSelective scan, batch 1, E = {CHANNELS}, N = {STATE}, L = {LENGTH}, float32, best of 3 (seconds):\n")
    print("| scan | fwd | fwd+bwd |")
    print("|---|---:|---:|")
    for name, fn in (("ssd, T = 64", lambda **kw: selective_scan_ssd(**kw, chunk_size=64)),
                     ("sequential loop", selective_scan_sequential)):
        print(f"| {name} | {_time(fn, backward=False):.3f} | {_time(fn, backward=True):.3f} |", flush=True)


if __name__ == "__main__":
    main()
