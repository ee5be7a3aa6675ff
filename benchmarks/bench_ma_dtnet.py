"""Training throughput of MA-DTNet (images/s at 256², batch 8, forward + backward + Adam step) against MONAI's
UNet of similar size on the same data, side by side; also MA-DTNet without its C-SMA blocks, to show what the
morphological attention costs.

MONAI UNet: ``UNet(2, 3, 1, channels=(64, 128, 256, 512, 1024), strides=(2, 2, 2, 2), num_res_units=2)``,
25.97 M parameters against MA-DTNet's 22.79 M. Both get the same random 256² batches; the loss is the same
Dice + BCE on the segmentation output (MA-DTNet also trains its classifier, as in the pipeline).
"""

from __future__ import annotations

import os
import platform
import statistics
import sys
import time

import torch
import torch.nn.functional as F

STEPS = int(os.environ.get("BENCH_STEPS", "3"))
BATCH = 8
SIZE = 256


def _batches(n: int):
    g = torch.Generator().manual_seed(0)
    return [
        (
            torch.rand(BATCH, 3, SIZE, SIZE, generator=g),
            (torch.rand(BATCH, 1, SIZE, SIZE, generator=g) > 0.7).float(),
            torch.randint(0, 2, (BATCH,), generator=g).float(),
        )
        for _ in range(n)
    ]


def _throughput(net, dual: bool, batches) -> float:
    from monai.losses import DiceCELoss

    loss_fn = DiceCELoss(sigmoid=True)
    opt = torch.optim.Adam(net.parameters(), lr=1e-4)
    net.train()

    def step(x, y, label):
        opt.zero_grad()
        if dual:
            seg, cls = net(x)
            loss = 0.8 * loss_fn(seg, y) + 0.2 * F.binary_cross_entropy_with_logits(cls, label)
        else:
            loss = loss_fn(net(x), y)
        loss.backward()
        opt.step()

    step(*batches[0])  # warm-up
    times = []
    for b in batches[1:]:
        t0 = time.perf_counter()
        step(*b)
        times.append(time.perf_counter() - t0)
    return BATCH / statistics.median(times)


def main() -> None:
    from monai.networks.nets import UNet

    from medrun.models.madtnet import DualTaskNet

    torch.manual_seed(0)
    batches = _batches(STEPS + 1)
    nets = [
        ("MA-DTNet (ResNet34 + C-SMA, ours)", DualTaskNet(), True),
        ("MA-DTNet without C-SMA (UNet-R34 + classifier)", DualTaskNet(skip_attention="none"), True),
        (
            "MONAI UNet (64…1024, 2 res units)",
            UNet(2, 3, 1, (64, 128, 256, 512, 1024), (2, 2, 2, 2), num_res_units=2),
            False,
        ),
    ]
    print("## MA-DTNet training throughput at 256² (benchmarks/bench_ma_dtnet.py)\n")
    print(f"Machine: {platform.machine()}, {os.cpu_count()} CPU cores, no GPU, torch {torch.__version__} "
          f"({torch.get_num_threads()} threads), Python {platform.python_version()}. Batch {BATCH}, {SIZE}², "
          f"forward + backward + Adam; median of {STEPS} steps after one warm-up step.\n")
    print("| model | params | images/s | s/step |")
    print("|---|---:|---:|---:|")
    for name, net, dual in nets:
        ips = _throughput(net, dual, batches)
        params = sum(p.numel() for p in net.parameters())
        print(f"| {name} | {params / 1e6:.2f} M | {ips:.2f} | {BATCH / ips:.2f} |", flush=True)


if __name__ == "__main__":
    sys.exit(main())
