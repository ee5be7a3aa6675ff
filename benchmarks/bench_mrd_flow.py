"""mrd-flow: inference events/s and peak memory on one 500,000-event sample, GIN-ST-FPS against the MLP variant.

Issue 20: "mrd-flow events/s at inference on a 500,000-event sample, and peak memory, against the MLP variant in the
same run". The sample is drawn by the vie fixture's generator (``datasets.flow_mrd.simulate``: five healthy
populations, 2 % blasts, 11 markers on the 0–4.5 scale) and saved once; each model then runs in a fresh process
that loads it, so that its peak resident memory is its own: the table gives the peak RSS above the RSS after the
sample was loaded (``resource.getrusage``). Networks at the paper's size (hidden 32, 4 heads, FPS ratio 0.0005 →
250 inducing events, kNN k = 10), eval mode, ``torch.no_grad``, float32 on the CPU, the whole sample in one
forward as the paper's test protocol. For the graph model the kNN graph (scipy's cKDTree over all 11 markers) is
timed apart from the network (FPS + GIN + 3 set-attention blocks).

``BENCH_EVENTS`` (default 500000), ``BENCH_THREADS`` (default 1) and ``BENCH_TIMEOUT`` (seconds per model, default
1800) change the size, the torch threads and the time a model may take.
"""

from __future__ import annotations

import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

MODELS = {"MLP": "mlp", "ST-FPS": "st-fps", "GIN-ST-FPS": "gin-st-fps"}


def child(arch: str, path: str, threads: int) -> dict:
    import numpy as np
    import torch

    from medrun.models.flowsets import FlowNet, knn_edges

    torch.set_num_threads(threads)
    x = torch.from_numpy(np.load(path))[None]
    torch.manual_seed(0)
    net = FlowNet(arch, x.shape[-1]).eval()
    with torch.no_grad():
        net(x[:, :2000])  # warm-up on a small draw
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    t0 = time.perf_counter()
    with torch.no_grad():
        edges = knn_edges(x, net.k) if net.graph else None
        t1 = time.perf_counter()
        logits = net.core(x, edges)
    t2 = time.perf_counter()
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return {"events": x.shape[1], "knn_s": t1 - t0, "net_s": t2 - t1, "total_s": t2 - t0,
            "peak_extra_mb": (peak - base) / 1024, "params": sum(p.numel() for p in net.parameters()),
            "blast_pct": float((logits > 0).float().mean()) * 100}


def main() -> None:
    if len(sys.argv) == 4 and sys.argv[1] == "--child":
        print(json.dumps(child(sys.argv[2], sys.argv[3], int(os.environ.get("BENCH_THREADS", "1")))))
        return
    import numpy as np

    from medrun.datasets import flow_mrd

    n = int(os.environ.get("BENCH_EVENTS", "500000"))
    threads = int(os.environ.get("BENCH_THREADS", "1"))
    limit = int(os.environ.get("BENCH_TIMEOUT", "1800"))  # seconds per model
    events, *_ = flow_mrd.simulate(np.random.default_rng(0), n, 0.02)
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "sample.npy"
        np.save(path, events)
        for name, arch in MODELS.items():
            try:
                out = subprocess.run([sys.executable, __file__, "--child", arch, str(path)], capture_output=True,
                                     text=True, check=True, timeout=limit)
            except subprocess.TimeoutExpired:
                results[name] = None
                print(f"{name}: did not finish in {limit} s", file=sys.stderr, flush=True)
                continue
            results[name] = json.loads(out.stdout.strip().splitlines()[-1])
            print(f"{name}: {results[name]}", file=sys.stderr, flush=True)
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    import torch

    print(f"## mrd-flow: inference on one {n:,}-event sample, GIN-ST-FPS against the MLP "
          "(benchmarks/bench_mrd_flow.py)\n")
    print(f"Machine: {platform.machine()}, {os.cpu_count()} CPU cores, no GPU, torch {torch.__version__} "
          f"({threads} thread{'s' if threads > 1 else ''}), Python {sys.version.split()[0]}; shared with other jobs "
          f"while measured (load average {load:.1f}). One forward of the whole sample (the paper's test protocol), "
          "float32, paper-size networks, each model in a fresh process; peak memory is the peak RSS above the RSS "
          "with the sample loaded.\n")
    print("| model | params | kNN graph s | network s | events/s | peak extra memory MB | vs MLP time |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    ref = results["MLP"]["total_s"]
    for name, r in results.items():
        if r is None:
            print(f"| {name} | | did not finish in {limit} s | | | | |")
            continue
        knn = f"{r['knn_s']:.2f}" if name.startswith("GIN") else "—"
        print(f"| {name} | {r['params']:,} | {knn} | {r['net_s']:.2f} | {r['events'] / r['total_s']:,.0f} | "
              f"{r['peak_extra_mb']:.0f} | {r['total_s'] / ref:.0f}× |")


if __name__ == "__main__":
    main()
