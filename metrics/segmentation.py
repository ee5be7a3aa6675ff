"""Segmentation metrics on boolean masks (overlap and surface distances).

Inputs: ``pred`` and ``gt`` masks of one shape, 2D (H, W) or 3D (D, H, W), numpy arrays or torch tensors; any
non-zero value is foreground. ``spacing`` is the voxel size per axis (default 1 per axis, i.e. pixels); distances
come out in the units of ``spacing`` (mm when the spacing is in mm).

Overlap (counts TP, FP, FN, TN over all voxels):
- ``dice`` = 2TP/(2TP+FP+FN); ``iou`` = TP/(TP+FP+FN); ``precision`` = TP/(TP+FP); ``recall`` = TP/(TP+FN)
  (sensitivity); ``specificity`` = TN/(TN+FP).

Surfaces and distances:
- The surface ∂A of a mask is its foreground voxels that have a 4-neighbour (2D) / 6-neighbour (3D) in the
  background, the image border counting as background (``A xor erode(A)``, as MONAI's ``get_mask_edges`` and
  medpy). d(a, ∂B) is the Euclidean distance, in ``spacing`` units, from voxel centre a to the nearest voxel
  centre of ∂B.
- ``hausdorff`` = max(max_a d(a,∂B), max_b d(b,∂A)).
- ``hausdorff95`` = max of the two *directed* 95th percentiles (``numpy.percentile``, linear interpolation),
  exactly MONAI's ``HausdorffDistanceMetric(percentile=95)``. (medpy's ``hd95`` pools both directions before
  the percentile, which differs slightly.)
- ``assd`` = (Σ_a d(a,∂B) + Σ_b d(b,∂A)) / (|∂A|+|∂B|), MONAI's symmetric average surface distance and
  medpy's ``assd`` (both pool the two directions).
- ``masd`` = ½(mean_a d(a,∂B) + mean_b d(b,∂A)), the mean of the two directed averages (transnet-oct); it differs
  from ``assd`` when the surfaces have different sizes.
- ``nsd`` (normalised surface Dice at tolerance τ), two conventions (``convention=``):
  ``"surfel"`` (default), the original definition of Nikolov et al. (2021) as DeepMind's ``surface-distance``
  package computes it: each surface is a set of surface elements (surfels) on the grid of voxel corners, found
  from the 2×2(×2) neighbourhood code of every corner (marching squares / cubes), each weighted by its contour
  length (2D) or area (3D) in ``spacing`` units, NSD = (Σ area of ∂A's surfels within τ of ∂B + the same for ∂B)
  / (area of ∂A + area of ∂B); the code → length/area tables are MONAI's port of DeepMind's
  (``monai.metrics.utils.get_code_to_measure_table``). ``"voxel"``, MONAI's default ``compute_surface_dice``:
  (|{a ∈ ∂A: d(a,∂B) ≤ τ}| + |{b ∈ ∂B: d(b,∂A) ≤ τ}|)/(|∂A|+|∂B|) over the surface *voxels* above, each counting
  1. They differ by several points (0.07–0.12 on typical organ masks at τ = 1 voxel), so a reported NSD must
  name its convention: metric names ``nsd_surfel`` / ``nsd_voxel`` (and per-case columns of those names).
- ``boundary_f1`` at τ: P = fraction of ∂pred within τ of ∂gt, R = fraction of ∂gt within τ of ∂pred,
  F1 = 2PR/(P+R) (0 when P+R = 0).

Empty masks, ``empty=``:
- ``"standard"`` (default): both empty → overlap scores 1, distances 0, NSD/BF1 1; one empty → overlap 0,
  distances ``inf``, NSD/BF1 0. Precision (no predicted foreground) and recall (no true foreground) follow the
  same rule: 1 when both are empty, else 0. Specificity with no true background is 1 if FP = 0.
- ``"nan"``: as standard for overlap scores, but every distance/NSD/BF1 is NaN when either mask is empty, and a
  ratio whose denominator is 0 is NaN unless both masks are empty; NaN is then excluded from means
  (``numpy.nanmean``; :func:`multiclass` does this).
- ``"diagonal"`` (sm-safe): both empty → overlap 1 and distances NaN (excluded); one empty → overlap 0 and
  distances = the image diagonal in ``spacing`` units. NSD/BF1 are then NaN (both empty) or 0 (one empty).

Cards: ma-dtnet (per-image Dice, IoU, sens, spec, precision, HD95 px), sm-safe (Dice, IoU, HD95 mm with
``empty="diagonal"``), superpixel-label (Dice, IoU, precision, sensitivity; both empty → 1), pulmonary-av
(precision, recall, specificity, DSC, HD and HD95 mm), transnet-oct (DSC, ASSD, MASD in px), hybrid-seg
(per-class Dice/IoU, HD95 px, boundary F1 at 2 px), lorasam (Dice with empty/empty = 1).

Accumulating (torchmetrics ``Metric``, DDP-safe): :class:`OverlapMetric` pools voxel counts (Dice of a volume
seen in patches); :class:`CaseMeanMetric` averages any per-case metric over cases, leaving NaN out.

Efficiency: surfaces are extracted on the bounding box of both masks (one voxel of margin) and nearest surface
partners are found with a k-d tree on the surface voxels' physical coordinates (``scipy.spatial.cKDTree``, exact
Euclidean); a dense ``distance_transform_edt(sampling=spacing)`` path is kept as ``method="edt"``. All surface
metrics share :func:`surface_distances`.
"""

from __future__ import annotations

import functools
import math

import numpy as np
from torchmetrics import Metric

from ._arrays import to_numpy

EMPTY_MODES = ("standard", "nan", "diagonal")


def _masks(pred, gt) -> tuple[np.ndarray, np.ndarray]:
    pred, gt = to_numpy(pred).astype(bool), to_numpy(gt).astype(bool)
    if pred.shape != gt.shape:
        raise ValueError(f"pred and gt must have one shape, got {pred.shape} and {gt.shape}")
    return pred, gt


def _check_empty(empty: str) -> None:
    if empty not in EMPTY_MODES:
        raise ValueError(f"empty must be one of {EMPTY_MODES}, not {empty!r}")


def _spacing(spacing, ndim: int) -> tuple[float, ...]:
    if spacing is None:
        return (1.0,) * ndim
    if np.isscalar(spacing):
        return (float(spacing),) * ndim
    spacing = tuple(float(s) for s in spacing)
    if len(spacing) != ndim:
        raise ValueError(f"spacing has {len(spacing)} values for a {ndim}D mask")
    return spacing


# ----------------------------------------------------------------------------------------------- overlap


def confusion_counts(pred, gt) -> dict:
    """Voxel counts ``{"tp", "fp", "fn", "tn"}`` of boolean masks of one shape."""
    pred, gt = _masks(pred, gt)
    tp = int(np.count_nonzero(pred & gt))
    fp = int(np.count_nonzero(pred)) - tp
    fn = int(np.count_nonzero(gt)) - tp
    return {"tp": tp, "fp": fp, "fn": fn, "tn": int(pred.size) - tp - fp - fn}


def _ratio(num: float, den: float, both_empty: bool, empty: str) -> float:
    if den > 0:
        return float(num / den)
    if both_empty:
        return 1.0
    return float("nan") if empty == "nan" else 0.0


def _overlap(pred, gt, empty: str, which: str) -> float:
    _check_empty(empty)
    c = confusion_counts(pred, gt)
    both_empty = c["tp"] + c["fp"] + c["fn"] == 0
    tp, fp, fn, tn = c["tp"], c["fp"], c["fn"], c["tn"]
    if which == "dice":
        return _ratio(2 * tp, 2 * tp + fp + fn, both_empty, empty)
    if which == "iou":
        return _ratio(tp, tp + fp + fn, both_empty, empty)
    if which == "precision":
        return _ratio(tp, tp + fp, both_empty, empty)
    if which == "recall":
        return _ratio(tp, tp + fn, both_empty, empty)
    # specificity: no true background and no false positive is perfect
    return _ratio(tn, tn + fp, fp == 0, empty)


def dice(pred, gt, empty: str = "standard") -> float:
    """Dice = 2TP/(2TP+FP+FN); both empty → 1, one empty → 0."""
    return _overlap(pred, gt, empty, "dice")


def iou(pred, gt, empty: str = "standard") -> float:
    """IoU (Jaccard) = TP/(TP+FP+FN); both empty → 1, one empty → 0."""
    return _overlap(pred, gt, empty, "iou")


def precision(pred, gt, empty: str = "standard") -> float:
    """TP/(TP+FP); no predicted foreground → 1 if gt is empty too, else 0 (NaN with ``empty="nan"``)."""
    return _overlap(pred, gt, empty, "precision")


def recall(pred, gt, empty: str = "standard") -> float:
    """Sensitivity TP/(TP+FN); no true foreground → 1 if pred is empty too, else 0 (NaN with ``empty="nan"``)."""
    return _overlap(pred, gt, empty, "recall")


def specificity(pred, gt, empty: str = "standard") -> float:
    """TN/(TN+FP); no true background → 1 when FP = 0."""
    return _overlap(pred, gt, empty, "specificity")


# ------------------------------------------------------------------------------------------------ surfaces


def surface(mask: np.ndarray) -> np.ndarray:
    """Boolean surface voxels: foreground with a face-neighbour in the background (image border = background)."""
    from scipy.ndimage import binary_erosion, generate_binary_structure

    mask = np.asarray(mask, dtype=bool)
    structure = generate_binary_structure(mask.ndim, 1)
    return mask & ~binary_erosion(mask, structure=structure, border_value=0)


def _bbox(mask: np.ndarray, margin: int = 1) -> tuple[slice, ...]:
    slices = []
    for axis in range(mask.ndim):
        other = tuple(a for a in range(mask.ndim) if a != axis)
        idx = np.flatnonzero(mask.any(axis=other))
        slices.append(slice(max(int(idx[0]) - margin, 0), min(int(idx[-1]) + 1 + margin, mask.shape[axis])))
    return tuple(slices)


def surface_distances(pred, gt, spacing=None, method: str = "kdtree") -> tuple[np.ndarray, np.ndarray]:
    """Directed surface distances ``(d(∂pred → ∂gt), d(∂gt → ∂pred))``, 1-D float64 arrays in spacing units.

    Both masks must be non-empty. Surfaces are extracted on the bounding box of both masks plus one voxel (the
    margin keeps the erosion exact). ``method="kdtree"`` (default) finds each surface voxel's nearest partner with
    ``scipy.spatial.cKDTree`` on the physical coordinates (sparse work, queries on all cores);
    ``method="edt"`` reads it from ``scipy.ndimage.distance_transform_edt(~surface, sampling=spacing)`` on the box.
    Both are exact; they are tested against each other.
    """
    pred, gt = _masks(pred, gt)
    if not pred.any() or not gt.any():
        raise ValueError("surface distances need two non-empty masks")
    sp = _spacing(spacing, pred.ndim)
    box = _bbox(pred | gt)
    surf_pred, surf_gt = surface(pred[box]), surface(gt[box])
    if method == "edt":
        from scipy.ndimage import distance_transform_edt

        d_to_gt = distance_transform_edt(~surf_gt, sampling=sp)
        d_to_pred = distance_transform_edt(~surf_pred, sampling=sp)
        return d_to_gt[surf_pred], d_to_pred[surf_gt]
    if method != "kdtree":
        raise ValueError(f"method must be kdtree or edt, not {method!r}")
    from scipy.spatial import cKDTree

    scale = np.asarray(sp, dtype=np.float64)
    xyz_pred = np.argwhere(surf_pred) * scale
    xyz_gt = np.argwhere(surf_gt) * scale
    d_to_gt = cKDTree(xyz_gt, leafsize=32).query(xyz_pred, k=1, workers=-1)[0]
    d_to_pred = cKDTree(xyz_pred, leafsize=32).query(xyz_gt, k=1, workers=-1)[0]
    return d_to_gt, d_to_pred


def _empty_distance(pred: np.ndarray, gt: np.ndarray, spacing, empty: str, kind: str) -> float | None:
    """Value for the empty cases, or None when both masks are non-empty. ``kind``: distance | score."""
    _check_empty(empty)
    p, g = bool(pred.any()), bool(gt.any())
    if p and g:
        return None
    both = not p and not g
    if empty == "nan" or (empty == "diagonal" and both):
        return float("nan")
    if kind == "score":
        return 1.0 if both else 0.0
    if both:
        return 0.0
    if empty == "diagonal":
        sp = _spacing(spacing, pred.ndim)
        return float(math.sqrt(sum((n * s) ** 2 for n, s in zip(pred.shape, sp, strict=True))))
    return float("inf")


def _distance_metric(pred, gt, spacing, empty, reduce) -> float:
    pred, gt = _masks(pred, gt)
    special = _empty_distance(pred, gt, spacing, empty, "distance")
    if special is not None:
        return special
    return float(reduce(*surface_distances(pred, gt, spacing)))


def hausdorff(pred, gt, spacing=None, empty: str = "standard") -> float:
    """Symmetric Hausdorff distance, max over both directed maxima (spacing units)."""
    return _distance_metric(pred, gt, spacing, empty, lambda a, b: max(a.max(), b.max()))


def hausdorff95(pred, gt, spacing=None, empty: str = "standard") -> float:
    """95th-percentile Hausdorff: max of the two directed 95th percentiles (MONAI's definition)."""
    return _distance_metric(pred, gt, spacing, empty, lambda a, b: max(np.percentile(a, 95), np.percentile(b, 95)))


def assd(pred, gt, spacing=None, empty: str = "standard") -> float:
    """Average symmetric surface distance: all distances of both directions pooled, then averaged."""
    return _distance_metric(pred, gt, spacing, empty, lambda a, b: (a.sum() + b.sum()) / (a.size + b.size))


def masd(pred, gt, spacing=None, empty: str = "standard") -> float:
    """Mean average surface distance: mean of the two directed mean distances."""
    return _distance_metric(pred, gt, spacing, empty, lambda a, b: 0.5 * (a.mean() + b.mean()))


def _score_metric(pred, gt, spacing, empty, reduce) -> float:
    pred, gt = _masks(pred, gt)
    special = _empty_distance(pred, gt, spacing, empty, "score")
    if special is not None:
        return special
    return float(reduce(*surface_distances(pred, gt, spacing)))


NSD_CONVENTIONS = ("surfel", "voxel")


@functools.lru_cache(maxsize=32)
def _code_table(spacing: tuple[float, ...]) -> tuple[np.ndarray, np.ndarray]:
    """(code → surfel length/area, 2×2(×2) encoding kernel) for this spacing, from MONAI's port of DeepMind's
    tables (so the two stay one definition)."""
    from monai.metrics.utils import get_code_to_measure_table

    table, kernel = get_code_to_measure_table(spacing)
    return table.cpu().numpy().astype(np.float64), kernel.cpu().numpy().reshape((2,) * len(spacing)).astype(np.int64)


def _surfels(mask: np.ndarray, table: np.ndarray, kernel: np.ndarray, scale: np.ndarray):
    """(corner coordinates (N, ndim) in spacing units, surfel lengths/areas (N,)) of a cropped boolean mask."""
    import itertools

    padded = np.pad(mask.astype(np.int64), 1)  # background all round, also where the mask touches the border
    code = np.zeros(tuple(n - 1 for n in padded.shape), dtype=np.int64)  # one code per voxel corner
    for offset in itertools.product((0, 1), repeat=mask.ndim):
        code += kernel[offset] * padded[tuple(slice(o, o + n) for o, n in zip(offset, code.shape, strict=True))]
    border = (code != 0) & (code != len(table) - 1)
    return np.argwhere(border) * scale, table[code[border]]


def surfel_distances(pred, gt, spacing=None) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """``(d(∂pred → ∂gt), area_pred, d(∂gt → ∂pred), area_gt)`` over the surfels of DeepMind's surface-distance
    definition (2D or 3D; see the module docstring): per surfel of one mask, the Euclidean distance from its corner
    point to the nearest surfel corner of the other, and its length (2D) or area (3D), in spacing units. Both
    masks must be non-empty."""
    from scipy.spatial import cKDTree

    pred, gt = _masks(pred, gt)
    if pred.ndim not in (2, 3):
        raise ValueError(f"surfels are defined for 2D and 3D masks, not {pred.ndim}D")
    if not pred.any() or not gt.any():
        raise ValueError("surface distances need two non-empty masks")
    sp = _spacing(spacing, pred.ndim)
    table, kernel = _code_table(sp)
    scale = np.asarray(sp, dtype=np.float64)
    box = _bbox(pred | gt, margin=0)
    xyz_pred, area_pred = _surfels(pred[box], table, kernel, scale)
    xyz_gt, area_gt = _surfels(gt[box], table, kernel, scale)
    d_pred = cKDTree(xyz_gt, leafsize=32).query(xyz_pred, k=1, workers=-1)[0]
    d_gt = cKDTree(xyz_pred, leafsize=32).query(xyz_gt, k=1, workers=-1)[0]
    return d_pred, area_pred, d_gt, area_gt


def nsd(pred, gt, tolerance: float, spacing=None, empty: str = "standard", convention: str = "surfel") -> float:
    """Normalised surface Dice at ``tolerance`` (spacing units): the share of both surfaces lying within
    ``tolerance`` of the other. ``convention="surfel"`` (default): Nikolov et al.'s definition, surfaces weighted
    by surfel length/area as DeepMind's ``surface-distance``; ``"voxel"``: MONAI's default, surface voxels counted
    (see the module docstring). Report it as ``nsd_surfel`` or ``nsd_voxel``."""
    if convention not in NSD_CONVENTIONS:
        raise ValueError(f"convention must be one of {NSD_CONVENTIONS}, not {convention!r}")
    pred, gt = _masks(pred, gt)
    special = _empty_distance(pred, gt, spacing, empty, "score")
    if special is not None:
        return special
    if convention == "voxel":
        a, b = surface_distances(pred, gt, spacing)
        return float((np.count_nonzero(a <= tolerance) + np.count_nonzero(b <= tolerance)) / (a.size + b.size))
    d_pred, area_pred, d_gt, area_gt = surfel_distances(pred, gt, spacing)
    within = area_pred[d_pred <= tolerance].sum() + area_gt[d_gt <= tolerance].sum()
    return float(within / (area_pred.sum() + area_gt.sum()))


def nsd_surfel(pred, gt, tolerance: float, spacing=None, empty: str = "standard") -> float:
    """``nsd`` with ``convention="surfel"`` (Nikolov et al., DeepMind's surface-distance)."""
    return nsd(pred, gt, tolerance, spacing, empty, convention="surfel")


def nsd_voxel(pred, gt, tolerance: float, spacing=None, empty: str = "standard") -> float:
    """``nsd`` with ``convention="voxel"`` (MONAI's default ``compute_surface_dice``)."""
    return nsd(pred, gt, tolerance, spacing, empty, convention="voxel")


def boundary_f1(pred, gt, tolerance: float = 2.0, spacing=None, empty: str = "standard") -> float:
    """Boundary F1 at ``tolerance``: harmonic mean of boundary precision and boundary recall."""

    def reduce(d_pred_to_gt, d_gt_to_pred):
        p = np.mean(d_pred_to_gt <= tolerance)
        r = np.mean(d_gt_to_pred <= tolerance)
        return 0.0 if p + r == 0 else 2 * p * r / (p + r)

    return _score_metric(pred, gt, spacing, empty, reduce)


# --------------------------------------------------------------------------------------------- multi-class

METRICS = {
    "dice": dice,
    "iou": iou,
    "precision": precision,
    "recall": recall,
    "specificity": specificity,
    "hausdorff": hausdorff,
    "hausdorff95": hausdorff95,
    "assd": assd,
    "masd": masd,
    "nsd": nsd,
    "nsd_surfel": nsd_surfel,
    "nsd_voxel": nsd_voxel,
    "boundary_f1": boundary_f1,
}


def multiclass(metric, pred, gt, num_classes: int, include_background: bool = False, **kwargs) -> dict:
    """Apply a binary metric to each class of integer label maps ``pred`` and ``gt`` (same shape).

    ``metric`` is a function of this module or its name; ``kwargs`` go to it (``spacing``, ``empty``,
    ``tolerance``). Returns ``{"per_class": {c: value}, "mean": m}`` where ``m`` is the NaN-ignoring mean over
    the classes present in ``gt`` (NaN when none is). Background (class 0) is skipped unless
    ``include_background``.
    """
    fn = METRICS[metric] if isinstance(metric, str) else metric
    pred, gt = to_numpy(pred).astype(np.int64), to_numpy(gt).astype(np.int64)
    classes = range(0 if include_background else 1, num_classes)
    per_class = {c: fn(pred == c, gt == c, **kwargs) for c in classes}
    present = [v for c, v in per_class.items() if np.any(gt == c) and not math.isnan(v)]
    return {"per_class": per_class, "mean": float(np.mean(present)) if present else float("nan")}


def per_class_dice(pred, gt, num_classes: int, include_background: bool = False, empty: str = "standard") -> dict:
    """Shortcut for ``multiclass(dice, ...)``."""
    return multiclass(dice, pred, gt, num_classes, include_background, empty=empty)


# ------------------------------------------------------------------------------------- accumulating metric


class OverlapMetric(Metric):
    """Dice, IoU, precision, recall and specificity of one volume seen in patches, or of a whole test set pooled.

    ``update(pred, gt)`` adds the TP/FP/FN/TN counts of a patch (any shape, boolean or 0/1); counts are summed over
    batches and DDP ranks; ``compute()`` returns a dict with the same empty conventions as the functions. Counting
    is exact, so patches that tile a volume give the volume's scores (no double counting is allowed: pass
    non-overlapping patches).
    """

    full_state_update = False

    def __init__(self, empty: str = "standard", **kwargs):
        super().__init__(**kwargs)
        import torch

        _check_empty(empty)
        self.empty = empty
        for name in ("tp", "fp", "fn", "tn"):
            self.add_state(name, default=torch.tensor(0, dtype=torch.int64), dist_reduce_fx="sum")

    def update(self, pred, gt) -> None:
        c = confusion_counts(pred, gt)
        for name, value in c.items():
            setattr(self, name, getattr(self, name) + value)

    def compute(self) -> dict:
        tp, fp, fn, tn = (int(getattr(self, n)) for n in ("tp", "fp", "fn", "tn"))
        both_empty = tp + fp + fn == 0
        e = self.empty
        return {
            "dice": _ratio(2 * tp, 2 * tp + fp + fn, both_empty, e),
            "iou": _ratio(tp, tp + fp + fn, both_empty, e),
            "precision": _ratio(tp, tp + fp, both_empty, e),
            "recall": _ratio(tp, tp + fn, both_empty, e),
            "specificity": _ratio(tn, tn + fp, fp == 0, e),
        }


class CaseMeanMetric(Metric):
    """Mean of a per-case metric (e.g. HD95 per volume) over cases seen in batches and on all DDP ranks.

    ``metric`` is a function of this module or its name, ``kwargs`` its options (``spacing``, ``empty``,
    ``tolerance``). ``update(pred, gt)`` scores one case; pass ``batched=True`` to score each item of a leading
    batch axis. NaN values (``empty="nan"``/``"diagonal"`` cases) are left out of the mean and counted in
    ``"n_excluded"``; ``inf`` values stay in (the mean is then ``inf``). ``compute()`` returns ``{"mean", "n",
    "n_excluded"}``. The sum and counts are summed over ranks, so the result equals the single-process mean.
    """

    full_state_update = False

    def __init__(self, metric, batched: bool = False, **kwargs):
        metric_kwargs = {k: kwargs.pop(k) for k in ("spacing", "empty", "tolerance", "convention") if k in kwargs}
        super().__init__(**kwargs)
        import torch

        self.fn = METRICS[metric] if isinstance(metric, str) else metric
        self.metric_kwargs = metric_kwargs
        self.batched = batched
        self.add_state("total", default=torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("count", default=torch.tensor(0, dtype=torch.int64), dist_reduce_fx="sum")
        self.add_state("excluded", default=torch.tensor(0, dtype=torch.int64), dist_reduce_fx="sum")

    def update(self, pred, gt) -> None:
        pred, gt = to_numpy(pred), to_numpy(gt)
        cases = zip(pred, gt, strict=True) if self.batched else [(pred, gt)]
        for p, g in cases:
            value = float(self.fn(p, g, **self.metric_kwargs))
            if math.isnan(value):
                self.excluded += 1
            else:
                self.total += value
                self.count += 1

    def compute(self) -> dict:
        n = int(self.count)
        return {
            "mean": float(self.total) / n if n else float("nan"),
            "n": n,
            "n_excluded": int(self.excluded),
        }


# ------------------------------------------------------------------------------------- thin structures (DIBCO)
def pseudo_fmeasure(pred, gt, gt_skeleton=None) -> dict:
    """H-DIBCO pseudo F-measure of a thin-line mask (fusing-forces, Eq. 2–3): precision P = |pred ∧ gt| / |pred|,
    pseudo-recall pR = |pred ∧ skel(gt)| / |skel(gt)| (Zhang–Suen skeleton, ``skimage.morphology.skeletonize``;
    pass ``gt_skeleton`` to reuse one), pFM = 2·P·pR / (P + pR). Empty masks: both empty → all 1; otherwise a
    ratio with a zero denominator is 0, and pFM is 0 when P + pR = 0. Returns ``{"precision", "p_recall", "pfm",
    "n_pred", "n_tp", "n_skel", "n_skel_hit"}`` (the counts pool over patches)."""
    pred, gt = _masks(pred, gt)
    if gt_skeleton is None:
        from skimage.morphology import skeletonize

        gt_skeleton = skeletonize(gt)
    skel = np.asarray(gt_skeleton, bool)
    counts = {"n_pred": int(pred.sum()), "n_tp": int((pred & gt).sum()), "n_skel": int(skel.sum()),
              "n_skel_hit": int((pred & skel).sum())}
    return {**pfm_from_counts(**counts), **counts}


def pfm_from_counts(n_pred: int, n_tp: int, n_skel: int, n_skel_hit: int) -> dict:
    """Precision, pseudo-recall and pFM from (pooled) counts; see :func:`pseudo_fmeasure`."""
    if n_pred == 0 and n_skel == 0:
        return {"precision": 1.0, "p_recall": 1.0, "pfm": 1.0}
    p = n_tp / n_pred if n_pred else 0.0
    pr = n_skel_hit / n_skel if n_skel else 0.0
    return {"precision": float(p), "p_recall": float(pr), "pfm": float(2 * p * pr / (p + pr)) if p + pr else 0.0}
