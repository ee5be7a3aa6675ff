"""Chunked selective scan against the sequential reference loop at L = 4096 (cmu-net.md, issue 5 "Performance").

Standalone: ``python benchmarks/bench_selective_scan.py`` prints a Markdown section (heading, machine, table).
Shapes are those of a CMU-Net level with 32 channels: batch 1, E = 64 (expand 2), N = 16, L = 4096 tokens
(a 64 x 64 map). Each figure is the best wall time of ``REPEATS`` runs after one warm-up (the best, not the
median, because the 2-core development machine is shared and other jobs only ever add time), for the forward pass
without autograd and for forward + backward of ``y.sum()`` with gradients for all inputs.
"""

from __future__ import annotations

import os
import platform
import time

import torch

from medrun.models.selective_scan import DEFAULT_CHUNK, selective_scan_chunked, selective_scan_sequential

BATCH, CHANNELS, STATE, LENGTH = 1, 64, 16, 4096
CHUNKS = (8, 16, 32, 64)
REPEATS = 3


def _inputs(requires_grad: bool) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    tensors = {
        "u": torch.randn(BATCH, CHANNELS, LENGTH, generator=g),
        "delta": torch.randn(BATCH, CHANNELS, LENGTH, generator=g) * 0.5 - 2.0,
        "A": -torch.arange(1, STATE + 1, dtype=torch.float32).repeat(CHANNELS, 1),
        "B": torch.randn(BATCH, STATE, LENGTH, generator=g),
        "C": torch.randn(BATCH, STATE, LENGTH, generator=g),
        "D": torch.ones(CHANNELS),
    }
    return {k: v.requires_grad_(requires_grad) for k, v in tensors.items()}


def _time(fn, backward: bool) -> float:
    times = []
    for i in range(REPEATS + 1):
        inputs = _inputs(backward)
        start = time.perf_counter()
        if backward:
            fn(**inputs, delta_softplus=True).sum().backward()
        else:
            with torch.no_grad():
                fn(**inputs, delta_softplus=True)
        if i:  # the first run is a warm-up
            times.append(time.perf_counter() - start)
    return min(times)


def _machine() -> str:
    cpu = platform.processor() or platform.machine()
    return (
        f"{cpu}, {os.cpu_count()} cores, torch {torch.__version__} ({torch.get_num_threads()} threads), "
        f"Python {platform.python_version()}, no GPU used"
    )


def main() -> None:
    seq_fwd = _time(selective_scan_sequential, backward=False)
    seq_bwd = _time(selective_scan_sequential, backward=True)
    print("## Selective scan: chunked vs sequential loop (L = 4096)\n")
    print(f"Machine: {_machine()}.\n")
    print(
        f"batch {BATCH}, E = {CHANNELS}, N = {STATE}, L = {LENGTH}, float32; best of {REPEATS} runs "
        f"(seconds). Library default chunk T = {DEFAULT_CHUNK}.\n"
    )
    print("| chunk T | chunked fwd | sequential fwd | speed-up | chunked fwd+bwd | sequential fwd+bwd | speed-up |")
    print("|---|---|---|---|---|---|---|")
    for chunk in CHUNKS:

        def scan(chunk=chunk, **kw):
            return selective_scan_chunked(**kw, chunk_size=chunk)

        fwd = _time(scan, backward=False)
        bwd = _time(scan, backward=True)
        print(
            f"| {chunk} | {fwd:.3f} | {seq_fwd:.3f} | {seq_fwd / fwd:.2f}x | {bwd:.3f} | {seq_bwd:.3f} | "
            f"{seq_bwd / bwd:.2f}x |",
            flush=True,
        )


if __name__ == "__main__":
    main()
