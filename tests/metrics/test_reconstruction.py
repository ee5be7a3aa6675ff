"""Reconstruction metrics against scikit-image, MONAI, scipy and hand-worked values."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from monai.metrics import PSNRMetric, SSIMMetric
from scipy.stats import entropy
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from medrun.metrics import reconstruction as R


def test_pixel_metrics_by_hand():
    t = np.array([1.0, 2.0, 4.0, 8.0])
    p = np.array([2.0, 2.0, 2.0, 8.0])
    assert R.mae(p, t) == pytest.approx(0.75)
    assert R.rmse(p, t) == pytest.approx(math.sqrt(5 / 4))
    assert R.mape(p, t) == pytest.approx(100 * (1 + 0 + 0.5 + 0) / 4)
    assert R.psnr(p, t, data_range=8.0) == pytest.approx(10 * math.log10(64 / 1.25))
    assert R.psnr(t, t, data_range=1.0) == math.inf
    assert R.mae(torch.tensor(p), torch.tensor(t)) == pytest.approx(0.75)
    with pytest.raises(ValueError):
        R.mae(p, t[:3])


@settings(max_examples=15, deadline=None)
@given(st.integers(0, 10_000), st.sampled_from([(32, 40), (24, 24)]), st.sampled_from([1.0, 255.0, 400.0]))
def test_psnr_ssim_match_skimage_and_monai_2d(seed, shape, data_range):
    rng = np.random.default_rng(seed)
    target = rng.random(shape) * data_range
    pred = np.clip(target + rng.normal(0, 0.1 * data_range, shape), 0, data_range)
    assert R.psnr(pred, target, data_range) == pytest.approx(
        peak_signal_noise_ratio(target, pred, data_range=data_range)
    )
    monai_psnr = PSNRMetric(max_val=data_range)(torch.tensor(pred[None, None]), torch.tensor(target[None, None]))
    assert R.psnr(pred, target, data_range) == pytest.approx(float(monai_psnr), rel=1e-5)
    ref = structural_similarity(
        target, pred, data_range=data_range, gaussian_weights=True, sigma=1.5, use_sample_covariance=False
    )
    assert R.ssim(pred, target, data_range) == pytest.approx(ref, abs=1e-5)
    m = SSIMMetric(spatial_dims=2, data_range=data_range, kernel_type="gaussian", win_size=11, kernel_sigma=1.5)
    assert R.ssim(pred, target, data_range) == pytest.approx(
        float(m(torch.tensor(pred[None, None]), torch.tensor(target[None, None]))), abs=1e-5
    )


def test_ssim_3d_and_batches():
    rng = np.random.default_rng(3)
    target = rng.random((16, 20, 18))
    pred = np.clip(target + rng.normal(0, 0.05, target.shape), 0, 1)
    ref = structural_similarity(
        target, pred, data_range=1.0, gaussian_weights=True, sigma=1.5, use_sample_covariance=False
    )
    assert R.ssim(pred, target, 1.0) == pytest.approx(ref, abs=1e-5)
    assert R.ssim(target, target, 1.0) == pytest.approx(1.0)
    batch_p, batch_t = pred[:2, None], target[:2, None]  # (2, 1, 20, 18)
    each = [R.ssim(batch_p[i, 0], batch_t[i, 0], 1.0) for i in range(2)]
    assert R.ssim(batch_p, batch_t, 1.0) == pytest.approx(np.mean(each), abs=1e-6)
    with pytest.raises(ValueError):
        R.ssim(np.zeros(5), np.zeros(5), 1.0)


def test_histogram_kl_identical_and_against_scipy():
    rng = np.random.default_rng(0)
    x = rng.random(5000)
    y = rng.beta(2, 5, 5000)
    assert R.histogram_kl(x, x) == pytest.approx(0.0, abs=1e-12)
    hx, _ = np.histogram(x, 256, (0, 1))
    hy, _ = np.histogram(y, 256, (0, 1))
    ref = entropy(hx / hx.sum() + 1e-10, hy / hy.sum() + 1e-10)
    assert R.histogram_kl(x, y) == pytest.approx(ref)


def test_histogram_kl_tissue_weighted():
    rng = np.random.default_rng(1)
    labels = rng.integers(0, 4, (40, 40))  # 0 background
    real = rng.random((40, 40))
    syn = np.where(labels == 2, rng.random((40, 40)) * 0.5, real)  # only GM differs
    out = R.histogram_kl(real, syn, labels, labels)
    n = {r: np.count_nonzero(labels == r) for r in (1, 2, 3)}
    assert sum(out["weights"].values()) == pytest.approx(1.0)
    assert out["weights"][2] == pytest.approx(n[2] / sum(n.values()))
    assert out["kl"][1] == pytest.approx(0.0, abs=1e-9) and out["kl"][3] == pytest.approx(0.0, abs=1e-9)
    assert out["average"] == pytest.approx(out["weights"][2] * out["kl"][2])
    assert out["kl"][2] == pytest.approx(R.histogram_kl(real[labels == 2], syn[labels == 2]))
    with pytest.raises(ValueError):
        R.histogram_kl(real, syn, labels, None)


def test_frechet_distance_by_hand_and_eigen():
    # 1-D: FD = (mu1-mu2)^2 + (s1 - s2)^2 with sample standard deviations
    a = np.array([[0.0], [2.0]])  # mean 1, var 2
    b = np.array([[3.0], [5.0], [7.0]])  # mean 5, var 4
    assert R.frechet_distance(a, b) == pytest.approx(16 + (math.sqrt(2) - 2) ** 2)
    rng = np.random.default_rng(2)
    x = rng.normal(size=(200, 5))
    y = rng.normal(size=(150, 5)) @ rng.normal(size=(5, 5)) + 1.0
    cx, cy = np.cov(x, rowvar=False), np.cov(y, rowvar=False)
    # Tr sqrt(Cx Cy) = sum of square roots of the eigenvalues of Cx Cy (all real, non-negative)
    tr = np.sum(np.sqrt(np.clip(np.linalg.eigvals(cx @ cy).real, 0, None)))
    ref = np.sum((x.mean(0) - y.mean(0)) ** 2) + np.trace(cx) + np.trace(cy) - 2 * tr
    assert R.frechet_distance(x, y) == pytest.approx(ref, rel=1e-8)
    assert R.frechet_distance(x, x) == pytest.approx(0.0, abs=1e-8)
