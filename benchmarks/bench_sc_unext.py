"""Training throughput of UNeXt-small and SC-UNeXt (sc-unext card) against MONAI's UNet of similar size.

Issue 5: "benchmark training images/s (2D at 256²) for each model against MONAI's UNet of similar size on the same
data, side by side". All models see the same batches: the ISIC 2018 fixture (generated into a temp folder) read
at 256×256, batch 8, ImageNet-normalised, the sc-unext joint loss (BCE + soft Dice + edge term), Adam. One step is
forward + backward + optimiser step. Models alternate for 3 rounds; the table gives the median images/s (and
forward-only inference images/s, batch 8, no_grad).

The comparison model is ``monai.networks.nets.UNet(spatial_dims=2, channels=(8, 16, 32, 64, 128),
strides=(2, 2, 2, 2), num_res_units=1)``: 210,423 parameters, the MONAI UNet nearest to UNeXt-small's 253,561.
"""

from __future__ import annotations

import os
import platform
import sys
import tempfile
import time
from pathlib import Path
from statistics import median

import numpy as np
import torch

from medrun.datasets import isic2018
from medrun.models.unext import sc_unext, unext_small
from medrun.pipelines.sc_unext.pipeline import joint_loss, normalise

SIZE, BATCH, STEPS, ROUNDS = 256, 8, 6, 3


def monai_unet():
    from monai.networks.nets import UNet

    return UNet(spatial_dims=2, in_channels=3, out_channels=1, channels=(8, 16, 32, 64, 128), strides=(2, 2, 2, 2),
                num_res_units=1)


MODELS = {
    "UNeXt-small (medrun)": unext_small,
    "SC-UNeXt (medrun)": sc_unext,
    "MONAI UNet (8…128, 1 res unit)": monai_unet,
}


def batches(n: int):
    with tempfile.TemporaryDirectory() as tmp:
        root = isic2018.fixture(Path(tmp), 0, n=n * BATCH)
        pairs = [isic2018.load(c, SIZE) for c in isic2018.read(root)]
    x = normalise(np.stack([p[0] for p in pairs]))
    y = torch.from_numpy(np.stack([p[1] for p in pairs]).astype(np.float32))[:, None]
    return [(x[i:i + BATCH], y[i:i + BATCH]) for i in range(0, len(x), BATCH)]


def train_ips(net, data) -> float:
    opt = torch.optim.Adam(net.parameters(), lr=1e-4)
    net.train()
    for x, y in data[:1]:  # warm-up step
        opt.zero_grad()
        joint_loss(net(x), y)[0].backward()
        opt.step()
    t0 = time.perf_counter()
    for x, y in data:
        opt.zero_grad()
        joint_loss(net(x), y)[0].backward()
        opt.step()
    return len(data) * BATCH / (time.perf_counter() - t0)


@torch.no_grad()
def infer_ips(net, data) -> float:
    net.eval()
    net(data[0][0])
    t0 = time.perf_counter()
    for x, _ in data:
        net(x)
    return len(data) * BATCH / (time.perf_counter() - t0)


def main() -> None:
    threads = int(os.environ.get("BENCH_THREADS", "1"))
    torch.set_num_threads(threads)
    data = batches(STEPS)
    nets = {}
    for name, make in MODELS.items():
        torch.manual_seed(0)
        nets[name] = make()
    results = {name: ([], []) for name in MODELS}
    for _ in range(ROUNDS):
        for name, net in nets.items():
            results[name][0].append(train_ips(net, data))
            results[name][1].append(infer_ips(net, data))
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print("## SC-UNeXt: training images/s at 256² against MONAI's UNet (benchmarks/bench_sc_unext.py)\n")
    print(f"Machine: {platform.machine()}, {os.cpu_count()} CPU cores, no GPU, torch {torch.__version__} "
          f"({threads} thread{'s' if threads > 1 else ''}), Python {sys.version.split()[0]}; shared with other jobs "
          f"while measured (load average {load:.1f}). Batch {BATCH}, {STEPS} steps a round after one warm-up step, "
          f"{ROUNDS} rounds with the models alternating; medians. Same batches (ISIC 2018 fixture at 256²) and the "
          "same loss for every model.\n")
    print("| model | params | train images/s | inference images/s | train vs MONAI UNet |")
    print("|---|---:|---:|---:|---:|")
    ref = median(results[list(MODELS)[-1]][0])
    for name, net in nets.items():
        tr, inf = median(results[name][0]), median(results[name][1])
        n = sum(p.numel() for p in net.parameters())
        print(f"| {name} | {n:,} | {tr:.1f} | {inf:.1f} | {tr / ref:.2f}× |")


if __name__ == "__main__":
    main()
