"""transnet-oct: inference seconds per 5-B-scan stack at the paper's 256², against MONAI's 2D UNet of similar size,
the baselines, peak memory of one training step at the manifest's batch (8 × 9 × 256²), and Algorithm 1's cost per
stack (transnet-oct.md, issue 17 "Performance").

Standalone: ``python benchmarks/bench_transnet_oct.py`` prints a Markdown section (heading, machine, table). The
network is 2.5D (a 9-channel stack of B-scans in, a 12 × 5 × 256² label volume out), so a "volume" is one stack and
needs one forward pass, no sliding window. Models with random weights (timings do not depend on them): TransNetOCT
(D 512, M 4), the UNet baseline (MONAI BasicUNet + 3D head), the FPN baseline (ResNet-50 + MONAI FPN + 3D head), and
MONAI's ``UNet`` (2D, channels 64-128-256-512-1024, strides 2, 2 residual units, 60 output channels) as the
"MONAI UNet of similar size". Each configuration runs in a fresh subprocess with one intra-op thread; memory is the
peak resident set size during the work minus the resident size before it.
"""

from __future__ import annotations

from _timing import machine, run_child

THREADS = 1
BATCH = 8

CHILD = r"""
import json, resource, sys, time
import numpy as np
import torch
torch.set_num_threads(THREADS)
which, task = sys.argv[1], sys.argv[2]
torch.manual_seed(0)
rss = lambda: resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
def current():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096 / 2**20
if task == "propagate":
    from medrun.pipelines.transnet_oct.propagate import stack_priors
    from medrun.datasets.oct_layers import synth_volume
    img, lab = synth_volume(np.random.default_rng(0), 5, 256, 2, True)
    t0 = time.perf_counter()
    stack_priors(img.astype(np.float32) / 255, lab[2], 0.04, 11)
    print(json.dumps({"best": time.perf_counter() - t0, "params": 0, "peak_delta_mib": 0}))
    sys.exit()
from medrun.models import transnet_oct as t
if which == "transnetoct":
    net = t.TransNetOCT()
elif which == "unet-baseline":
    net = t.UNet25D(9)
elif which == "fpn-baseline":
    net = t.FPN25D(9)
else:
    from monai.networks.nets import UNet
    body = UNet(2, 9, 60, channels=(64, 128, 256, 512, 1024), strides=(2, 2, 2, 2), num_res_units=2)
    net = torch.nn.Sequential(body, t.Head3D(12, 12, 5))
out = {"params": sum(p.numel() for p in net.parameters())}
if task == "infer":
    net.eval()
    x = torch.rand(1, 9, 256, 256)
    before = current()
    with torch.no_grad():
        net(x)
        t0 = time.perf_counter()
        y = net(x)
        best = time.perf_counter() - t0
    assert y.shape == (1, 12, 5, 256, 256)
else:
    net.train()
    opt = torch.optim.AdamW(net.parameters(), 1e-4)
    x, y = torch.rand(BATCH, 9, 256, 256), torch.randint(0, 12, (BATCH, 5, 256, 256))
    before = current()
    t0 = time.perf_counter()
    loss = torch.nn.functional.cross_entropy(net(x), y)
    opt.zero_grad()
    loss.backward()
    opt.step()
    best = time.perf_counter() - t0
out.update(best=best, peak_delta_mib=rss() - before)
print(json.dumps(out))
""".replace("THREADS", str(THREADS)).replace("BATCH", str(BATCH))

MODELS = {"transnetoct": "TransNetOCT (ResNet-50, D 512, M 4)",
          "fpn-baseline": "FPN baseline (ResNet-50 + MONAI FPN)",
          "unet-baseline": "UNet baseline (MONAI BasicUNet 32…256)",
          "monai-unet": "MONAI UNet 2D 64…1024, 2 res units"}


def _run(which: str, task: str) -> dict:
    return run_child(CHILD, [which, task], THREADS)


def main() -> None:
    rows = [(name, _run(name, "infer"), _run(name, "train")) for name in MODELS]
    prop = _run("-", "propagate")
    print("## transnet-oct: inference per 5-B-scan stack at 256², training-step memory, Algorithm 1\n")
    print(f"Machine: {machine(THREADS)}. Shared with other jobs while measured.\n")
    print(f"| model (9 input channels → 12 × 5 × 256²) | params | s / stack (inference, batch 1) | "
          f"peak RSS during inference (MiB) | s / training step ({BATCH} × 256²) | peak RSS of the step (MiB) |")
    print("|---|---|---|---|---|---|")
    for name, inf, tr in rows:
        print(f"| {MODELS[name]} | {inf['params']:,} | {inf['best']:.2f} | {inf['peak_delta_mib']:.0f} | "
              f"{tr['best']:.1f} | {tr['peak_delta_mib']:.0f} |")
    print(f"\nAlgorithm 1 (4 prior maps of one 256² stack, λ 0.04, Ω 11, vectorised with unfold): "
          f"{prop['best']:.2f} s. One forward pass per stack (second call timed); training step = forward, "
          "backward and AdamW step, one measurement.")


if __name__ == "__main__":
    main()
