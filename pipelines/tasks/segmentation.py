"""Shared segmentation task code: per-case metrics, ``per_case.csv``, summaries and overlay PNGs.

Pipelines keep their own networks, losses and data handling; what every segmentation run writes the same way
lives here. Masks are numpy arrays (2D or 3D), any non-zero value foreground; images are 2D (H, W) or (H, W, 3).
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from medrun.metrics import segmentation as seg

from .classification import write_csv

BINARY = {"dice": seg.dice, "iou": seg.iou, "precision": seg.precision, "recall": seg.recall,
          "specificity": seg.specificity}
DISTANCES = {"hd95": seg.hausdorff95, "assd": seg.assd, "hd": seg.hausdorff}


def case_metrics(pred, gt, names=("dice", "iou", "hd95"), *, spacing=None, empty: str = "standard") -> dict:
    """The named metrics of one binary case (``BINARY`` and ``DISTANCES`` keys), as floats."""
    out = {}
    for n in names:
        if n in BINARY:
            out[n] = float(BINARY[n](pred, gt, empty=empty))
        elif n in DISTANCES:
            out[n] = float(DISTANCES[n](pred, gt, spacing=spacing, empty=empty))
        else:
            raise KeyError(f"unknown segmentation metric '{n}' (known: {', '.join([*BINARY, *DISTANCES])})")
    return out


def summarise(rows: list[dict], names) -> dict:
    """Mean and sd over cases of each named column, NaN and inf left out of the mean (their count is reported)."""
    out: dict = {"n_cases": len(rows)}
    for n in names:
        vals = np.array([r[n] for r in rows if n in r], dtype=float)
        finite = vals[np.isfinite(vals)]
        out[n] = float(finite.mean()) if finite.size else math.nan
        out[f"{n}_sd"] = float(finite.std(ddof=1)) if finite.size > 1 else 0.0
        if finite.size < vals.size:
            out[f"{n}_nonfinite_cases"] = int(vals.size - finite.size)
    return out


def write_per_case(run, rows: list[dict], rel: str = "per_case.csv") -> Path:
    """``per_case.csv`` in the run directory (one row per case, floats rounded to 6 places)."""
    clean = [{k: round(v, 6) if isinstance(v, float) and math.isfinite(v) else v for k, v in r.items()} for r in rows]
    path = run.path / rel
    write_csv(path, clean)
    return path


def _gray(image: np.ndarray) -> np.ndarray:
    img = np.asarray(image, dtype=float)
    if img.ndim == 3 and img.shape[0] in (1, 3) and img.shape[-1] not in (1, 3):
        img = np.moveaxis(img, 0, -1)
    lo, hi = float(img.min()), float(img.max())
    return (img - lo) / (hi - lo) if hi > lo else np.zeros_like(img)


def overlay_axes(ax, image, gt, pred, title: str | None = None) -> None:
    """Draw the image with the true outline in green and the predicted outline in red (2D: one slice)."""
    img = _gray(image)
    ax.imshow(img, cmap=None if img.ndim == 3 else "gray")
    for mask, colour in ((gt, "lime"), (pred, "red")):
        if mask is not None and np.any(mask) and not np.all(mask):
            ax.contour(np.asarray(mask) > 0, levels=[0.5], colors=colour, linewidths=1)
    ax.set_axis_off()
    if title:
        ax.set_title(title, fontsize=8)


def overlay(ctx, name: str, image, gt, pred, title: str | None = None) -> Path:
    """``figures/<name>.png`` through the run's writer: ``overlay_axes`` on one panel."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(4, 4), dpi=100)
    overlay_axes(ax, image, gt, pred, title)
    return ctx.save_figure(fig, name, bbox_inches="tight")


def overlay_png(image, gt, pred, path: Path, title: str | None = None) -> Path:
    """Transitional: ``overlay`` to an explicit path (pipelines not yet on the kit's writers)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from ..report import save_figure

    fig, ax = plt.subplots(figsize=(4, 4), dpi=100)
    overlay_axes(ax, image, gt, pred, title)
    return save_figure(fig, Path(path), bbox_inches="tight")
