"""Saliency metrics: hand-worked values, scipy's Pearson correlation and numpy's trapezoid rule."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.stats import pearsonr

from medrun.metrics import saliency as SA


def test_drop_and_increase_by_hand():
    y = np.array([0.8, 0.5, 0.4, 1.0])
    y_e = np.array([0.4, 0.6, 0.4, 0.9])
    # drops: 0.5, 0 (increase), 0, 0.1 -> mean 0.15
    assert SA.average_drop(y, y_e) == pytest.approx(15.0)
    assert SA.increase_in_confidence(y, y_e) == pytest.approx(25.0)
    with pytest.raises(ValueError):
        SA.average_drop(y, y_e[:2])


def test_adcc_reproduces_card_style_harmonic_mean():
    # harmonic mean of 0.9, 0.8, 0.7
    assert SA.adcc(30.0, 0.9, 0.2) == pytest.approx(3 / (1 / 0.9 + 1 / 0.8 + 1 / 0.7))
    assert SA.adcc(100.0, 0.9, 0.2) == 0.0
    assert SA.adcc(0.0, 1.0, 0.0) == pytest.approx(1.0)


def test_complexity_and_coherency_by_hand():
    cam = np.array([[[0.0, 1.0], [0.5, 0.5]], [[1.0, 1.0], [1.0, 1.0]]])
    assert SA.complexity(cam) == pytest.approx((0.5 + 1.0) / 2)
    assert SA.coherency(cam[0], cam[0]) == pytest.approx(1.0)
    assert SA.coherency(cam[0], 1 - cam[0]) == pytest.approx(0.0)
    assert SA.coherency(cam[1], cam[0]) == pytest.approx(0.5)  # constant map: rho = 0


@settings(max_examples=30, deadline=None)
@given(st.integers(0, 10_000))
def test_coherency_matches_scipy(seed):
    rng = np.random.default_rng(seed)
    a, b = rng.random((3, 7, 9)), rng.random((3, 7, 9))
    b = 0.5 * a + 0.5 * b
    ref = np.mean([(1 + pearsonr(a[i].ravel(), b[i].ravel())[0]) / 2 for i in range(3)])
    assert SA.coherency(a, b) == pytest.approx(ref)


def _summing_model(batch):
    return batch.reshape(len(batch), -1).sum(1)


def test_deletion_insertion_by_hand():
    image = np.array([[4.0, 3.0], [2.0, 1.0]])
    sal = image.copy()  # perfect saliency: delete the largest first
    # step 0.25 -> remaining sums 10, 6, 3, 1, 0 ; insertion 0, 4, 7, 9, 10
    d = SA.deletion_curve(_summing_model, image, sal, step=0.25)
    np.testing.assert_allclose(d, [10, 6, 3, 1, 0])
    np.testing.assert_allclose(SA.insertion_curve(_summing_model, image, sal, step=0.25), [0, 4, 7, 9, 10])
    assert SA.deletion_auc(_summing_model, image, sal, step=0.25) == pytest.approx(0.25 * (8 + 4.5 + 2 + 0.5))
    assert SA.insertion_auc(_summing_model, image, sal, step=0.25) == pytest.approx(0.25 * (2 + 5.5 + 8 + 9.5))
    blurred = np.full_like(image, 2.5)
    assert SA.deletion_curve(_summing_model, image, sal, blurred, step=0.5)[-1] == pytest.approx(10.0)
    with pytest.raises(ValueError):
        SA.deletion_auc(_summing_model, image, np.ones((3, 3)))


@settings(max_examples=20, deadline=None)
@given(st.integers(0, 10_000))
def test_channels_and_trapezoid(seed):
    rng = np.random.default_rng(seed)
    image = rng.random((3, 8, 8))
    sal = rng.random((8, 8))
    w = rng.random((3, 8, 8))

    def model(batch):
        return (batch * w).reshape(len(batch), -1).sum(1)

    curve = SA.insertion_curve(model, image, sal)
    assert len(curve) == 21 and curve[0] == pytest.approx(0.0) and curve[-1] == pytest.approx(model(image[None])[0])
    assert SA.insertion_auc(model, image, sal) == pytest.approx(np.trapezoid(curve, np.linspace(0, 1, 21)))
    # the insertion and deletion curves with the same order sum to the full score at every step
    del_curve = SA.deletion_curve(model, image, sal)
    np.testing.assert_allclose(curve + del_curve, model(image[None])[0])
