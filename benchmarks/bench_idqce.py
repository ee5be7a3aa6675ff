"""idqce: SSL pre-training throughput (images/s of one optimiser step: two augmented views through the online and
target branches, the frozen VQ encoder on the image, backward, LARS, EMA) for IDQCE against plain BYOL (the same code
with the code term off, so no VQ pass and no p_θ) in the same run, at the fixture size (ResNet-18, 64², MLP 128→64,
VQ K = 32, D = 32, batch 16) and the paper's (ResNet-50, 224², MLP 4096→256, VQ K = 1024, D = 256; batch 8 here).

Prints a Markdown section (heading, machine, table). Run directly or through ``benchmarks/run.py``. ``--quick``
skips the paper size.
"""

from __future__ import annotations

import os
import platform
import sys
import time

import torch


def step_rate(method: str, arch: str, size: int, batch: int, hidden: int, out: int, k: int, dim: int,
              steps: int) -> float:
    from medrun.models import idqce as M
    from medrun.pipelines.idqce.config import Pretrain
    from medrun.pipelines.idqce.pipeline import LitSSL

    torch.manual_seed(0)
    net = M.IDQCE(arch, 3, hidden, out, dim, 0.0 if method == "byol" else 1.0)
    lit = LitSSL(net, M.VQVAE(1, dim, dim, k), Pretrain(method=method, batch_size=batch), 1, 100).train()
    opt = lit.configure_optimizers()["optimizer"]
    x = torch.rand(batch, 1, size, size)

    def one():
        opt.zero_grad()
        lit.ssl_loss(x)[0].backward()
        opt.step()
        net.update_target(0.996)

    one()  # warm-up
    t0 = time.perf_counter()
    for _ in range(steps):
        one()
    return steps * batch / (time.perf_counter() - t0)


def main(argv: list[str]) -> None:
    settings = [("fixture: ResNet-18, 64², batch 16", ("resnet18", 64, 16, 128, 64, 32, 32), 5)]
    if "--quick" not in argv:
        settings.append(("paper: ResNet-50, 224², batch 8", ("resnet50", 224, 8, 4096, 256, 1024, 256), 2))
    rows = []
    for name, cfg, steps in settings:
        byol = step_rate("byol", *cfg, steps)
        idqce = step_rate("idqce", *cfg, steps)
        rows.append((name, idqce, byol))
    print("## idqce: SSL pre-training images/s, IDQCE against plain BYOL (benchmarks/bench_idqce.py)\n")
    print(f"Machine: {platform.machine()}, {os.cpu_count()} CPU cores, no GPU, torch {torch.__version__} "
          f"({torch.get_num_threads()} thread), Python {platform.python_version()}.\n")
    print("| setting | IDQCE images/s | BYOL images/s | IDQCE / BYOL |")
    print("|---|---:|---:|---:|")
    for name, a, b in rows:
        print(f"| {name} | {a:.2f} | {b:.2f} | {a / b:.2f} |")


if __name__ == "__main__":
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    main(sys.argv[1:])
