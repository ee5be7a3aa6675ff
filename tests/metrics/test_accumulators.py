"""Accumulating metrics: batches, state merging, a real two-process gloo DDP reduction, and a light package import."""

from __future__ import annotations

import os
import socket
import subprocess
import sys

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from medrun.metrics import classification as C
from medrun.metrics import segmentation as S


def _data():
    rng = np.random.default_rng(7)
    y = rng.integers(0, 3, 64)
    p = rng.dirichlet(np.ones(3), 64)
    pred, gt = rng.random((8, 12, 12)) < 0.4, rng.random((8, 12, 12)) < 0.4
    return y, p, pred, gt


def test_merge_state_equals_single_process():
    y, p, pred, gt = _data()
    a, b = C.AUROCMetric("macro"), C.AUROCMetric("macro")
    a.update(p[:30], y[:30])
    b.update(p[30:], y[30:])
    a.merge_state(b)
    assert float(a.compute()) == pytest.approx(C.auroc(y, p, "macro"))
    s1, s2 = S.OverlapMetric(), S.OverlapMetric()
    s1.update(pred[:3], gt[:3])
    s2.update(pred[3:], gt[3:])
    s1.merge_state(s2)
    assert s1.compute()["dice"] == pytest.approx(S.dice(pred, gt))


def test_case_mean_metric_excludes_nan_and_merges():
    rng = np.random.default_rng(3)
    cases = [(rng.random((6, 7, 8)) < 0.3, rng.random((6, 7, 8)) < 0.3) for _ in range(4)]
    cases.append((np.zeros((6, 7, 8), bool), np.zeros((6, 7, 8), bool)))  # NaN under empty="nan"
    sp = (2.0, 1.0, 0.5)
    a = S.CaseMeanMetric("hausdorff95", spacing=sp, empty="nan")
    b = S.CaseMeanMetric(S.hausdorff95, spacing=sp, empty="nan", batched=True)
    for p, g in cases[:2]:
        a.update(p, g)
    b.update(np.stack([c[0] for c in cases[2:]]), np.stack([c[1] for c in cases[2:]]))
    a.merge_state(b)
    out = a.compute()
    ref = np.nanmean([S.hausdorff95(p, g, sp, empty="nan") for p, g in cases])
    assert out == {"mean": pytest.approx(ref), "n": 4, "n_excluded": 1}


def _worker(rank, world, port, queue):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    torch.set_num_threads(1)
    y, p, pred, gt = _data()
    auc, ov = C.AUROCMetric("ovo"), S.OverlapMetric()
    half = slice(rank * 32, rank * 32 + 32)
    auc.update(p[half], y[half])
    ov.update(pred[rank * 4 : rank * 4 + 4], gt[rank * 4 : rank * 4 + 4])
    queue.put((rank, float(auc.compute()), ov.compute()["dice"]))
    dist.destroy_process_group()


def test_ddp_two_ranks_reduce_to_whole_set():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    procs = [ctx.Process(target=_worker, args=(r, 2, port, queue)) for r in range(2)]
    for proc in procs:
        proc.start()
    results = [queue.get(timeout=120) for _ in procs]
    for proc in procs:
        proc.join(timeout=60)
    y, p, pred, gt = _data()
    for _, auc, dice in results:
        assert auc == pytest.approx(C.auroc(y, p, "ovo"))
        assert dice == pytest.approx(S.dice(pred, gt))


def test_package_import_is_light():
    code = (
        "import sys, medrun.metrics; heavy = [m for m in ('torch', 'sklearn', 'monai', 'scipy') if m in sys.modules];"
        " assert not heavy, heavy"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
