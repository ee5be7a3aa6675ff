"""Shared segmentation task code: per-case metrics, ``per_case.csv``, summaries, overlay PNGs and predicted masks
written at the input's size (``write_mask``).

Pipelines keep their own networks, losses and data handling; what every segmentation run writes the same way
lives here. Masks are numpy arrays (2D or 3D), any non-zero value foreground; images are 2D (H, W) or (H, W, 3).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from medrun.metrics import segmentation as seg

BINARY = {"dice": seg.dice, "iou": seg.iou, "precision": seg.precision, "recall": seg.recall,
          "specificity": seg.specificity}
DISTANCES = {"hd95": seg.hausdorff95, "assd": seg.assd, "hd": seg.hausdorff}


@dataclass
class Cases:
    """A 2D dataset held in memory at one size: ids, image files (for data.lock.json and per_case.csv), images
    (N, S, S[, 3]) uint8 and masks (N, S, S) uint8 in {0, 1}; ``take`` selects a split."""

    ids: list[str]
    files: list[str]
    images: np.ndarray
    masks: np.ndarray

    def take(self, idx) -> Cases:
        idx = list(idx)
        return Cases([self.ids[i] for i in idx], [self.files[i] for i in idx], self.images[idx], self.masks[idx])

    def __len__(self):
        return len(self.ids)


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


def write_mask(ctx, rel: str, pred, size: tuple[int, int] | None = None, *, threshold: float | None = None,
               foreground: int = 255) -> np.ndarray:
    """A predicted mask as a PNG in the run (``ctx.write_png``), at the input's own size. ``pred`` is either a
    probability map, with ``threshold``: resized bilinearly to ``size`` first and then ``> threshold``, so the
    outline is drawn at the input's resolution; or a mask (any non-zero value foreground), resized by nearest
    neighbour. ``size`` is the input's (width, height), PIL's order; None keeps the array's. The PNG holds
    0 / ``foreground`` (uint8); returns the mask written (bool, H×W)."""
    from PIL import Image

    arr, size = np.asarray(pred), None if size is None else (int(size[0]), int(size[1]))
    if threshold is not None:
        img = Image.fromarray(arr.astype(np.float32))
        mask = np.asarray(img.resize(size, Image.BILINEAR) if size else img) > threshold
    else:
        mask = arr > 0
        if size and size != (mask.shape[1], mask.shape[0]):
            mask = np.asarray(Image.fromarray(mask.astype(np.uint8) * 255).resize(size, Image.NEAREST)) > 0
    ctx.write_png(rel, mask.astype(np.uint8) * np.uint8(foreground))
    return mask


def write_like_dicom(ctx, rel: str, mask, source) -> str | None:
    """DICOM in, NIfTI out: for a predicted mask (at the input's own size) of a DICOM file, the same mask as
    ``<rel>.nii.gz`` with the slice's affine (position, orientation, pixel spacing), which viewers overlay on the
    scan; None for other inputs (their PNG mask is the output). Returns the path relative to the run."""
    from medrun.datasets.imageio import DICOM_SUFFIXES, read, suffix

    if suffix(Path(source)) not in DICOM_SUFFIXES:
        return None
    out = ctx.write_like(rel, (np.asarray(mask) > 0).astype(np.uint8), read(Path(source)))
    return out.relative_to(ctx.path).as_posix()


# a MONAI-bundle converter's reader of 8 bits by the image's own depth, as medrun's readers (datasets.images)
TO_8BIT = "__import__('medrun.datasets.images', fromlist=['to_8bit']).to_8bit"


def bundle_parts(*, task: str, network_def: dict, preprocessing: list, predict: str, in_channels: int,
                 size: int | None, labels: dict, modality: str, readme: str, classes=(),
                 suffixes=(".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")) -> dict:
    """``Pipeline.bundle_parts()`` (``medrun export``) of a 2D segmentation network. ``predict`` is a Python
    expression of ``x``, one preprocessed image as a batch on the bundle's device, whose value (a dict, e.g.
    ``mask_entry(...)``) goes into ``predictions.json`` for each file; ``size`` is the network's input side (None:
    each image's own); ``labels`` the output's channel definition."""
    shape = [size, size] if size else ["*", "*"]
    return {"task": task, "network_def": network_def, "classes": list(classes), "suffixes": list(suffixes),
            "preprocessing": preprocessing,
            "predict": f"$torch.no_grad()(lambda f: (lambda x: {predict})(@preprocessing(f)[None].to(@device)))",
            "input": {"type": "image", "format": "magnitude", "modality": modality, "num_channels": in_channels,
                      "spatial_shape": shape, "dtype": "float32", "value_range": [], "is_patch_data": False,
                      "channel_def": {str(i): "image" for i in range(in_channels)}},
            "output": {"type": "image", "format": "segmentation", "num_channels": 1, "spatial_shape": shape,
                       "dtype": "uint8", "value_range": sorted(labels), "is_patch_data": False,
                       "channel_def": {str(k): v for k, v in labels.items()}},
            "readme": readme}


def mask_entry(mask: str) -> str:
    """A bundle ``predict`` expression: the (H, W) integer mask that the expression ``mask`` gives, as
    ``{'mask': rows of 0/1, 'foreground_fraction': …}``."""
    return f"(lambda m: {{'mask': m.int().tolist(), 'foreground_fraction': float((m > 0).float().mean())}})({mask})"
