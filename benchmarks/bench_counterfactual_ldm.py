"""Counterfactual generation throughput (counterfactual-ldm card, issue 16 "Performance"): UNet calls/s and
trajectory images/s of CDCT's guided sampler at the fixture size, against the nearest baseline measured in the same
run — plain unguided PNDM sampling over the same tail of the grid with the same models (no inner clean-estimate
runs, no decoder/classifier gradient) — and the projected cost of the card's full trajectory set.

Models: the card's tiny diffusers configs at random init (AutoencoderKL (32, 64, 64), UNet (32, 64), cross-attention
32) at 32 px as in the fixture smoke, f_φ a ResNet18 at 64 px; 7 targets batched per source, T guided steps of a
10-step PNDM grid. Timing does not depend on the weights.
"""

from __future__ import annotations

import os
import platform
import sys
import time
from types import SimpleNamespace

import torch

from medrun.pipelines.counterfactual_ldm import ldm as L
from medrun.pipelines.counterfactual_ldm.generate import Counterfactuals
from medrun.pipelines.counterfactual_ldm.pipeline import Classifier

SIZE, TARGETS, SOURCES = 32, 7, 3


class _P:
    m = SimpleNamespace(finetune_ldm=SimpleNamespace(sd_path=None))
    ctx = SimpleNamespace(predictor=lambda: SimpleNamespace(device=torch.device("cpu")))


def unguided(model, x, steps: int, cond) -> None:
    sched = L.scheduler("pndm")
    sched.set_timesteps(10)
    tail = [int(t) for t in sched.timesteps[-steps:]]
    with torch.no_grad():
        z = model.vae.encode(x * 2 - 1).latent_dist.mode() * L.SCALE
        z = sched.add_noise(z, torch.randn_like(z), torch.tensor([tail[0]])).repeat(TARGETS, 1, 1, 1)
        for t in [tail[0], tail[1], *tail[1:]]:
            z = sched.step(model.unet(z, t, encoder_hidden_states=cond).sample, t, z).prev_sample
        model.vae.decode(z / L.SCALE)


def main() -> None:
    torch.set_num_threads(1)
    torch.manual_seed(0)
    model = L.tiny(SIZE).eval().requires_grad_(False)
    clf = Classifier("resnet18", 64).eval().requires_grad_(False)
    rows = []
    for steps in (3, 10):
        cfg = SimpleNamespace(num_inference_steps=max(10, steps + 1) if steps < 10 else 20, guided_steps=steps,
                              conditional=True, scale_by_sigma=False)
        gen = Counterfactuals(_P(), model, clf, cfg)
        xs = [torch.rand(1, 3, SIZE, SIZE) for _ in range(SOURCES)]
        gen.run(xs[0], list(range(1, 8)), 4.0, 0)  # warm-up
        gen.unet_calls = 0
        t0 = time.perf_counter()
        for i, x in enumerate(xs):
            gen.run(x, list(range(1, 8)), 4.0, i)
        secs = time.perf_counter() - t0
        calls = gen.unet_calls * TARGETS  # per image: each batched call serves 7 targets
        images = SOURCES * (1 + TARGETS * (steps + 1))
        cond = model.encode_text(gen.prompts(list(range(1, 8))))
        t1 = time.perf_counter()
        for x in xs:
            unguided(model, x, steps, cond)
        base = time.perf_counter() - t1
        base_calls = SOURCES * (steps + 1) * TARGETS
        rows.append((steps, calls / secs, images / secs, secs / (SOURCES * TARGETS), base_calls / base,
                     base / (SOURCES * TARGETS), gen.unet_calls // SOURCES))
    print(f"Machine: {platform.machine()}, {os.cpu_count()} CPU cores, torch {torch.__version__} (1 thread), "
          f"Python {sys.version.split()[0]}\n")
    print("| T | CDCT UNet calls/s | CDCT trajectory images/s | CDCT s/counterfactual | unguided PNDM UNet calls/s "
          "| unguided s/sample | batched UNet calls per source |")
    print("|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r[0]} | {r[1]:.1f} | {r[2]:.2f} | {r[3]:.3f} | {r[4]:.1f} | {r[5]:.3f} | {r[6]} |")
    t10 = rows[-1]
    full = 23_868 * 7
    print(f"\nFull set (card): {full:,} counterfactuals × {t10[6]} UNet calls = {full * t10[6]:,} UNet calls "
          "at T = 10; "
          f"at this fixture-size rate {full * t10[3] / 3600:.1f} CPU-hours; at SD 2.1 / 512 px each call is ~1000× "
          "the tiny UNet's work, i.e. GPU-days, as the card says.")


if __name__ == "__main__":
    main()
