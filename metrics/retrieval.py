"""Multilabel retrieval metrics over a Hamming-ranked gallery (hamming-retrieval card).

Shapes: query codes (Q, K) and gallery codes (G, K) in {0, 1} or {−1, +1}; multi-hot labels (Q, L) and (G, L).
Relevance of gallery item r to query q is R_q(r) = |y_q ∩ y_r| (shared labels; :func:`relevance`). The metric
functions take ``rel``, the relevance of the *whole gallery in ranked order*, shape (Q, G) (:func:`ranked_relevance`),
and return the mean over queries.

- ``hamming_rank``: gallery order per query by Hamming distance. Ties follow the card's public code: the gallery is
  shuffled with a seeded RNG (default seed 3407) and then stable-sorted by distance.
- ``ndcg_at_k``: DCG@k = Σ_{r≤k} (2^{R(r)} − 1)/log2(r + 1). ``idcg="retrieved"`` (card default, the authors'
  script) divides by the DCG of the retrieved top-k re-sorted by relevance; ``idcg="gallery"`` (textbook) by the
  DCG of the best k items of the whole gallery. nDCG = 0 when iDCG = 0.
- ``acg_at_k``: mean R over the top k.
- ``wmap_at_k``: per query Σ_{r≤k} 1[R(r)>0]·ACG_q@r / Σ_{r≤k} 1[R(r)>0] (ACG_q@r the query's own mean R over
  the first r items); 0 when nothing in the top k is relevant.
- ``average_precision_at_k``: binary relevance (R > 0); AP@k = Σ_{r≤k} P@r·1[rel_r] / (relevant items in the top
  k), 0 when none (the hashing-literature mAP@k convention).
"""

from __future__ import annotations

import numpy as np

from ._arrays import to_numpy


def _bits(codes) -> np.ndarray:
    c = to_numpy(codes)
    return (c > 0).astype(np.uint8) if c.min(initial=0) < 0 else (c != 0).astype(np.uint8)


def hamming_distance(query_codes, gallery_codes) -> np.ndarray:
    """Hamming distances (Q, G) between codes in {0, 1} or {−1, +1}."""
    q, g = _bits(query_codes), _bits(gallery_codes)
    return (q[:, None, :] != g[None, :, :]).sum(-1)


def hamming_rank(query_codes, gallery_codes, seed: int | None = 3407) -> tuple[np.ndarray, np.ndarray]:
    """Gallery indices (Q, G) ordered by Hamming distance and the sorted distances (Q, G).

    Ties: the gallery is permuted by ``np.random.default_rng(seed)`` and stable-sorted (``seed=None``: no shuffle,
    ties keep gallery order).
    """
    d = hamming_distance(query_codes, gallery_codes)
    perm = np.arange(d.shape[1]) if seed is None else np.random.default_rng(seed).permutation(d.shape[1])
    order = perm[np.argsort(d[:, perm], axis=1, kind="stable")]
    return order, np.take_along_axis(d, order, axis=1)


def relevance(query_labels, gallery_labels) -> np.ndarray:
    """Shared-label counts (Q, G) of multi-hot label matrices."""
    q, g = to_numpy(query_labels).astype(np.int64), to_numpy(gallery_labels).astype(np.int64)
    return (q > 0).astype(np.int64) @ (g > 0).astype(np.int64).T


def ranked_relevance(query_labels, gallery_labels, order) -> np.ndarray:
    """Relevance (Q, G) of the gallery in the ranked ``order`` given by :func:`hamming_rank`."""
    return np.take_along_axis(relevance(query_labels, gallery_labels), to_numpy(order), axis=1)


def _rel(rel, k: int) -> np.ndarray:
    rel = to_numpy(rel).astype(np.float64)
    if rel.ndim == 1:
        rel = rel[None]
    if k < 1 or k > rel.shape[1]:
        raise ValueError(f"k must be in 1..{rel.shape[1]}, got {k}")
    return rel


def _dcg(gains: np.ndarray) -> np.ndarray:
    discounts = 1.0 / np.log2(np.arange(2, gains.shape[1] + 2))
    return ((2.0**gains - 1.0) * discounts).sum(axis=1)


def ndcg_at_k(rel, k: int, idcg: str = "retrieved") -> float:
    """Mean nDCG@k over queries; ``rel`` (Q, G) ranked relevance; ``idcg`` in ``retrieved | gallery``."""
    rel = _rel(rel, k)
    top = rel[:, :k]
    dcg = _dcg(top)
    if idcg == "retrieved":
        ideal = _dcg(-np.sort(-top, axis=1))
    elif idcg == "gallery":
        ideal = _dcg(-np.sort(-rel, axis=1)[:, :k])
    else:
        raise ValueError(f"idcg must be retrieved or gallery, not {idcg!r}")
    scores = np.divide(dcg, ideal, out=np.zeros_like(dcg), where=ideal > 0)
    return float(scores.mean())


def acg_at_k(rel, k: int) -> float:
    """Mean over queries of the average relevance of the top k."""
    return float(_rel(rel, k)[:, :k].mean())


def wmap_at_k(rel, k: int) -> float:
    """Weighted mAP@k (card Eq. 18 with the per-query ACG)."""
    top = _rel(rel, k)[:, :k]
    acg = np.cumsum(top, axis=1) / np.arange(1, k + 1)
    hit = top > 0
    n_hit = hit.sum(axis=1)
    num = (acg * hit).sum(axis=1)
    return float(np.divide(num, n_hit, out=np.zeros_like(num), where=n_hit > 0).mean())


def average_precision_at_k(rel, k: int) -> float:
    """mAP@k with binary relevance R > 0; a query with no relevant item in its top k scores 0."""
    hit = (_rel(rel, k)[:, :k] > 0).astype(np.float64)
    precision = np.cumsum(hit, axis=1) / np.arange(1, k + 1)
    n_hit = hit.sum(axis=1)
    num = (precision * hit).sum(axis=1)
    return float(np.divide(num, n_hit, out=np.zeros_like(num), where=n_hit > 0).mean())
