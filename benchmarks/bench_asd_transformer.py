"""asd-transformer at the paper's size (asd-transformer.md, "Reproduction plan on a 2-core CPU"): the feature steps
and the network on 1009 subjects × 200 ROIs, the real ABIDE size, with synthetic inputs.

Standalone: ``python benchmarks/bench_asd_transformer.py`` prints a Markdown section (heading, machine, tables).

- Local efficiency of one subject's density-0.2 graph (200 nodes, 3,980 edges): medrun's vectorised breadth-first
  search against networkx (``global_efficiency`` of each neighbour subgraph, the reference the tests use), median
  over ``SUBJECTS`` subjects, and the projection to 1009 subjects.
- ComBat (neuroCombat 0.2.12, parametric EB) on 1009 subjects × 19,900 upper-triangle features, 17 sites.
- The network (1,172,986 parameters): one Adam step on a batch of 64 (forward, cross-entropy, backward, update) and
  inference, median over ``STEPS`` steps after one warm-up; an epoch of the paper's protocol is 706 training subjects
  (12 steps) plus 101 validation subjects.
"""

from __future__ import annotations

import contextlib
import io
import os
import platform
import statistics
import time

import numpy as np
import torch

SUBJECTS, STEPS, N_ROI, N_SUBJ, N_SITES = 5, 3, 200, 1009, 17


def _machine() -> str:
    cpu = platform.processor() or platform.machine()
    load = f", load average {os.getloadavg()[0]:.1f} at start" if hasattr(os, "getloadavg") else ""
    return (f"{cpu}, {os.cpu_count()} cores{load}, torch {torch.__version__} ({torch.get_num_threads()} threads), "
            f"Python {platform.python_version()}, no GPU used")


def _corr(rng, r=N_ROI, t=150):
    return np.corrcoef(rng.standard_normal((r, t)) + rng.standard_normal((1, t)))


def bench_local_efficiency() -> dict:
    import networkx as nx

    from medrun.pipelines.asd_transformer import features as feat

    rng = np.random.default_rng(0)
    ours, ref, diff = [], [], 0.0
    for _ in range(SUBJECTS):
        a = feat.density_graph(_corr(rng), 0.2)
        t0 = time.perf_counter()
        e = feat.local_efficiency(a)
        ours.append(time.perf_counter() - t0)
        g = nx.from_numpy_array(a.astype(int))
        t0 = time.perf_counter()
        r = np.array([nx.global_efficiency(g.subgraph(g[v])) for v in range(N_ROI)])
        ref.append(time.perf_counter() - t0)
        diff = max(diff, float(np.abs(e - r).max()))
    return {"ours": statistics.median(ours), "networkx": statistics.median(ref), "max_diff": diff}


def bench_combat() -> dict:
    from medrun.pipelines.asd_transformer import features as feat

    rng = np.random.default_rng(1)
    m = N_ROI * (N_ROI - 1) // 2
    sites = np.array([f"site{i % N_SITES:02d}" for i in range(N_SUBJ)])
    shift = rng.normal(0, 0.1, (N_SITES, m)).astype(np.float32)
    scale = rng.uniform(0.7, 1.4, (N_SITES, 1)).astype(np.float32)
    idx = np.array([int(s[4:]) for s in sites])
    x = (0.2 + shift[idx] + scale[idx] * rng.normal(0, 0.15, (N_SUBJ, m)).astype(np.float32)).astype(np.float64)
    before = feat.site_variance(x, sites)
    t0 = time.perf_counter()
    with contextlib.redirect_stdout(io.StringIO()):
        out = feat.combat(x, sites)
    secs = time.perf_counter() - t0
    return {"seconds": secs, "fall": 1 - feat.site_variance(out, sites) / before, "features": m}


def bench_model() -> dict:
    from medrun.models.asd_transformer import paper_model

    torch.manual_seed(0)
    net = paper_model()
    x, y = torch.randn(64, N_ROI, N_ROI), torch.randint(0, 2, (64,))
    opt = torch.optim.Adam(net.parameters(), lr=1e-4, weight_decay=1e-4)
    train, infer = [], []
    for i in range(STEPS + 1):
        net.train()
        t0 = time.perf_counter()
        loss = torch.nn.functional.cross_entropy(net(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        t1 = time.perf_counter()
        net.eval()
        with torch.no_grad():
            net(x)
        t2 = time.perf_counter()
        if i:
            train.append(t1 - t0)
            infer.append(t2 - t1)
    step, inf = statistics.median(train), statistics.median(infer)
    return {"params": sum(p.numel() for p in net.parameters()), "train_step": step, "infer": inf,
            "epoch": step * 706 / 64 + inf * 101 / 64}


def main() -> None:
    le, cb, md = bench_local_efficiency(), bench_combat(), bench_model()
    print("## asd-transformer (paper size: 1009 subjects, 200 ROIs, synthetic inputs)\n")
    print(f"Machine: {_machine()}.\n")
    print("| step | medrun | reference | note |")
    print("|---|---|---|---|")
    print(f"| local efficiency, one subject (200 nodes, density 0.2) | {le['ours'] * 1e3:.1f} ms | "
          f"networkx {le['networkx'] * 1e3:.0f} ms | {le['networkx'] / le['ours']:.0f}× faster; max difference "
          f"{le['max_diff']:.1e} |")
    print(f"| local efficiency, 1009 subjects (projected) | {le['ours'] * N_SUBJ:.0f} s | networkx "
          f"{le['networkx'] * N_SUBJ / 60:.1f} min | cached per data + settings after the first run |")
    print(f"| ComBat, 1009 × {cb['features']:,} features, 17 sites | {cb['seconds']:.1f} s | — | "
          f"between-site variance of feature means falls by {cb['fall']:.3f} |")
    print(f"| train step, batch 64 ({md['params']:,} params) | {md['train_step']:.2f} s | — | "
          f"{64 / md['train_step']:.0f} subjects/s |")
    print(f"| inference, batch 64 | {md['infer']:.2f} s | — | {64 / md['infer']:.0f} subjects/s |")
    print(f"| one epoch of the protocol (706 train + 101 val) | {md['epoch']:.0f} s | card: 20–40 s | "
          f"50 epochs × 5 runs ≈ {md['epoch'] * 250 / 3600:.1f} h |")


if __name__ == "__main__":
    main()
