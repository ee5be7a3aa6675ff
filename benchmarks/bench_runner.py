"""Training-step overhead of medrun's runner (Lightning Trainer built by `pipelines.training.make_trainer`, with
its callbacks, CSV logging and checkpointing) against a plain PyTorch loop over the same model, data and batches.

Target: ≤ 1.05× the plain loop's time per step. AD-Lite Net at 64×64 (the fixture size) and 224×224 (the
paper's), batch 16, on CPU.
"""

from __future__ import annotations

import os
import platform
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, TensorDataset

from medrun.artifacts import RunDir
from medrun.manifests.schema import DatasetSection, Manifest
from medrun.models.adlite import AdLiteNet
from medrun.pipelines import training
from medrun.pipelines.base import StageContext
from medrun.pipelines.tasks.classification import LitClassifier


def data(size: int, steps: int, batch: int = 16):
    g = torch.Generator().manual_seed(0)
    x = torch.rand(steps * batch, 3, size, size, generator=g) * 255
    y = torch.randint(0, 4, (steps * batch,), generator=g)
    return DataLoader(TensorDataset(x, y), batch_size=batch, shuffle=False)


def plain(size: int, steps: int) -> float:
    torch.manual_seed(0)
    net = AdLiteNet(4)
    opt = torch.optim.Adam(net.parameters(), lr=1e-3, eps=1e-7)
    dl = data(size, steps)
    net.train()
    t0 = time.perf_counter()
    for x, y in dl:
        opt.zero_grad()
        loss = F.cross_entropy(net(x), y)
        loss.backward()
        opt.step()
    return (time.perf_counter() - t0) / steps


class Timer(training.Callback):
    def on_train_epoch_start(self, trainer, pl_module):
        self.t0 = time.perf_counter()

    def on_train_epoch_end(self, trainer, pl_module):
        self.secs = time.perf_counter() - self.t0


def runner(size: int, steps: int) -> float:
    torch.manual_seed(0)
    with tempfile.TemporaryDirectory() as tmp:
        run = RunDir(Path(tmp) / "run").open()
        m = Manifest(pipeline="bench", dataset=DatasetSection(name="bench"))
        m.trainer.accelerator = "cpu"
        ctx = StageContext(stage="train", manifest=m, run=run, data_roots={}, log=lambda *_: None)
        timer = Timer()
        trainer = training.make_trainer(ctx, 1, callbacks=[timer])
        module = LitClassifier(AdLiteNet(4), lr=1e-3, eps=1e-7)
        training.fit(trainer, module, train_dataloaders=data(size, steps))
        run.close()
        return timer.secs / steps


def main() -> None:
    torch.set_num_threads(os.cpu_count() or 1)
    print("## Runner overhead per training step (benchmarks/bench_runner.py)\n")
    print(f"Machine: {platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__} (CPU). "
          "AD-Lite Net, batch 16; the epoch's wall time over its steps. Plain and runner alternate for 5 rounds; "
          "the table gives the medians and the median of the per-round ratios.\n")
    print("| input | steps | plain PyTorch s/step | medrun runner s/step | ratio | target |")
    print("|---|---|---|---|---|---|")
    from statistics import median

    for size, steps in ((64, 60), (224, 10)):
        plain(size, 2), runner(size, 2)  # warm-up
        rounds = [(plain(size, steps), runner(size, steps)) for _ in range(5)]
        p, r = median(x for x, _ in rounds), median(y for _, y in rounds)
        ratio = median(y / x for x, y in rounds)
        print(f"| {size}×{size} | {steps} | {p:.4f} | {r:.4f} | {ratio:.3f}× | ≤ 1.05× |")


if __name__ == "__main__":
    main()
