"""Pocket success rates, DCR and attack success rate: hand-worked cases and brute-force references."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.spatial.distance import cdist

from medrun.metrics.attack import attack_success_rate
from medrun.metrics.pockets import dca, dcc, dvo
from medrun.metrics.privacy import dcr

LIG_A = np.array([[0.0, 0.0, 0.0], [2.0, 0.0, 0.0]])  # centroid (1, 0, 0)
LIG_B = np.array([[10.0, 10.0, 10.0], [10.0, 14.0, 10.0]])  # centroid (10, 12, 10)


def test_pockets_by_hand():
    centres = [np.array([1.0, 3.9, 0.0]), np.array([10.0, 17.0, 10.0]), None]
    ligs = [LIG_A, LIG_B, LIG_A]
    # site 1: DCC 3.9 ok, DCA sqrt(1+15.21)=4.03 fails; site 2: DCC 5 fails, DCA 3 ok; site 3: no prediction
    assert dcc(centres, ligs) == pytest.approx(100 / 3)
    assert dca(centres, ligs) == pytest.approx(100 / 3)
    assert dca(centres, ligs, threshold=4.1) == pytest.approx(200 / 3)
    # several candidates for a site: success if any one is
    assert dcc([np.array([[50.0, 0, 0], [1.0, 0, 0]])], [LIG_A]) == 100.0
    p = np.zeros((4, 4, 4), bool)
    t = np.zeros((4, 4, 4), bool)
    p[:2] = True
    t[1:3] = True  # IoU 16/48
    assert dvo([p, p, p], [t, t, t], centres, ligs) == pytest.approx(100 * (1 / 3) / 3)
    assert math.isnan(dcc([], []))


def test_dcr_by_hand_and_brute_force():
    real = np.array([[0.0, 0.0], [3.0, 4.0]])
    syn = np.array([[0.0, 1.0], [3.0, 0.0]])
    assert dcr(syn, real) == pytest.approx((1 + 3) / 2)
    assert dcr(real, leave_one_out=True) == pytest.approx(5.0)
    np.testing.assert_allclose(dcr(syn, real, return_all=True), [1, 3])
    rng = np.random.default_rng(0)
    s, r = rng.normal(size=(50, 6)), rng.normal(size=(80, 6))
    assert dcr(s, r) == pytest.approx(cdist(s, r).min(1).mean())
    d = cdist(r, r)
    np.fill_diagonal(d, np.inf)
    assert dcr(r, leave_one_out=True) == pytest.approx(d.min(1).mean())
    with pytest.raises(ValueError):
        dcr(s)


def test_attack_success_rate_by_hand():
    y = np.array([0, 1, 1, 0, 1])
    clean = np.array([0, 1, 0, 0, 1])  # 4 correct
    adv = np.array([1, 1, 1, 1, 0])  # flips 3 of the 4 correct ones; sample 2 is ignored
    out = attack_success_rate(y, clean, adv)
    assert out == {"asr": 0.75, "clean_accuracy": 0.8, "n_clean_correct": 4, "n": 5}
    assert math.isnan(attack_success_rate([1], [0], [0])["asr"])
    with pytest.raises(ValueError):
        attack_success_rate([1, 0], [1], [1])


@settings(max_examples=30, deadline=None)
@given(st.integers(0, 10_000))
def test_attack_success_rate_matches_loop(seed):
    rng = np.random.default_rng(seed)
    y, c, a = rng.integers(0, 3, (3, 40))
    kept = [(yi, ai) for yi, ci, ai in zip(y, c, a, strict=True) if ci == yi]
    ref = sum(ai != yi for yi, ai in kept) / len(kept) if kept else float("nan")
    got = attack_success_rate(y, c, a)["asr"]
    assert (math.isnan(got) and math.isnan(ref)) or got == pytest.approx(ref)


@settings(max_examples=30, deadline=None)
@given(st.integers(0, 10_000))
def test_pocket_distances_match_brute_force(seed):
    rng = np.random.default_rng(seed)
    ligs = [rng.normal(size=(int(rng.integers(3, 9)), 3)) * 3 for _ in range(6)]
    centres = [lig.mean(0) + rng.normal(size=3) * 3 for lig in ligs]
    ref_dcc = np.mean([np.linalg.norm(c - lig.mean(0)) <= 4 for c, lig in zip(centres, ligs, strict=True)])
    ref_dca = np.mean([cdist(c[None], lig).min() <= 4 for c, lig in zip(centres, ligs, strict=True)])
    assert dcc(centres, ligs) == pytest.approx(100 * ref_dcc)
    assert dca(centres, ligs) == pytest.approx(100 * ref_dca)
