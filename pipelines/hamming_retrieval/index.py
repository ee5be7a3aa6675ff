"""hamming-retrieval ``index``: encode a split (the gallery) of a finished train run into packed binary codes.

Writes ``index/codes.npz``: ``codes`` (G, K/8) uint8 (``np.packbits`` of b = 1[h > 0]), ``labels`` (G, L) uint8,
``names`` (image file names), ``label_names``, ``bits`` (K), ``img_size`` and ``tie_seed`` (−1: none); and
``index/gallery.csv`` (image, labels, code as hex). The faiss ``IndexBinaryFlat`` over the codes is rebuilt when
the index is searched (building a flat index is a copy of the codes). A self-check searches a sample of the
indexed codes with faiss and with the NumPy popcount reference and reports whether both give the same lists.
"""

from __future__ import annotations

import time

import numpy as np

from ..report import paper_md
from . import figures, search

KEYS = ("n_codes", "code_bits", "index_bytes", "distinct_codes", "encode_images_per_s", "faiss_matches_bruteforce")


def index(p) -> dict:
    m, ctx = p.m, p.ctx
    part = p.splits()[m.index.split]
    net = p.trained_model()
    t0 = time.perf_counter()
    h = p.encode(net, part, m.index.batch_size)
    secs = time.perf_counter() - t0
    bits = search.to_bits(h)
    packed = search.pack(bits)
    k = m.model.code_bits
    ctx.write_npz("index/codes.npz", codes=packed, labels=part.y.astype(np.uint8), names=np.array(part.names),
                  label_names=np.array(p.labels), bits=np.array(k), img_size=np.array(m.dataset.img_size),
                  tie_seed=np.array(-1 if m.eval.tie_seed is None else m.eval.tie_seed))
    ctx.write_csv("index/gallery.csv", [{"image": n, "labels": "|".join(lab for lab, v in zip(p.labels, y, strict=True)
                                                                        if v), "code": c.tobytes().hex()}
                                        for n, y, c in zip(part.names, part.y, packed, strict=True)])
    figures.bit_balance(ctx, bits, k)
    sample = packed[np.random.default_rng(0).permutation(len(packed))[:64]]
    kk = min(10, len(packed))
    f_ids, f_d = search.HammingIndex(packed, k, m.eval.tie_seed).search(sample, kk)
    b_ids, b_d = search.brute_force(sample, packed, kk, m.eval.tie_seed)
    same = bool((f_ids == b_ids).all() and (f_d == b_d).all())
    distinct = int(len(np.unique(packed, axis=0))) if len(packed) else 0
    ctx.log(f"indexed {len(packed)} {m.index.split} images as {k}-bit codes ({distinct} distinct) in {secs:.1f} s; "
            f"faiss = brute force on {len(sample)} queries: {same}")
    metrics = {"n_codes": len(packed), "code_bits": k, "bytes_per_code": k // 8, "index_bytes": int(packed.nbytes),
               "distinct_codes": distinct, "bit_balance_min": float(bits.mean(0).min()) if len(bits) else 0.0,
               "bit_balance_max": float(bits.mean(0).max()) if len(bits) else 0.0,
               "encode_images_per_s": round(len(packed) / max(secs, 1e-9), 1), "faiss_matches_bruteforce": same,
               "split": m.index.split}
    ctx.write_text("paper.md", paper_md(ctx.spec, m, metrics, ctx, title="hamming-retrieval index", expect={},
                                        keys=list(KEYS), sections=[
        f"The {m.index.split} split as {k}-bit codes packed into {k // 8} bytes each (`index/codes.npz`), searched "
        "exactly by Hamming distance with faiss `IndexBinaryFlat`; `figures/bit_balance.png` shows how often each "
        "bit is set. The paper reports no index figures."]))
    return metrics
