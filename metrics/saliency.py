"""Saliency-map (CAM) faithfulness metrics.

Poppi et al. (2021) set, as the svd-gradcam card defines it, over N images; ``y`` (N,) is the model's score for the
explained class on the original image and ``y_e`` (N,) on the explanation map E = x ⊙ L (L the upsampled CAM
normalised to [0, 1]):
- ``average_drop`` = (100/N) Σ max(0, y − y_E)/y, in percent.
- ``increase_in_confidence`` (Average Increase) = (100/N) Σ 1[y < y_E], in percent.
- ``coherency`` = mean over images of (1 + ρ(L(E), L(x)))/2, ρ the Pearson correlation of the CAM of the masked image
  with the original CAM (a constant map has no correlation: ρ = 0 by convention), in [0, 1].
- ``complexity`` = mean over images of mean(L) (L1 norm over pixel count), in [0, 1] for maps in [0, 1].
- ``adcc`` = 3 / (1/Coherency + 1/(1 − Complexity) + 1/(1 − AvgDrop/100)), the harmonic mean computed from the
  *averaged* terms (the card: this reproduces Table 2, e.g. 86.26 % for SVD-Grad-CAM); in [0, 1], ×100 for tables.
CAM shapes: (N, H, W) (or (H, W) for one image).

Deletion / insertion (Petsiuk et al. 2018; hybrid-seg card: pixels replaced by a blurred image in 5 % steps):
pixels are ordered by descending saliency; deletion replaces the top fraction f of ``image`` by ``baseline``,
insertion starts from ``baseline`` and restores the top fraction f of ``image``; f = 0, step, …, 1. ``predict``
maps a batch (B, *image.shape) to the explained class's scores (B,). The AUC is the trapezoidal area under
score-vs-f on [0, 1] (lower is better for deletion, higher for insertion).
"""

from __future__ import annotations

import numpy as np

from ._arrays import to_numpy


def _scores(y, y_e) -> tuple[np.ndarray, np.ndarray]:
    y, y_e = to_numpy(y).astype(np.float64).ravel(), to_numpy(y_e).astype(np.float64).ravel()
    if y.shape != y_e.shape:
        raise ValueError(f"y and y_e must have one length, got {y.shape} and {y_e.shape}")
    return y, y_e


def average_drop(y, y_e) -> float:
    """Average Drop in percent (lower is better)."""
    y, y_e = _scores(y, y_e)
    return float(100.0 * np.mean(np.maximum(0.0, y - y_e) / y))


def increase_in_confidence(y, y_e) -> float:
    """Average Increase in percent: share of images whose score rises on the explanation map."""
    y, y_e = _scores(y, y_e)
    return float(100.0 * np.mean(y < y_e))


def _maps(cam) -> np.ndarray:
    cam = to_numpy(cam).astype(np.float64)
    return cam[None] if cam.ndim == 2 else cam


def coherency(cam_masked, cam) -> float:
    """Mean of (1 + Pearson(cam_masked, cam))/2 over images."""
    a, b = _maps(cam_masked), _maps(cam)
    if a.shape != b.shape:
        raise ValueError(f"CAMs must have one shape, got {a.shape} and {b.shape}")
    values = []
    for u, v in zip(a.reshape(len(a), -1), b.reshape(len(b), -1), strict=True):
        u, v = u - u.mean(), v - v.mean()
        den = np.sqrt((u * u).sum() * (v * v).sum())
        rho = float((u * v).sum() / den) if den > 0 else 0.0
        values.append((1.0 + rho) / 2.0)
    return float(np.mean(values))


def complexity(cam) -> float:
    """Mean over images of the mean CAM value."""
    return float(_maps(cam).reshape(len(_maps(cam)), -1).mean(axis=1).mean())


def adcc(avg_drop: float, coherency_value: float, complexity_value: float) -> float:
    """ADCC from the averaged terms (``avg_drop`` in percent, the others in [0, 1]); 0 if a term is 0."""
    terms = (coherency_value, 1.0 - complexity_value, 1.0 - avg_drop / 100.0)
    if min(terms) <= 0:
        return 0.0
    return float(3.0 / sum(1.0 / t for t in terms))


def _curve(predict, image, saliency, baseline, step: float, insert: bool) -> np.ndarray:
    image = to_numpy(image).astype(np.float64)
    sal = to_numpy(saliency).astype(np.float64)
    base = np.zeros_like(image) if baseline is None else to_numpy(baseline).astype(np.float64)
    spatial = sal.shape
    if image.shape[-len(spatial) :] != spatial or base.shape != image.shape:
        raise ValueError(f"saliency {spatial} must match the last axes of image {image.shape} (and baseline)")
    order = np.argsort(-sal.ravel(), kind="stable")
    n_pix = order.size
    fractions = np.linspace(0.0, 1.0, int(round(1.0 / step)) + 1)
    batch = []
    for f in fractions:
        sel = np.zeros(n_pix, bool)
        sel[order[: int(round(f * n_pix))]] = True
        sel = sel.reshape(spatial)
        start, fill = (base, image) if insert else (image, base)
        batch.append(np.where(sel, fill, start))
    return to_numpy(predict(np.stack(batch))).astype(np.float64).ravel()


def deletion_curve(predict, image, saliency, baseline=None, step: float = 0.05) -> np.ndarray:
    """Scores after deleting the top 0, step, …, 1 fraction of pixels (``baseline`` default: zeros)."""
    return _curve(predict, image, saliency, baseline, step, insert=False)


def insertion_curve(predict, image, saliency, baseline=None, step: float = 0.05) -> np.ndarray:
    """Scores after inserting the top 0, step, …, 1 fraction of pixels into ``baseline``."""
    return _curve(predict, image, saliency, baseline, step, insert=True)


def _auc(curve: np.ndarray) -> float:
    x = np.linspace(0.0, 1.0, len(curve))
    return float(np.sum((curve[1:] + curve[:-1]) / 2 * np.diff(x)))


def deletion_auc(predict, image, saliency, baseline=None, step: float = 0.05) -> float:
    """Area under the deletion curve (lower is better)."""
    return _auc(deletion_curve(predict, image, saliency, baseline, step))


def insertion_auc(predict, image, saliency, baseline=None, step: float = 0.05) -> float:
    """Area under the insertion curve (higher is better)."""
    return _auc(insertion_curve(predict, image, saliency, baseline, step))
