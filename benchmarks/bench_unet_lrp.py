"""LRP maps per second on the unet-lrp card's U-Nets at full size (512×512 input, the card's widths, 1 channel):
Captum LRP-ε through ``Sequential(net, Sigmoid, MaskedSum)`` (with the residual fix for the residual U-Net), beside
one plain gradient×input map of the same masked sum (one forward + one backward: the floor any backward-pass
explanation pays). Random weights; the cost does not depend on them.

Prints a Markdown section (heading, machine, table). Run directly or through ``benchmarks/run.py``.
Environment: BENCH_LRP_SIZE (default 512), BENCH_LRP_REPEATS (default 2).
"""

from __future__ import annotations

import os
import platform

import _timing
import torch

SIZE = int(os.environ.get("BENCH_LRP_SIZE", 512))
REPEATS = int(os.environ.get("BENCH_LRP_REPEATS", 2))



def best(fn, repeats: int = REPEATS) -> float:
    return _timing.best(fn, repeats)


def main() -> None:
    import captum
    import monai

    from medrun.models import lrp_unet as L

    torch.manual_seed(0)
    x = torch.rand(1, 1, SIZE, SIZE)
    mask = torch.zeros(1, 1, SIZE, SIZE)
    mask[..., SIZE // 4: 3 * SIZE // 4, SIZE // 8: SIZE // 2] = 1
    rows = []
    for arch in L.ARCHS:
        for norm in L.NORMS:
            net = L.Segmenter(arch, norm).eval()
            params = sum(p.numel() for p in net.parameters())

            def lrp(net=net):
                L.relevance(net, x, mask, fix=True)

            def grad_x_input(net=net):
                xi = x.clone().requires_grad_(True)
                (torch.sigmoid(net(xi)) * mask).sum().backward()
                return xi.grad * xi

            t_lrp, t_grad = best(lrp), best(grad_x_input)
            rows.append((arch, norm, params, t_lrp, t_grad))
            print(f"<!-- {arch} {norm}: LRP {t_lrp:.2f} s, gradient×input {t_grad:.2f} s -->", flush=True)
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"## unet-lrp: LRP maps per second on the card's U-Nets ({SIZE}×{SIZE})\n")
    print(f"Machine: {platform.machine()}, {os.cpu_count()} CPU cores, {platform.system()}, Python "
          f"{platform.python_version()}, torch {torch.__version__} ({torch.get_num_threads()} threads), MONAI "
          f"{monai.__version__}, captum {captum.__version__}, no GPU. Load average {load:.1f} when it finished (the "
          f"machine is shared with other jobs). One image, best of {REPEATS} runs, wall-clock.\n")
    print("| net | norm | parameters | LRP (s/map) | LRP maps/s | gradient×input (s/map) | LRP / gradient |")
    print("|---|---|---:|---:|---:|---:|---:|")
    for arch, norm, params, t_lrp, t_grad in rows:
        print(f"| {arch} | {norm} | {params:,} | {t_lrp:.2f} | {1 / t_lrp:.3f} | {t_grad:.2f} | "
              f"{t_lrp / t_grad:.1f}× |")


if __name__ == "__main__":
    main()
