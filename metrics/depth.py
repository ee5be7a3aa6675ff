"""Monocular depth errors (Eigen et al. 2014 set, as used by monodepth-style self-supervised evaluation).

``depth_errors(pred, gt, mask=None, median_scaling=True, min_depth=None, max_depth=None)`` on one image: ``pred``
and ``gt`` depth maps of one shape (any units, e.g. mm), ``mask`` an optional boolean map of pixels to score.

Valid pixels: ``gt`` finite and > 0 (and ≤ ``max_depth`` when given, e.g. the endo-depth card's 150 mm cap on
SCARED), within ``mask``. With ``median_scaling`` the prediction is multiplied by median(gt)/median(pred) over the
valid pixels (per image; the scale is returned as ``"scale"``). The prediction is then clamped to
[``min_depth``, ``max_depth``] where given (monodepth2's convention); it must be positive at valid pixels.

Returned (floats): ``abs_rel`` = mean(|gt − pred|/gt); ``sq_rel`` = mean((gt − pred)²/gt); ``rmse`` =
sqrt(mean((gt − pred)²)) in depth units; ``rmse_log`` = sqrt(mean((ln gt − ln pred)²)); ``a1``, ``a2``, ``a3`` =
fraction of pixels with max(gt/pred, pred/gt) < 1.25, 1.25², 1.25³; ``scale``; ``n`` (valid pixels). All are
NaN when no pixel is valid. Average per image over a test set (the usual protocol).

Cards: endo-depth (AbsRel, RMSE in mm; depth = 1/disp, per-image median scaling, 150 mm cap).
"""

from __future__ import annotations

import numpy as np

from ._arrays import to_numpy

KEYS = ("abs_rel", "sq_rel", "rmse", "rmse_log", "a1", "a2", "a3")


def depth_errors(pred, gt, mask=None, median_scaling: bool = True, min_depth=None, max_depth=None) -> dict:
    pred, gt = to_numpy(pred).astype(np.float64), to_numpy(gt).astype(np.float64)
    if pred.shape != gt.shape:
        raise ValueError(f"pred and gt must have one shape, got {pred.shape} and {gt.shape}")
    valid = np.isfinite(gt) & (gt > 0)
    if max_depth is not None:
        valid &= gt <= max_depth
    if mask is not None:
        valid &= to_numpy(mask).astype(bool)
    if not valid.any():
        return {**{k: float("nan") for k in KEYS}, "scale": float("nan"), "n": 0}
    p, g = pred[valid], gt[valid]
    scale = float(np.median(g) / np.median(p)) if median_scaling else 1.0
    p = p * scale
    if min_depth is not None or max_depth is not None:
        p = np.clip(p, min_depth, max_depth)
    if np.any(p <= 0):
        raise ValueError("predicted depth must be positive at valid pixels (pass min_depth to clamp)")
    ratio = np.maximum(g / p, p / g)
    return {
        "abs_rel": float(np.mean(np.abs(g - p) / g)),
        "sq_rel": float(np.mean((g - p) ** 2 / g)),
        "rmse": float(np.sqrt(np.mean((g - p) ** 2))),
        "rmse_log": float(np.sqrt(np.mean((np.log(g) - np.log(p)) ** 2))),
        "a1": float(np.mean(ratio < 1.25)),
        "a2": float(np.mean(ratio < 1.25**2)),
        "a3": float(np.mean(ratio < 1.25**3)),
        "scale": scale,
        "n": int(valid.sum()),
    }
