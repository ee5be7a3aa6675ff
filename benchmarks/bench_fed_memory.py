"""Federated round time of fed-memory on Flower against the same clients trained one after another without Flower.

Issue 18: "federated round time against the same clients trained one after another without Flower". Three ways to
run the same t-rounds over the same three clients (fed-memory's ``FedMemoryClient``: local epochs, CME recording,
held-out accuracy), built afresh for each way from the brain-tumor-mri fixture (generated into a temp folder) at
64×64, scenario 1 (heterogeneous; head layers averaged):

- **Flower**: ``flower.simulate``, Flower's ``Server.fit`` in-process (configure_fit → fit → aggregate_fit →
  configure_evaluate → evaluate through ``ClientProxy`` objects, parameters serialised to Flower's bytes).
- **plain loop**: the clients' ``fit``/``evaluate`` called one after another with a NumPy mean, no Flower.
- **plain loop, no CMEs**: the same with the CME recorder switched off (what recording the memory elements costs).

Two sizes: the tiny set (4-layer CNN / MONAI DenseNet / mini AlexNet-skip; the learning check's) and the real set
(ResNet50 / DenseNet121 / AlexNet-skip, random init) on a 24-image subset, batch 8. Each cell: seconds per round, the
median of ``ROUNDS`` rounds after one untimed round.
"""

from __future__ import annotations

import os
import platform
import sys
import tempfile
import time
from pathlib import Path
from statistics import median
from types import SimpleNamespace

import numpy as np
import torch

from medrun.datasets import brain_tumor_mri
from medrun.pipelines.fed_memory.config import FedMemoryManifest
from medrun.pipelines.fed_memory.pipeline import FedMemory

ROUNDS = 3


class _NoRecorder:
    rows, jumps, archive = [], [], []

    def start_round(self, *a):
        pass

    def epoch(self, *a):
        pass

    def end_round(self):
        pass


def make_clients(root: Path, arch_set: str, **data):
    m = FedMemoryManifest.model_validate({
        "pipeline": "fed-memory", "dataset": {"name": "brain-tumor-mri", "img_size": 64, **data},
        "model": {"arch_set": arch_set}, "fed": {"scenario": 1},
        "train": {"rounds": ROUNDS + 1, "epochs": 2, "batch_size": 8, "lr": 1e-3}})
    ctx = SimpleNamespace(data_roots={"brain-tumor-mri": root}, track=lambda items, what: items)
    clients, _, _ = FedMemory(m, ctx).clients()
    return clients


def flower_rounds(clients) -> list[float]:
    from medrun.pipelines.fed_memory.flower import simulate

    marks = []
    orig = clients[0].evaluate

    def stamp(parameters, config):  # client 1's evaluate ends its round (threads=1: clients in turn)
        out = orig(parameters, config)
        marks.append(time.perf_counter())
        return out

    clients[0].evaluate = stamp
    t0 = time.perf_counter()
    simulate(clients, ROUNDS + 1, threads=1)
    ends = [t0, *marks]
    return [b - a for a, b in zip(ends, ends[1:], strict=False)][1:]


def plain_rounds(clients, cme: bool = True) -> list[float]:
    if not cme:
        for c in clients:
            c.recorder = _NoRecorder()
    params = clients[0].get_parameters({})
    times = []
    for rnd in range(1, ROUNDS + 2):
        t0 = time.perf_counter()
        results = [c.fit(params, {"server_round": rnd})[0] for c in clients]
        params = [np.mean(np.stack(col), axis=0).astype(col[0].dtype) for col in zip(*results, strict=True)]
        for c in clients:
            c.evaluate(params, {})
        times.append(time.perf_counter() - t0)
    return times[1:]


def main() -> int:
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        root = brain_tumor_mri.make_fixture(Path(tmp) / "data", 0)
        for label, arch_set, data in (("tiny set, 80 images (≈21 train / client)", "tiny", {}),
                                      ("real set, 24-image subset (≈6 train / client)", "real", {"subset": 24})):
            cells = {}
            for name, fn in (("Flower", flower_rounds), ("plain loop", plain_rounds),
                             ("plain loop, no CMEs", lambda c: plain_rounds(c, cme=False))):
                torch.manual_seed(0)
                cells[name] = median(fn(make_clients(root, arch_set, **data)))
            rows.append((label, cells))
    print("## fed-memory: federated round time, Flower vs. the same clients in a plain loop\n")
    print(f"Machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, torch "
          f"{torch.__version__}, {torch.get_num_threads()} thread(s); 3 clients, 2 local epochs per round, 64×64, "
          f"batch 8; median of {ROUNDS} rounds after one untimed round.\n")
    print("| clients | Flower (s/round) | plain loop (s/round) | Flower overhead | plain loop without CMEs (s/round) |")
    print("|---|---|---|---|---|")
    for label, c in rows:
        over = c["Flower"] / c["plain loop"] - 1
        print(f"| {label} | {c['Flower']:.3f} | {c['plain loop']:.3f} | {over:+.1%} | {c['plain loop, no CMEs']:.3f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
