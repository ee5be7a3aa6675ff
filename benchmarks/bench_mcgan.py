"""MCGAN (mcgan card): synthesis slices/s of the full-size stage-2 generator against MONAI's Attention U-Net of the
same widths, one training step of each stage at the smoke size, and the cost of Eq. 11's KL.

- Synthesis: G3 (``models.mcgan.AttentionUNet``, 64…1024, 34.9 M parameters) and the nearest library baseline,
  ``monai.networks.nets.AttentionUnet(spatial_dims=2, channels=(64, …, 1024), strides=(2, 2, 2, 2))``, forward
  only, batch 1, on the same 256² slices (the paper's size): median slices/s over rounds with the models alternating.
- Training: seconds per step of the DA CycleGAN (ngf 16, 3 blocks, two generators and two PatchGANs) and of the
  I2I stage (Attention U-Net 16…256 + PatchGAN) at 64², batch 2, the fixture smoke settings.
- KL: ``metrics.synthesis.tissue_kl`` over one subject's worth of slices (40 × 256²).
"""

from __future__ import annotations

import os
import platform
import sys
import time
from statistics import median

import numpy as np
import torch
from _timing import best

from medrun.metrics.synthesis import tissue_kl, tissue_weights
from medrun.models.mcgan import AttentionUNet

ROUNDS = int(os.environ.get("BENCH_ROUNDS", "2"))


def monai_attention_unet():
    from monai.networks.nets import AttentionUnet

    return AttentionUnet(spatial_dims=2, in_channels=1, out_channels=1, channels=(64, 128, 256, 512, 1024),
                         strides=(2, 2, 2, 2))


@torch.no_grad()
def slices_per_s(net, x, n: int = 2) -> float:
    net.eval()
    net(x)
    t0 = time.perf_counter()
    for _ in range(n):
        net(x)
    return n * len(x) / (time.perf_counter() - t0)


def train_step_seconds() -> dict:
    import torch.nn.functional as F

    from medrun.models.cyclegan import PatchDiscriminator, ResnetGenerator

    x = torch.rand(2, 1, 64, 64) * 2 - 1
    g1, g2 = ResnetGenerator(1, 1, 16, 3), ResnetGenerator(1, 1, 16, 3)
    d1, d2 = PatchDiscriminator(1, 16), PatchDiscriminator(1, 16)
    opt = torch.optim.Adam([*g1.parameters(), *g2.parameters(), *d1.parameters(), *d2.parameters()], 2e-4)

    def da():
        opt.zero_grad()
        f, b = g1(x), g2(x)
        loss = ((d1(f) - 1) ** 2).mean() + ((d2(b) - 1) ** 2).mean() + 100 * (F.l1_loss(g2(f), x)
                                                                            + F.l1_loss(g1(b), x))
        loss = loss + (d1(f.detach()) ** 2).mean() + (d2(b.detach()) ** 2).mean()
        loss.backward()
        opt.step()

    g3, d3 = AttentionUNet(1, 1, (16, 32, 64, 128, 256)), PatchDiscriminator(2, 16)
    opt3 = torch.optim.Adam([*g3.parameters(), *d3.parameters()], 2e-4)

    def i2i():
        opt3.zero_grad()
        y = g3(x)
        loss = ((d3(torch.cat([x, y], 1)) - 1) ** 2).mean() + 100 * F.l1_loss(y, x)
        loss = loss + (d3(torch.cat([x, y.detach()], 1)) ** 2).mean()
        loss.backward()
        opt3.step()

    return {"DA (CycleGAN, ngf 16, 3 blocks)": best(da, 3, warmup=True),
            "I2I (Attention U-Net 16…256 + PatchGAN)": best(i2i, 3, warmup=True)}


def main() -> None:
    threads = int(os.environ.get("BENCH_THREADS", "1"))
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    x = torch.rand(1, 1, 256, 256) * 2 - 1
    nets = {"G3 Attention U-Net (medrun, 64…1024)": AttentionUNet(1, 1, (64, 128, 256, 512, 1024)),
            "MONAI AttentionUnet (64…1024)": monai_attention_unet()}
    results = {k: [] for k in nets}
    for _ in range(ROUNDS):
        for k, net in nets.items():
            results[k].append(slices_per_s(net, x))
    steps = train_step_seconds()
    rng = np.random.default_rng(0)
    vals = rng.random((40, 256, 256))
    tissue = rng.integers(0, 4, (40, 256, 256))
    by = {t: vals[tissue == i + 1] for i, t in enumerate(("csf", "gm", "wm"))}
    w = tissue_weights({t: len(v) for t, v in by.items()})
    kl_s = best(lambda: tissue_kl(by, by, w), 3)
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print("## mcgan: synthesis slices/s at 256² against MONAI's Attention U-Net (benchmarks/bench_mcgan.py)\n")
    print(f"Machine: {platform.machine()}, {os.cpu_count()} CPU cores, no GPU, torch {torch.__version__} ({threads} "
          f"thread{'s' if threads > 1 else ''}), Python {sys.version.split()[0]}; shared with other jobs while "
          f"measured (load average {load:.1f}). Forward only, batch 1, {ROUNDS} rounds with the models alternating; "
          "medians.\n")
    print("| model | params | slices/s at 256² | vs MONAI |")
    print("|---|---:|---:|---:|")
    ref = median(results["MONAI AttentionUnet (64…1024)"])
    for k, net in nets.items():
        n = sum(p.numel() for p in net.parameters())
        print(f"| {k} | {n:,} | {median(results[k]):.2f} | {median(results[k]) / ref:.2f}× |")
    print("\n| training step at 64², batch 2 (fixture smoke settings) | seconds (best of 3) |")
    print("|---|---:|")
    for k, v in steps.items():
        print(f"| {k} | {v:.3f} |")
    print(f"\nEq. 11 KL over 40 slices of 256² (three tissues, 256 bins): {kl_s * 1000:.0f} ms.")


if __name__ == "__main__":
    main()
