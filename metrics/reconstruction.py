"""Image reconstruction and synthesis metrics.

Inputs: ``pred`` and ``target`` images of one shape, numpy arrays or torch tensors. Pixel metrics (``psnr``,
``rmse``, ``mae``, ``mape``) pool every element; ``ssim`` works on one image (H, W) or (D, H, W), or a batch
(N, C, H, W) / (N, C, D, H, W), and returns the mean over images.

- ``psnr`` = 10·log10(data_range² / MSE) in dB; ``data_range`` is required (no guessing from the data); +inf when
  the images are equal. seanet writes it as 20·log10(400/RMSE) with data_range 400 HU.
- ``ssim``: Wang et al. (2004) with an 11×11 (11³ in 3D) Gaussian window, σ = 1.5, K1 = 0.01, K2 = 0.03 and an
  explicit ``data_range``, computed by MONAI's ``SSIMMetric``; the mean is over the valid (border-cropped) window
  positions, as scikit-image's ``structural_similarity(gaussian_weights=True, use_sample_covariance=False)``.
  (torchmetrics' SSIM averages over reflection-padded borders too and differs by ~1e-3; not used.) Cards: seanet
  (×100), cycleadvgan, counterfactual-ldm (loss).
- ``rmse``, ``mae``: root mean squared and mean absolute error, in image units (seanet: HU; counterfactual-ldm L1/L2
  on [0, 1]).
- ``mape`` = 100·mean(|pred − target| / |target|) in percent; ``eps`` guards division by zero (seanet scores it on
  (HU + 1024)/4096 so the target is never ≈ 0).
- ``histogram_kl``: KL(P_real ‖ P_syn) between normalised intensity histograms (256 bins on [0, 1] by default),
  each smoothed by adding ε = 1e-10 to every bin and renormalising. With tissue label maps it returns the mcgan
  card's tissue-weighted average Σ_r λ_r·KL_r, λ_r = voxels of tissue r / all tissue voxels in the synthetic set's
  labels (the test subjects' segmentation), histograms pooled over all images given.
- ``frechet_distance`` between two feature sets (N, F) and (M, F): ‖μ1 − μ2‖² + Tr(Σ1 + Σ2 − 2(Σ1Σ2)^½), sample
  covariances (ddof 1), the FID formula on any features (hybrid-seg FID_seg, counterfactual-ldm FID).
"""

from __future__ import annotations

import math

import numpy as np

from ._arrays import to_numpy


def _pair(pred, target) -> tuple[np.ndarray, np.ndarray]:
    pred, target = to_numpy(pred).astype(np.float64), to_numpy(target).astype(np.float64)
    if pred.shape != target.shape:
        raise ValueError(f"pred and target must have one shape, got {pred.shape} and {target.shape}")
    return pred, target


def mse(pred, target) -> float:
    pred, target = _pair(pred, target)
    return float(np.mean((pred - target) ** 2))


def rmse(pred, target) -> float:
    """Root mean squared error over all elements."""
    return math.sqrt(mse(pred, target))


def mae(pred, target) -> float:
    """Mean absolute error over all elements."""
    pred, target = _pair(pred, target)
    return float(np.mean(np.abs(pred - target)))


def mape(pred, target, eps: float = 1e-12) -> float:
    """Mean absolute percentage error, in percent: 100·mean(|pred − target| / max(|target|, eps))."""
    pred, target = _pair(pred, target)
    return float(100.0 * np.mean(np.abs(pred - target) / np.maximum(np.abs(target), eps)))


def psnr(pred, target, data_range: float) -> float:
    """Peak signal-to-noise ratio in dB for images whose value range is ``data_range``."""
    err = mse(pred, target)
    return math.inf if err == 0 else float(10.0 * math.log10(data_range**2 / err))


def ssim(pred, target, data_range: float, kernel_size: int = 11, sigma: float = 1.5) -> float:
    """Mean SSIM with a Gaussian window (11, σ 1.5). Shapes: (H, W), (D, H, W), (N, C, H, W) or (N, C, D, H, W)."""
    import torch
    from monai.metrics import SSIMMetric

    pred, target = _pair(pred, target)
    if pred.ndim in (2, 3):
        pred, target = pred[None, None], target[None, None]
    if pred.ndim not in (4, 5):
        raise ValueError(f"ssim needs 2D, 3D, (N, C, H, W) or (N, C, D, H, W) images, got shape {pred.shape}")
    metric = SSIMMetric(
        spatial_dims=pred.ndim - 2,
        data_range=float(data_range),
        kernel_type="gaussian",
        win_size=kernel_size,
        kernel_sigma=sigma,
    )
    return float(metric(torch.from_numpy(pred), torch.from_numpy(target)).mean())


def _histogram(values: np.ndarray, bins: int, value_range: tuple[float, float], eps: float) -> np.ndarray:
    h, _ = np.histogram(values, bins=bins, range=value_range)
    p = h / h.sum() if h.sum() else np.full(bins, 1.0 / bins)
    p = p + eps
    return p / p.sum()


def _kl(p: np.ndarray, q: np.ndarray) -> float:
    return float(np.sum(p * np.log(p / q)))


def histogram_kl(
    real,
    syn,
    real_labels=None,
    syn_labels=None,
    tissues=(1, 2, 3),
    bins: int = 256,
    value_range: tuple[float, float] = (0.0, 1.0),
    eps: float = 1e-10,
):
    """KL(P_real ‖ P_syn) of intensity histograms (natural log).

    Without labels: one float over all values of ``real`` and ``syn`` (any shapes). With integer tissue label maps
    ``real_labels`` / ``syn_labels`` (shapes of ``real`` / ``syn``): ``{"kl": {r: KL_r}, "weights": {r: λ_r},
    "average": Σ λ_r KL_r}`` over ``tissues`` (mcgan: 1 CSF, 2 GM, 3 WM).
    """
    real, syn = to_numpy(real).astype(np.float64), to_numpy(syn).astype(np.float64)
    if real_labels is None and syn_labels is None:
        return _kl(_histogram(real, bins, value_range, eps), _histogram(syn, bins, value_range, eps))
    if real_labels is None or syn_labels is None:
        raise ValueError("give both real_labels and syn_labels, or neither")
    real_labels, syn_labels = to_numpy(real_labels), to_numpy(syn_labels)
    counts = {r: int(np.count_nonzero(syn_labels == r)) for r in tissues}
    total = sum(counts.values())
    if total == 0:
        raise ValueError("no tissue voxels in syn_labels")
    kl = {
        r: _kl(
            _histogram(real[real_labels == r], bins, value_range, eps),
            _histogram(syn[syn_labels == r], bins, value_range, eps),
        )
        for r in tissues
    }
    weights = {r: counts[r] / total for r in tissues}
    return {"kl": kl, "weights": weights, "average": float(sum(weights[r] * kl[r] for r in tissues))}


def frechet_distance(features_a, features_b) -> float:
    """Fréchet distance between Gaussians fitted to two feature sets (N, F) and (M, F)."""
    from scipy import linalg

    a, b = to_numpy(features_a).astype(np.float64), to_numpy(features_b).astype(np.float64)
    if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[1]:
        raise ValueError(f"features must be (N, F) and (M, F), got {a.shape} and {b.shape}")
    mu_a, mu_b = a.mean(0), b.mean(0)
    cov_a, cov_b = np.atleast_2d(np.cov(a, rowvar=False)), np.atleast_2d(np.cov(b, rowvar=False))
    covmean = linalg.sqrtm(cov_a @ cov_b)
    if not np.isfinite(covmean).all():  # singular product: regularise as FID implementations do
        offset = np.eye(a.shape[1]) * 1e-6
        covmean = linalg.sqrtm((cov_a + offset) @ (cov_b + offset))
    covmean = np.real(covmean)
    return float(np.sum((mu_a - mu_b) ** 2) + np.trace(cov_a) + np.trace(cov_b) - 2.0 * np.trace(covmean))
