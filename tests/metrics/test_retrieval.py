"""Retrieval metrics: a hand-worked list, scikit-learn's nDCG and AP, and a brute-force Hamming ranking."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.metrics import average_precision_score, ndcg_score

from medrun.metrics import retrieval as RT

REL = np.array([[2, 0, 1, 3]])


def test_hand_worked_list():
    dcg = 3 + 0 + 1 / 2  # (2^2-1)/log2 2 + 0 + (2^1-1)/log2 4
    assert RT.ndcg_at_k(REL, 3) == pytest.approx(dcg / (3 + 1 / math.log2(3)))
    assert RT.ndcg_at_k(REL, 3, idcg="gallery") == pytest.approx(dcg / (7 + 3 / math.log2(3) + 1 / 2))
    assert RT.acg_at_k(REL, 3) == pytest.approx(1.0)
    assert RT.wmap_at_k(REL, 3) == pytest.approx((2 + 1) / 2)  # ACG@1 = 2, ACG@3 = 1 at the two hits
    assert RT.average_precision_at_k(REL, 3) == pytest.approx((1 + 2 / 3) / 2)
    assert RT.ndcg_at_k(REL, 4) == pytest.approx(RT.ndcg_at_k(REL, 4, idcg="gallery"))


def test_degenerate_and_errors():
    zero = np.zeros((2, 5))
    assert RT.ndcg_at_k(zero, 3) == 0.0 and RT.wmap_at_k(zero, 3) == 0.0
    assert RT.average_precision_at_k(zero, 5) == 0.0 and RT.acg_at_k(zero, 2) == 0.0
    with pytest.raises(ValueError):
        RT.ndcg_at_k(REL, 5)
    with pytest.raises(ValueError):
        RT.ndcg_at_k(REL, 2, idcg="ideal")


def test_hamming_rank_ties_follow_seeded_shuffle():
    q = np.array([[1, 1, -1, -1]])
    g = np.array([[1, 1, -1, -1], [1, 1, 1, -1], [-1, 1, -1, -1], [-1, -1, 1, 1], [1, 1, -1, 1]])
    d = RT.hamming_distance(q, g)
    np.testing.assert_array_equal(d, [[0, 1, 1, 4, 1]])
    order, dist = RT.hamming_rank(q, g, seed=None)
    np.testing.assert_array_equal(order, [[0, 1, 2, 4, 3]])
    np.testing.assert_array_equal(dist, [[0, 1, 1, 1, 4]])
    perm = np.random.default_rng(3407).permutation(5)
    tied = [i for i in perm if d[0, i] == 1]
    order, _ = RT.hamming_rank(q, g)
    np.testing.assert_array_equal(order[0], [0, *tied, 3])
    # {0,1} codes give the same distances as ±1 codes
    np.testing.assert_array_equal(RT.hamming_distance((q > 0).astype(int), (g > 0).astype(int)), d)


@settings(max_examples=40, deadline=None)
@given(st.integers(0, 10_000), st.integers(5, 40), st.integers(1, 6))
def test_against_sklearn(seed, g, labels):
    rng = np.random.default_rng(seed)
    rel = rng.integers(0, labels + 1, (4, g)) * (rng.random((4, g)) < 0.6)
    k = int(rng.integers(1, g + 1))
    scores = np.tile(np.arange(g, 0, -1), (4, 1)).astype(float)  # ranked order, no ties
    gains = 2.0**rel - 1
    # textbook nDCG: sklearn with exponential gains over the whole gallery
    per_query_gallery = [
        ndcg_score(gains[i : i + 1], scores[i : i + 1], k=k) if gains[i].any() else 0.0 for i in range(4)
    ]
    assert RT.ndcg_at_k(rel, k, idcg="gallery") == pytest.approx(np.mean(per_query_gallery))
    # card's nDCG: sklearn restricted to the retrieved top k
    per_query_ret = [
        ndcg_score(gains[i : i + 1, :k], scores[i : i + 1, :k])
        if k > 1 and gains[i, :k].any()
        else float(gains[i, 0] > 0)
        for i in range(4)
    ]
    assert RT.ndcg_at_k(rel, k) == pytest.approx(np.mean(per_query_ret))
    # AP@k: sklearn's AP on the truncated ranked list
    per_query_ap = [
        average_precision_score(rel[i, :k] > 0, scores[i, :k]) if (rel[i, :k] > 0).any() else 0.0 for i in range(4)
    ]
    assert RT.average_precision_at_k(rel, k) == pytest.approx(np.mean(per_query_ap))
    assert RT.acg_at_k(rel, k) == pytest.approx(rel[:, :k].mean())


@settings(max_examples=30, deadline=None)
@given(st.integers(0, 10_000))
def test_ranking_pipeline_matches_brute_force(seed):
    rng = np.random.default_rng(seed)
    qc, gc = rng.integers(0, 2, (3, 16)), rng.integers(0, 2, (30, 16))
    ql, gl = rng.integers(0, 2, (3, 5)), rng.integers(0, 2, (30, 5))
    order, dist = RT.hamming_rank(qc, gc)
    for i in range(3):
        brute = [int(np.sum(qc[i] != gc[j])) for j in range(30)]
        assert list(dist[i]) == sorted(brute)
        assert sorted(order[i]) == list(range(30))
    rel = RT.ranked_relevance(ql, gl, order)
    for i in range(3):
        assert list(rel[i]) == [int(np.sum(ql[i] & gl[j])) for j in order[i]]
    # wMAP by a direct loop
    k = 10
    vals = []
    for i in range(3):
        num = den = 0.0
        for r in range(1, k + 1):
            if rel[i, r - 1] > 0:
                num += rel[i, :r].mean()
                den += 1
        vals.append(num / den if den else 0.0)
    assert RT.wmap_at_k(rel, k) == pytest.approx(np.mean(vals))
