"""ADxPro (card ad-progression.md) on CPU: training steps at the fixture's size with and without the bucketed
encoder/decoder batches, and the full-size (128×160×128) model per subject.

1. Fixture size (16×20×16, latent 16, hidden 32, batch 2 subjects × 6 visits, ~70 % MRI / ~50 % PET present, a new
   random presence pattern every step): seconds per training step with ``ADxPro.BUCKET = 1`` (the default: exactly
   the present volumes, so a new batch shape almost every step, for which oneDNN builds new 3D kernels) against
   ``BUCKET = 4`` (the encoder/decoder batch padded to a multiple of 4: fewer shapes, more compute).
2. Full size (the card's 128×160×128, latent 64, hidden 128; 12,799,411 parameters): seconds to forecast one subject
   (6 visits, 6 MRI + 3 PET present; encoders + PoE + LSTM, no decoding) and to decode one missing volume (what
   ``impute`` does per file).

Prints a Markdown section. ``BENCH_STEPS`` (default 12) training steps per variant.
"""

from __future__ import annotations

import os
import platform
import time

import torch

STEPS = int(os.environ.get("BENCH_STEPS", "12"))


def batch(B, shape, g, latent=16):
    T = 6
    mri = (torch.rand(B, T, generator=g) < 0.7).float()
    pet = (torch.rand(B, T, generator=g) < 0.5).float()
    return dict(images=torch.rand(B, T, 2, *shape, generator=g), img_mask=torch.stack([mri, pet], -1),
                x=torch.randn(B, T, 13, generator=g), x_mask=(torch.rand(B, T, 13, generator=g) > 0.2).float(),
                dx=torch.randint(0, 3, (B, T), generator=g), dx_in=torch.zeros(B, T),
                times=torch.arange(T, dtype=torch.float32).expand(B, T).contiguous(), fill=torch.zeros(16))


def train_steps(bucket: int) -> float:
    from medrun.models.adxpro import ADxPro

    torch.manual_seed(0)
    net = ADxPro((16, 20, 16), latent=16, hidden=32)
    net.BUCKET = bucket
    opt = torch.optim.Adam(net.parameters(), 3e-3)
    g = torch.Generator().manual_seed(1)
    t0 = time.perf_counter()
    for _ in range(STEPS):
        b = batch(2, (16, 20, 16), g)
        out = net(b["images"], b["img_mask"], b["x"], b["x_mask"], b["dx"], b["dx_in"], b["times"], b["fill"],
                  sample=True)
        loss = net.losses(out, b)["loss"]
        opt.zero_grad()
        loss.backward()
        opt.step()
    return (time.perf_counter() - t0) / STEPS


def full_size() -> tuple[int, float, float]:
    from medrun.models.adxpro import ADxPro

    torch.manual_seed(0)
    net = ADxPro().eval()
    params = sum(p.numel() for p in net.parameters())
    g = torch.Generator().manual_seed(2)
    shape = (128, 160, 128)
    mask = torch.zeros(1, 6, 2)
    mask[0, :, 0] = 1
    mask[0, ::2, 1] = 1
    images = torch.rand(1, 6, 2, *shape, generator=g)
    with torch.no_grad():
        t0 = time.perf_counter()
        net(images, mask, torch.randn(1, 6, 13), torch.ones(1, 6, 13), torch.zeros(1, 6, dtype=torch.long),
            torch.zeros(1, 6), torch.arange(6.0)[None], torch.zeros(16))
        forecast = time.perf_counter() - t0
        t0 = time.perf_counter()
        vol = net.decode(torch.randn(1, 64), 1)
        decode = time.perf_counter() - t0
    assert vol.shape == (1, *shape)
    return params, forecast, decode


def fresh(bucket: int) -> float:
    """``train_steps`` in a new process: oneDNN's kernel cache is per process, so variants must not share one."""
    import subprocess
    import sys

    out = subprocess.run([sys.executable, __file__, "--steps", str(bucket)], capture_output=True, text=True, check=True)
    return float(out.stdout.strip().splitlines()[-1])


def main() -> None:
    threads = torch.get_num_threads()
    exact, bucketed = fresh(1), fresh(4)
    params, forecast, decode = full_size()
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print("## ad-progression: ADxPro training steps and full-size inference on CPU\n")
    print(f"Machine: {platform.machine()}, {os.cpu_count()} CPU cores, no GPU, torch {torch.__version__} ({threads} "
          f"threads). Load average at the end {load:.1f} (shared machine).\n")
    print("| what | seconds |")
    print("|---|---|")
    print(f"| fixture-size training step, batch 2 subjects, exact batches of present volumes (default) | {exact:.3f} |")
    print(f"| the same, encoder/decoder batches padded to ×4 (`ADxPro.BUCKET = 4`, fewer shapes) | {bucketed:.3f} |")
    print(f"| full size ({params:,} parameters): forecast one subject, 6 visits, 9 volumes | {forecast:.2f} |")
    print(f"| full size: decode one missing 128×160×128 volume (impute) | {decode:.2f} |")
    print(f"\nMean over {STEPS} steps each (each variant in a fresh process), a new random presence pattern per step; "
          "the steps include oneDNN's kernel builds for every new batch shape, which bucketing would save.")


if __name__ == "__main__":
    import sys

    if len(sys.argv) == 3 and sys.argv[1] == "--steps":
        print(train_steps(int(sys.argv[2])))
    else:
        main()
