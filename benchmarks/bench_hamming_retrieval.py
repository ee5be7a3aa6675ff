"""hamming-retrieval: query latency and throughput of exact Hamming search over 10⁴, 10⁵ and 10⁶ gallery codes,
faiss ``IndexBinaryFlat`` (what the pipeline uses) against a NumPy popcount search in the same run (top 100,
16- and 64-bit codes), and the network's encoding rate at the paper's size (224², K = 16).

Prints a Markdown section (heading, machine, table). Run directly or through ``benchmarks/run.py``.
``--quick`` stops at 10⁵ codes.
"""

from __future__ import annotations

import os
import platform
import sys
import time

import numpy as np
from _timing import best

TOP = 100
QUERIES = 64


def numpy_search(queries: np.ndarray, words: np.ndarray, k: int) -> np.ndarray:
    """Top-k by popcount of XOR over uint64 words, one query at a time (argpartition, then sort the k)."""
    out = np.empty((len(queries), k), np.int64)
    for i, q in enumerate(queries):
        d = np.bitwise_count(words ^ q).sum(1, dtype=np.int64)
        part = np.argpartition(d, k - 1)[:k]
        out[i] = part[np.argsort(d[part], kind="stable")]
    return out


def main(argv: list[str]) -> None:
    import faiss
    import torch

    from medrun.pipelines.hamming_retrieval import search

    sizes = [10_000, 100_000] + ([] if "--quick" in argv else [1_000_000])
    threads = faiss.omp_get_max_threads()
    rng = np.random.default_rng(0)
    rows = []
    for bits in (16, 64):
        for n in sizes:
            gallery = np.packbits(rng.integers(0, 2, (n, bits), dtype=np.uint8), axis=1)
            queries = np.packbits(rng.integers(0, 2, (QUERIES, bits), dtype=np.uint8), axis=1)
            t0 = time.perf_counter()
            index = search.HammingIndex(gallery, bits, tie_seed=3407)
            build = time.perf_counter() - t0
            f_one = best(lambda ix=index, q=queries: ix.search(q[:1], TOP), repeats=5, warmup=True)
            f_batch = best(lambda ix=index, q=queries: ix.search(q, TOP), repeats=3)
            with search._threads(1):
                f_batch1 = best(lambda ix=index, q=queries: ix.search(q, TOP), repeats=3)
            words = search._words(gallery)
            q_words = search._words(queries)
            n_one = best(lambda q=q_words, w=words: numpy_search(q[:1], w, TOP), repeats=3, warmup=True)
            n_batch = best(lambda q=q_words, w=words: numpy_search(q[:16], w, TOP), repeats=1) * QUERIES / 16
            # same distances (ids may differ among equal distances: NumPy's order is not the tie rule)
            f_ids, f_d = index.search(queries[:4], TOP)
            n_ids = numpy_search(q_words[:4], words, TOP)
            n_d = np.stack([np.bitwise_count(words[ids] ^ q).sum(1) for ids, q in zip(n_ids, q_words[:4], strict=True)])
            assert (np.sort(f_d, 1) == np.sort(n_d, 1)).all()
            rows.append((bits, n, gallery.nbytes, build, f_one, f_batch / QUERIES, f_batch1 / QUERIES, n_one,
                         n_batch / QUERIES))

    from medrun.models.alexnet_hash import AlexNetHash

    torch.set_num_threads(os.cpu_count() or 1)
    net = AlexNetHash(16).eval()
    x = torch.rand(16, 1, 224, 224)
    with torch.no_grad():
        enc = best(lambda: net(x), repeats=2, warmup=True)

    print("## hamming-retrieval: exact Hamming search at 10⁴–10⁶ codes (benchmarks/bench_hamming_retrieval.py)\n")
    print(f"Machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPU cores (faiss threads "
          f"{threads}), Python {platform.python_version()}, faiss {faiss.__version__}, NumPy {np.__version__}. "
          f"Top {TOP} of random codes; batch = {QUERIES} queries in one call (NumPy: 16 queries timed, per query).\n")
    print("| K | gallery codes | index MB | faiss build s | faiss 1 query ms | faiss batched ms/query (all "
          "threads / 1 thread) | NumPy 1 query ms | NumPy ms/query | faiss queries/s (batched, best) |")
    print("|---|---|---|---|---|---|---|---|---|")
    for bits, n, nbytes, build, f1, fb, fb1, n1, nb in rows:
        print(f"| {bits} | {n:,} | {nbytes / 1e6:.2f} | {build:.3f} | {1e3 * f1:.2f} | {1e3 * fb:.3f} / "
              f"{1e3 * fb1:.3f} | {1e3 * n1:.2f} | {1e3 * nb:.2f} | {1 / min(fb, fb1):,.0f} |")
    print(f"\nEncoding (AlexNetHash, 224², K = 16, batch 16, float32 CPU): {16 / enc:.1f} images/s.")


if __name__ == "__main__":
    main(sys.argv[1:])
