"""epilepsy-mtl efficiency (the paper's Table 3): parameters, weight size and time to classify 300 HFO + 300 IED
images with the cross-stitch model, its variants (channel stitches, one stitch, two independent networks), and a
training step; beside a MONAI 2D ResNet-18 at 224² (the paper's ResNet18 row takes 227² images), timed on 60
images and scaled to 600.

Prints a Markdown section (heading, machine, table). Run directly or through ``benchmarks/run.py``.
"""

from __future__ import annotations

import os
import platform

import _timing
import torch

REPEATS = 5



def best(fn, repeats: int = REPEATS) -> float:
    return _timing.best(fn, repeats, warmup=True)


def size_mib(net) -> float:
    from safetensors.torch import save

    state = {k: v.contiguous() for k, v in net.state_dict().items()}
    return len(save(state)) / 2**20


def main() -> None:
    import torch.nn.functional as F

    from medrun.models.crossstitch import CrossStitchNet, keras_param_count

    torch.manual_seed(0)
    xa, xb = torch.rand(300, 3, 28, 28), torch.rand(300, 3, 28, 28)
    ya, yb = torch.randint(0, 2, (32,)), torch.randint(0, 2, (32,))
    rows = []
    for threads in (1, os.cpu_count() or 1):
        torch.set_num_threads(threads)
        for stitch, n in (("full", 2), ("full", 1), ("channel", 2), ("full", 0)):
            net = CrossStitchNet(stitch, n).eval()
            with torch.no_grad():
                infer = best(lambda net=net: net(xa, xb))
            net.train()
            opt = torch.optim.SGD(net.parameters(), lr=1e-3)

            def step(net=net, opt=opt):
                la, lb = net(xa[:32], xb[:32])
                loss = F.cross_entropy(la, ya) + F.cross_entropy(lb, yb)
                loss = loss + 0.01 * sum(w.abs().sum() for w in net.conv_kernels())
                opt.zero_grad()
                loss.backward()
                opt.step()

            rows.append((f"cross-stitch, {stitch}, n_stitch {n}", threads, keras_param_count(net), size_mib(net),
                         1000 * infer, 1000 * best(step)))
    from monai.networks.nets import resnet18

    torch.set_num_threads(os.cpu_count() or 1)
    ref = resnet18(spatial_dims=2, n_input_channels=3, num_classes=2).eval()
    x = torch.rand(60, 3, 224, 224)
    with torch.no_grad():
        t = best(lambda: ref(x), 2) * 10
    params = sum(p.numel() for p in ref.parameters())
    rows.append(("MONAI ResNet-18 2D at 224² (reference; 60 images × 10)", os.cpu_count(), params, size_mib(ref),
                 1000 * t, None))

    load = os.getloadavg()[0]
    print("## epilepsy-mtl: model size and time to classify 300 HFO + 300 IED images (Table 3)\n")
    print(f"Machine: {platform.machine()}, {os.cpu_count()} CPU cores, no GPU, {platform.system()}, Python "
          f"{platform.python_version()}, torch {torch.__version__}; load average {load:.1f} when the run ended (the "
          f"machine is shared with other jobs). 600 images (300 pairs at 28²) in one batch, best of {REPEATS} after a "
          f"warm-up; training step: batch 32 pairs, SGD, both cross-entropies + L1. Random init. The paper: proposed "
          f"1.06 M / 4.0 MB / 455 ms, ResNet18 11.69 M / 44.7 MB / 1,248 ms (i7-10750H + RTX 2070).\n")
    print("| model | threads | params (Keras count) | size (MiB) | ms for 600 images | ms per training step |")
    print("|---|---|---|---|---|---|")
    for name, threads, params, mib, ms, step in rows:
        print(f"| {name} | {threads} | {params:,} | {mib:.2f} | {ms:.1f} | {'—' if step is None else f'{step:.1f}'} |")


if __name__ == "__main__":
    main()
