"""Depth errors: a hand-worked image, masking and capping, scale invariance, and a per-pixel loop reference."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from medrun.metrics.depth import depth_errors


def test_by_hand_without_scaling():
    gt = np.array([[1.0, 2.0], [4.0, 10.0]])
    pred = np.array([[1.0, 2.5], [2.0, 10.0]])
    e = depth_errors(pred, gt, median_scaling=False)
    assert e["abs_rel"] == pytest.approx((0 + 0.25 + 0.5 + 0) / 4)
    assert e["sq_rel"] == pytest.approx((0 + 0.25 / 2 + 4 / 4 + 0) / 4)
    assert e["rmse"] == pytest.approx(math.sqrt((0.25 + 4) / 4))
    assert e["rmse_log"] == pytest.approx(math.sqrt((math.log(2 / 2.5) ** 2 + math.log(2) ** 2) / 4))
    # ratios 1, 1.25, 2, 1 -> below 1.25: 2/4; below 1.5625: 3/4; below 1.953: 3/4
    assert (e["a1"], e["a2"], e["a3"]) == (0.5, 0.75, 0.75)
    assert e["scale"] == 1.0 and e["n"] == 4


def test_median_scaling_mask_and_cap():
    gt = np.array([3.0, 6.0, 9.0, 0.0, 200.0])
    pred = np.array([1.0, 2.0, 3.0, 5.0, 7.0])
    e = depth_errors(pred, gt, max_depth=150.0)  # the zero and the 200 are invalid
    assert e["n"] == 3 and e["scale"] == pytest.approx(3.0)
    assert e["abs_rel"] == pytest.approx(0.0) and e["a1"] == 1.0
    e = depth_errors(torch.tensor(pred), torch.tensor(gt), mask=np.array([1, 1, 0, 1, 0], bool))
    assert e["n"] == 2 and e["scale"] == pytest.approx(4.5 / 1.5)
    empty = depth_errors(pred, np.zeros(5))
    assert empty["n"] == 0 and math.isnan(empty["abs_rel"])
    with pytest.raises(ValueError):
        depth_errors(np.array([-1.0, 1.0]), np.array([1.0, 1.0]), median_scaling=False)


def _reference(pred, gt):
    """Pixel-by-pixel loop with median scaling (textbook form)."""
    pairs = [(p, g) for p, g in zip(pred.ravel(), gt.ravel(), strict=True) if g > 0]
    s = np.median([g for _, g in pairs]) / np.median([p for p, _ in pairs])
    out = dict.fromkeys(("abs_rel", "sq_rel", "se", "sle", "a1", "a2", "a3"), 0.0)
    for p, g in pairs:
        p = p * s
        out["abs_rel"] += abs(g - p) / g
        out["sq_rel"] += (g - p) ** 2 / g
        out["se"] += (g - p) ** 2
        out["sle"] += (math.log(g) - math.log(p)) ** 2
        r = max(g / p, p / g)
        for i, k in enumerate(("a1", "a2", "a3")):
            out[k] += r < 1.25 ** (i + 1)
    n = len(pairs)
    return {
        "abs_rel": out["abs_rel"] / n,
        "sq_rel": out["sq_rel"] / n,
        "rmse": math.sqrt(out["se"] / n),
        "rmse_log": math.sqrt(out["sle"] / n),
        "a1": out["a1"] / n,
        "a2": out["a2"] / n,
        "a3": out["a3"] / n,
    }


@settings(max_examples=40, deadline=None)
@given(st.integers(0, 10_000), st.floats(0.01, 100.0))
def test_matches_loop_reference_and_is_scale_invariant(seed, factor):
    rng = np.random.default_rng(seed)
    gt = rng.uniform(20, 150, (9, 11))
    gt[rng.random(gt.shape) < 0.1] = 0.0
    gt[0, 0] = 50.0
    pred = gt * rng.lognormal(0, 0.3, gt.shape) + 0.1
    ours = depth_errors(pred, gt)
    ref = _reference(pred, gt)
    for k, v in ref.items():
        assert ours[k] == pytest.approx(v, rel=1e-9, abs=1e-12)
    scaled = depth_errors(pred * factor, gt)
    for k in ref:
        assert scaled[k] == pytest.approx(ours[k], rel=1e-9, abs=1e-12)
