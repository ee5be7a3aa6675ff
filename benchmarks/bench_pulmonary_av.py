"""pulmonary-av: sliding-window inference per 128³ volume for EA-U-Net and the prior-net against MONAI's UNet of
similar size, the peak memory of one EA-U-Net training step at the manifest's patch, and the classical stages
(Stage 1a prior, ASE) per fixture case (pulmonary-av.md, issue 17 "Performance").

Standalone: ``python benchmarks/bench_pulmonary_av.py [--quick]`` prints a Markdown section (heading, machine, table).
Networks with random weights (timings do not depend on them): EA-U-Net at the card's widths (32-64-128-256, scalar
gates; CT + prior, 3 classes), the prior-net (MONAI AttentionUnet 32-64-128-256, 1 output) and MONAI's UNet
(channels 32-64-128-256, strides 2-2-2, 2 residual units, 2 inputs, 3 classes). Inference: one 128³ volume through
``monai.inferers.sliding_window_inference`` with windows of 128×128×76 (the card's 176×176×76 clipped to the volume
in-plane; MONAI's UNet 128×128×80, as it needs multiples of 8; the prior-net pads 76 to 80 itself), overlap 0.25,
Gaussian blending (2 windows per volume). ``--models=a,b`` runs some of them only. Training step: forward +
backward + Adam on a batch of 2 patches of 176×176×76 (the manifest's; ``--quick``: 96×96×48).
Each configuration runs in a fresh subprocess with one thread;
memory is the peak resident set size minus the resident size before the measured work.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

CHILD = r"""
import json, resource, sys, time
import torch
torch.set_num_threads(1)
which, task, patch = sys.argv[1], sys.argv[2], tuple(int(v) for v in sys.argv[3].split(","))
torch.manual_seed(0)
cin, cout = 2, 3
if which == "monai-unet":
    from monai.networks.nets import UNet
    net = UNet(3, 2, 3, channels=(32, 64, 128, 256), strides=(2, 2, 2), num_res_units=2)
elif which == "prior-net":
    from medrun.pipelines.pulmonary_av.pipeline import PriorNet
    net, cin, cout = PriorNet((32, 64, 128, 256)), 1, 1
else:
    from medrun.models.ea_unet import EAUNet
    net = EAUNet(1, 1, 3, (32, 64, 128, 256))
def current():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096 / 2**20
rss = lambda: resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
out = {"params": sum(p.numel() for p in net.parameters())}
if task == "infer":
    from monai.inferers import sliding_window_inference
    net.eval()
    x = torch.rand(1, cin, 128, 128, 128)
    before = current()
    t0 = time.perf_counter()
    with torch.no_grad():
        roi = (128, 128, 80) if which == "monai-unet" else (128, 128, 76)  # MONAI's UNet needs multiples of 8
        y = sliding_window_inference(x, roi, 1, net, overlap=0.25, mode="gaussian")
    out["secs"] = time.perf_counter() - t0
    assert y.shape == (1, cout, 128, 128, 128)
else:
    net.train()
    opt = torch.optim.Adam(net.parameters(), 1e-4)
    x = torch.rand(2, cin, *patch)
    before = current()
    t0 = time.perf_counter()
    loss = net(x).float().mean()
    opt.zero_grad()
    loss.backward()
    opt.step()
    out["secs"] = time.perf_counter() - t0
out.update(peak_delta_mib=rss() - before, peak_mib=rss())
print(json.dumps(out))
"""

MODELS = {"ea-unet": "EA-U-Net 32-256 (CT + prior)", "prior-net": "prior-net: MONAI AttentionUnet 32-256",
          "monai-unet": "MONAI UNet 32-256, 2 res units"}


def child(which: str, task: str, patch: str, timeout: int) -> dict:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    try:
        r = subprocess.run([sys.executable, "-c", CHILD, which, task, patch], capture_output=True, text=True,
                           env=env, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"error": f"over {timeout} s"}
    if r.returncode:
        return {"error": (r.stderr.strip().splitlines() or ["failed"])[-1][:80]}
    return json.loads(r.stdout.strip().splitlines()[-1])


def classical() -> dict:
    """Stage 1a (marching cubes and threshold) and ASE on the fixture's gap case, seconds per case."""
    import tempfile

    import numpy as np

    from medrun.datasets import pulmonary_av as D
    from medrun.pipelines.pulmonary_av import geometry as G

    with tempfile.TemporaryDirectory() as tmp:
        root = D.fixture(Path(tmp), 0, n=1)
        v = D.load([c for c in D.read(root) if c.id == D.GAP_CASE][0], 1024)
    out = {}
    t0 = time.perf_counter()
    prior = G.prior_in(v.hu, v.lung, v.spacing)
    out["prior_mesh"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    G.prior_in(v.hu, v.lung, v.spacing, fast_threshold=True)
    out["prior_threshold"] = time.perf_counter() - t0
    seg = np.where(v.hu < -100, 0, v.label).astype(np.uint8)
    t0 = time.perf_counter()
    G.ase(seg, prior | ((v.label > 0) & ~v.lung), v.spacing)
    out["ase"] = time.perf_counter() - t0
    return out


def main(argv=None) -> str:
    quick = "--quick" in (argv or sys.argv[1:])
    patch = "96,96,48" if quick else "176,176,76"
    rows = ["| model | parameters | s / 128³ volume | training step (batch 2, " + patch.replace(",", "×")
            + "): s | peak MiB |", "|---|---|---|---|---|"]
    only = next((a.split("=", 1)[1].split(",") for a in (argv or sys.argv[1:]) if a.startswith("--models=")), None)
    for which, label in MODELS.items():
        if only and which not in only:
            continue
        inf = child(which, "infer", patch, 900)
        tr = child(which, "train", patch, 900) if which != "prior-net" else {}
        cells = f"{inf['params']:,} | {inf['secs']:.1f}" if "secs" in inf else f"– | {inf['error']}"
        cells += (f" | {tr['secs']:.1f} | {tr['peak_delta_mib']:.0f}" if "secs" in tr
                  else f" | {tr.get('error', '–')} | –")
        rows.append(f"| {label} | {cells} |")
    c = classical()
    import torch

    lines = [f"Machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, torch "
             f"{torch.__version__}, one thread per run.", "", *rows, "",
             f"Classical stages on one 64×64×40 fixture case: Stage 1a marching cubes {c['prior_mesh']:.2f} s, "
             f"threshold {c['prior_threshold']:.2f} s; ASE {c['ase']:.2f} s."]
    text = "\n".join(lines)
    print(text)
    return text


if __name__ == "__main__":
    main()
