"""Attack cost per image for cycleadvgan at 224² on a ResNet-50 target (CPU): CycleAdvGAN's one generator forward
(full-size CycleGAN generator, 6 and 9 residual blocks) beside captum's FGSM (one forward + backward of F) and PGD
(10 steps), and one CycleAdvGAN training step (batch 1, full-size networks, 6 blocks, 128²) to size a CPU run.

Prints a Markdown section (heading, machine, table). Run directly or through ``benchmarks/run.py``.
"""

from __future__ import annotations

import os
import platform

import _timing
import torch

SIZE = 224
BATCH = 4
REPEATS = 2



def best(fn, repeats: int = REPEATS) -> float:
    return _timing.best(fn, repeats)


def main() -> None:
    from medrun.models import attack_targets
    from medrun.models.cyclegan import CycleGAN, ResnetGenerator
    from medrun.pipelines.cycleadvgan.attack import LitCycleAdvGAN, gradient_attack, translate
    from medrun.pipelines.cycleadvgan.config import Attack

    torch.set_num_threads(os.cpu_count() or 1)
    torch.manual_seed(0)
    f = attack_targets.build("resnet50", SIZE).eval()
    for p in f.parameters():
        p.requires_grad_(False)
    x = torch.rand(BATCH, 3, SIZE, SIZE)
    y = torch.randint(0, 2, (BATCH,))
    a = Attack(batch_eval=BATCH)
    rows = []
    for blocks in (6, 9):
        g = ResnetGenerator(3, 3, 64, blocks).eval()
        secs = best(lambda g=g: translate(g, x, BATCH)) / BATCH  # through a CPU float32 predictor
        rows.append((f"CycleAdvGAN, generator forward ({blocks} blocks)", secs))
    rows.append(("FGSM (captum, ε 0.03)", best(lambda: gradient_attack(f, x, y, "fgsm", a, 0)) / BATCH))
    rows.append(("PGD (captum, 10 steps)", best(lambda: gradient_attack(f, x, y, "pgd", a, 0), 1) / BATCH))
    fwd = best(lambda: torch.no_grad()(f)(x)) / BATCH
    train = []
    for size, blocks in ((128, 6),):
        cfg = Attack(ngf=64, ndf=64, n_blocks=blocks)
        mod = LitCycleAdvGAN(CycleGAN(64, 64, blocks), attack_targets.build("resnet50", size).eval(), cfg)
        opts, _ = mod.configure_optimizers()
        mod.optimizers = lambda opts=opts: opts
        mod.manual_backward = lambda loss: loss.backward()
        mod.log = lambda *args, **kw: None
        batch = (torch.rand(1, 3, size, size), torch.rand(1, 3, size, size))
        mod.training_step(batch, 0)  # warm-up
        train.append((size, blocks, best(lambda mod=mod, batch=batch: mod.training_step(batch, 0), 1)))

    load = os.getloadavg()[0]
    print(f"## cycleadvgan: attack cost per image on ResNet-50 at {SIZE}²\n")
    print(f"Machine: {platform.machine()}, {os.cpu_count()} CPU cores, no GPU, {platform.system()}, Python "
          f"{platform.python_version()}, torch {torch.__version__}; load average {load:.1f} when the run ended (the "
          f"machine is shared with other jobs). Batch {BATCH}, random init (speed does not depend on the weights), "
          f"best of {REPEATS} (PGD: 1 run; the training step: 1 run after a warm-up).\n")
    print("| attack | s/image | images/s | × one ResNet-50 forward |")
    print("|---|---|---|---|")
    for name, secs in rows:
        print(f"| {name} | {secs:.3f} | {1 / secs:.1f} | {secs / fwd:.1f} |")
    print(f"\nOne ResNet-50 forward: {fwd:.3f} s/image.\n")
    print("| CycleAdvGAN training step (batch 1, ngf = ndf = 64, F = ResNet-50) | s/step "
          "| hours for 200 epochs of 934 steps |")
    print("|---|---|---|")
    for size, blocks, secs in train:
        print(f"| {size}², {blocks} blocks | {secs:.2f} | {secs * 200 * 934 / 3600:.0f} |")
    print("\n934 steps per epoch: the ~467 malignant images of ISIC 2020's 80 % training part and as many benign ones "
          "at batch 1 (the card's recipe); the real protocol is GPU-scale. PGD is timed once, after FGSM has warmed "
          "up F.")


if __name__ == "__main__":
    main()
