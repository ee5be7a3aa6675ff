"""Sliding-window inference on a 128³ two-modality volume: SM-SAFE (full size, card sm-safe.md) against MONAI's UNet
of similar size (the card's baseline U-Net: the same ``UNet`` on the raw channels) and AMF-Net, on the same data.

MONAI ``sliding_window_inference`` with the card's settings: roi 96³, overlap 0.5, Gaussian blending, one window per
batch (8 windows per volume). Prints a Markdown section (heading, machine, table). Run directly or through
``benchmarks/run.py``; ``BENCH_REPEATS`` (default 1) volumes per model, best time reported.
"""

from __future__ import annotations

import os
import platform
import time

import torch

SIZE = 128
ROI = (96, 96, 96)
REPEATS = int(os.environ.get("BENCH_REPEATS", "1"))


def seconds_per_volume(net, x) -> float:
    from monai.inferers import sliding_window_inference

    net.eval()
    times = []
    with torch.no_grad():
        net(torch.randn(1, x.shape[1], 32, 32, 32))  # warm-up (allocator, kernels)
        for _ in range(REPEATS):
            t0 = time.perf_counter()
            out = sliding_window_inference(x, ROI, 1, net, overlap=0.5, mode="gaussian")
            times.append(time.perf_counter() - t0)
    assert out.shape == (1, 3, SIZE, SIZE, SIZE)
    return min(times)


def main() -> None:
    import monai

    from medrun.models.fusion import SMSAFE

    threads = os.cpu_count() or 1
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    x = torch.randn(1, 2, SIZE, SIZE, SIZE)  # e.g. Task05 Prostate: T2 + ADC; 3 classes
    models = [
        ("SM-SAFE (stems + AMF + 3-layer ASE + U-Net)", SMSAFE(2, 3)),
        ("AMF-Net (stems + AMF + U-Net)", SMSAFE(2, 3, use_ase=False)),
        ("MONAI UNet on the raw channels (baseline)", SMSAFE(2, 3, use_amf=False, use_ase=False).unet),
    ]
    rows = []
    for name, net in models:
        params = sum(p.numel() for p in net.parameters())
        rows.append((name, params, seconds_per_volume(net, x)))
    base = rows[-1][2]
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"## SM-SAFE: sliding-window inference at {SIZE}³ against MONAI UNet\n")
    print(
        f"Machine: {platform.machine()}, {threads} CPU cores, {platform.system()}, Python {platform.python_version()}, "
        f"torch {torch.__version__} ({threads} threads), MONAI {monai.__version__}, no GPU. Load average at the end "
        f"{load:.1f}: the machine was shared with other jobs while measured. Input 1×2×{SIZE}³ float32, "
        f"3 classes; roi {ROI[0]}³, overlap 0.5, Gaussian blending, sw_batch_size 1 (8 windows); best of "
        f"{REPEATS} volume(s), wall-clock seconds.\n"
    )
    print("| model | parameters | s / volume | × U-Net |")
    print("|---|---:|---:|---:|")
    for name, params, secs in rows:
        print(f"| {name} | {params:,} | {secs:.1f} | {secs / base:.2f}× |")


if __name__ == "__main__":
    main()
