"""hybrid-seg latency: fp32 PyTorch vs int8 dynamic quantisation vs ONNX Runtime on the same input (issue 17).

The card's deployment protocol: batch 1, median latency after warm-up runs, ``torch.set_num_threads(2)`` (and two
intra-op threads for ONNX Runtime). HybridNet at full size (3×256², 8.7 M parameters) and at the smoke size (3×64²);
weights are random (latency does not depend on their values); int8 is ``quantize_dynamic`` on the Linear layers
(the transformer bottleneck), ONNX is the ``export-onnx`` stage's export (opset 17). Each engine's output is
compared with fp32 on the same input (max |Δ| of the NP logits). ``BENCH_RUNS``/``BENCH_WARMUP`` change the counts.
"""

from __future__ import annotations

import os
import platform
import sys
import time
from statistics import median

import numpy as np
import torch

from medrun.models.hybridnet import HybridNet, hybridnet_tiny
from medrun.pipelines.hybrid_seg.deploy import Heads, int8_dynamic, onnx_bytes

THREADS = int(os.environ.get("BENCH_THREADS", "2"))


def latency(fn, x, runs: int, warmup: int) -> float:
    for _ in range(warmup):
        fn(x)
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        fn(x)
        times.append(time.perf_counter() - t0)
    return median(times) * 1000


def main() -> None:
    import onnxruntime as ort

    torch.set_num_threads(THREADS)
    print("## hybrid-seg: CPU latency, fp32 vs int8 dynamic vs ONNX Runtime (benchmarks/bench_hybrid_seg.py)\n")
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"Machine: {platform.machine()}, {os.cpu_count()} CPU cores, no GPU, torch {torch.__version__}, onnxruntime "
          f"{ort.__version__}, Python {sys.version.split()[0]}; {THREADS} thread{'s' if THREADS > 1 else ''}; "
          "shared with other jobs while "
          f"measured (load average {load:.1f}). Batch 1, median of the runs after the warm-ups; same input for "
          "every engine.\n")
    print("| model | input | params | engine | median ms | vs fp32 | max abs Δ NP logits |")
    print("|---|---|---:|---|---:|---:|---:|")
    for name, make, side, runs, warmup in (("HybridNet full", HybridNet, 256, 10, 2),
                                           ("HybridNet smoke size", hybridnet_tiny, 64, 50, 10)):
        runs = int(os.environ.get("BENCH_RUNS", runs))
        warmup = int(os.environ.get("BENCH_WARMUP", warmup))
        torch.manual_seed(0)
        net = make().eval()
        x = torch.randn(1, 3, side, side)
        fp32, q = Heads(net).eval(), Heads(int8_dynamic(net)).eval()
        opts = ort.SessionOptions()
        opts.intra_op_num_threads, opts.inter_op_num_threads = THREADS, 1
        sess = ort.InferenceSession(onnx_bytes(net, side), opts, providers=["CPUExecutionProvider"])
        with torch.no_grad():
            ref = fp32(x)[0].numpy()
            def ort_run(t, sess=sess):
                return sess.run(None, {"image": t.numpy()})

            outs = {"fp32": ref, "int8 dynamic": q(x)[0].numpy(), "ONNX Runtime": ort_run(x)[0]}
            ms = {"fp32": latency(fp32, x, runs, warmup), "int8 dynamic": latency(q, x, runs, warmup),
                  "ONNX Runtime": latency(ort_run, x, runs, warmup)}
        n = sum(p.numel() for p in net.parameters())
        for engine, v in ms.items():
            print(f"| {name} | {side}² | {n:,} | {engine} | {v:.1f} | {ms['fp32'] / v:.2f}× | "
                  f"{float(np.abs(outs[engine] - ref).max()):.2e} |")


if __name__ == "__main__":
    main()
