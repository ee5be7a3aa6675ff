"""Segmentation metrics: hand-worked cases, empty conventions, and three independent references for the surface
distances (MONAI, a brute-force scipy ``cdist`` on scikit-image boundaries, and medpy)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from medpy.metric import binary as medpy_binary
from monai.metrics import (
    compute_average_surface_distance,
    compute_hausdorff_distance,
    compute_surface_dice,
)
from scipy.spatial.distance import cdist
from skimage.segmentation import find_boundaries

from medrun.metrics import segmentation as S

# ------------------------------------------------------------------------------------------ overlap by hand


def test_overlap_by_hand():
    gt = np.zeros((4, 4), bool)
    gt[0, :3] = True  # 3 voxels
    pred = np.zeros((4, 4), bool)
    pred[0, 1:4] = True  # 3 voxels, 2 shared
    # TP 2, FP 1, FN 1, TN 12
    assert S.dice(pred, gt) == pytest.approx(4 / 6)
    assert S.iou(pred, gt) == pytest.approx(2 / 4)
    assert S.precision(pred, gt) == pytest.approx(2 / 3)
    assert S.recall(pred, gt) == pytest.approx(2 / 3)
    assert S.specificity(pred, gt) == pytest.approx(12 / 13)
    assert S.confusion_counts(pred, gt) == {"tp": 2, "fp": 1, "fn": 1, "tn": 12}
    assert S.dice(torch.tensor(pred), torch.tensor(gt)) == pytest.approx(4 / 6)


def test_overlap_empty_conventions():
    z = np.zeros((3, 3), bool)
    one = z.copy()
    one[1, 1] = True
    for f in (S.dice, S.iou, S.precision, S.recall):
        assert f(z, z) == 1.0
        assert f(z, z, empty="nan") == 1.0
    assert S.dice(one, z) == 0.0 and S.iou(z, one) == 0.0
    assert S.precision(z, one) == 0.0 and math.isnan(S.precision(z, one, empty="nan"))
    assert S.recall(one, z) == 0.0 and math.isnan(S.recall(one, z, empty="nan"))
    assert S.specificity(np.ones((2, 2)), np.ones((2, 2))) == 1.0
    with pytest.raises(ValueError):
        S.dice(z, z, empty="bogus")
    with pytest.raises(ValueError):
        S.dice(np.zeros((2, 2)), np.zeros((2, 3)))


@settings(max_examples=40, deadline=None)
@given(st.integers(0, 100_000), st.sampled_from([(7, 9), (5, 6, 7)]))
def test_overlap_matches_monai_and_sklearn(seed, shape):
    from monai.metrics import compute_dice, compute_iou
    from sklearn.metrics import jaccard_score, precision_score, recall_score

    rng = np.random.default_rng(seed)
    pred, gt = rng.random(shape) < 0.3, rng.random(shape) < 0.3
    if not gt.any() or not pred.any():
        return
    t = lambda m: torch.tensor(m[None, None].astype(np.float32))  # noqa: E731
    assert S.dice(pred, gt) == pytest.approx(float(compute_dice(t(pred), t(gt))))
    assert S.iou(pred, gt) == pytest.approx(float(compute_iou(t(pred), t(gt))))
    assert S.iou(pred, gt) == pytest.approx(jaccard_score(gt.ravel(), pred.ravel()))
    assert S.precision(pred, gt) == pytest.approx(precision_score(gt.ravel(), pred.ravel()))
    assert S.recall(pred, gt) == pytest.approx(recall_score(gt.ravel(), pred.ravel()))
    assert S.specificity(pred, gt) == pytest.approx(recall_score(~gt.ravel(), ~pred.ravel()))


# ---------------------------------------------------------------------------------------- distances by hand


def test_distances_by_hand_2d_anisotropic():
    # Two single-pixel masks: every surface is one pixel, distance = (3 rows * 2.0, 4 cols * 0.5) -> sqrt(36 + 4)
    a = np.zeros((6, 6), bool)
    b = np.zeros((6, 6), bool)
    a[0, 0] = True
    b[3, 4] = True
    d = math.sqrt(40)
    for f in (S.hausdorff, S.hausdorff95, S.assd, S.masd):
        assert f(a, b, spacing=(2.0, 0.5)) == pytest.approx(d)
    assert S.nsd(a, b, tolerance=6.0, spacing=(2.0, 0.5), convention="voxel") == 0.0
    assert S.nsd(a, b, tolerance=7.0, spacing=(2.0, 0.5), convention="voxel") == 1.0


def test_distances_by_hand_3d_anisotropic():
    a = np.zeros((5, 5, 5), bool)
    b = np.zeros((5, 5, 5), bool)
    a[0, 0, 0] = True
    b[1, 2, 3] = True
    d = math.sqrt((1 * 2.0) ** 2 + (2 * 1.0) ** 2 + (3 * 0.5) ** 2)
    assert S.hausdorff(a, b, spacing=(2.0, 1.0, 0.5)) == pytest.approx(d)
    assert S.assd(a, b, spacing=(2.0, 1.0, 0.5)) == pytest.approx(d)
    # a 4x4x4 cube and the same cube one slice further along an axis of 3 mm slices: HD = 3 mm
    gt = np.zeros((8, 8, 8), bool)
    gt[2:6, 2:6, 2:6] = True
    pred = np.roll(gt, 1, axis=0)
    assert S.hausdorff(pred, gt, spacing=(3.0, 0.7, 0.7)) == pytest.approx(3.0)
    assert S.hausdorff(np.roll(gt, 1, axis=2), gt, spacing=(3.0, 0.7, 0.7)) == pytest.approx(0.7)
    assert S.nsd(pred, gt, tolerance=2.9, spacing=(3.0, 0.7, 0.7), convention="voxel") < 1.0
    assert S.nsd(pred, gt, tolerance=3.0, spacing=(3.0, 0.7, 0.7), convention="voxel") == 1.0


def test_distances_by_hand_two_squares():
    # gt: 3x3 square (surface 8 pixels, centre is interior); pred: gt shifted one column right.
    gt = np.zeros((7, 7), bool)
    gt[2:5, 1:4] = True
    pred = np.roll(gt, 1, axis=1)
    # pred surface: 4 pixels on gt's surface (rows 2 and 4, cols 2-3), pred's left-middle (3,2) sits on gt's
    # interior centre (1 from gt's surface), and its 3 right-column pixels are 1 away; symmetric for gt.
    d_pg, d_gp = S.surface_distances(pred, gt)
    assert sorted(d_pg.tolist()) == [0, 0, 0, 0, 1, 1, 1, 1]
    assert sorted(d_gp.tolist()) == [0, 0, 0, 0, 1, 1, 1, 1]
    assert S.hausdorff(pred, gt) == 1.0
    assert S.assd(pred, gt) == pytest.approx(0.5)
    assert S.masd(pred, gt) == pytest.approx(0.5)
    assert S.nsd(pred, gt, tolerance=0.5, convention="voxel") == pytest.approx(0.5)
    assert S.boundary_f1(pred, gt, tolerance=0.5) == pytest.approx(0.5)
    assert S.boundary_f1(pred, gt, tolerance=1.0) == 1.0


def test_distance_empty_conventions():
    z = np.zeros((4, 5, 6), bool)
    one = z.copy()
    one[1, 2, 3] = True
    assert S.hausdorff95(z, z) == 0.0 and S.assd(z, z) == 0.0
    assert S.hausdorff95(one, z) == math.inf and S.masd(z, one) == math.inf
    assert S.nsd(z, z, 1.0) == 1.0 and S.nsd(one, z, 1.0) == 0.0 and S.boundary_f1(z, one) == 0.0
    assert math.isnan(S.hausdorff(z, z, empty="nan")) and math.isnan(S.hausdorff(one, z, empty="nan"))
    assert math.isnan(S.nsd(one, z, 1.0, empty="nan"))
    assert math.isnan(S.hausdorff95(z, z, empty="diagonal"))
    diag = math.sqrt((4 * 2.0) ** 2 + 5**2 + (6 * 0.5) ** 2)
    assert S.hausdorff95(one, z, spacing=(2.0, 1.0, 0.5), empty="diagonal") == pytest.approx(diag)
    assert S.dice(one, z, empty="diagonal") == 0.0
    with pytest.raises(ValueError):
        S.surface_distances(one, z)


def test_multiclass_mean_over_present_classes():
    gt = np.array([[0, 1, 1], [0, 2, 2], [0, 0, 0]])
    pred = np.array([[0, 1, 0], [0, 2, 2], [3, 0, 0]])
    out = S.multiclass("dice", pred, gt, num_classes=4)
    assert out["per_class"] == {1: pytest.approx(2 / 3), 2: 1.0, 3: 0.0}
    assert out["mean"] == pytest.approx((2 / 3 + 1.0) / 2)  # class 3 absent from gt
    assert S.per_class_dice(pred, gt, 4)["mean"] == pytest.approx(out["mean"])
    hd = S.multiclass(S.hausdorff, pred, gt, 4, empty="nan")
    assert hd["per_class"][1] == 1.0 and hd["mean"] == pytest.approx(0.5)
    assert math.isnan(S.multiclass("dice", pred, np.zeros_like(gt), 4)["mean"])


# ------------------------------------------------------------------------------------ independent references


def _brute(pred, gt, spacing):
    """Directed distances by cdist between scikit-image boundaries (padded so the image border is background)."""
    sp = np.asarray(spacing, float)

    def surf(m):
        pad = np.pad(m, 1)
        b = find_boundaries(pad, mode="inner", connectivity=1) & pad
        return (np.argwhere(b) - 1) * sp

    a, b = surf(pred), surf(gt)
    d = cdist(a, b)
    return d.min(axis=1), d.min(axis=0)


def _monai(fn, pred, gt, spacing, **kw):
    """MONAI's value as a pytest.approx (MONAI returns float32)."""
    t = lambda m: torch.tensor(m[None, None].astype(np.float32))  # noqa: E731
    return pytest.approx(float(fn(t(pred), t(gt), include_background=True, spacing=list(spacing), **kw)), rel=1e-5)


def _random_masks(seed, shape):
    from scipy.ndimage import binary_closing

    rng = np.random.default_rng(seed)
    p = binary_closing(rng.random(shape) < 0.35)
    g = binary_closing(rng.random(shape) < 0.35)
    p.flat[rng.integers(p.size)] = True
    g.flat[rng.integers(g.size)] = True
    return p, g


SHAPES = st.sampled_from([(9, 13), (16, 8), (6, 7, 8), (10, 5, 9)])
SPACINGS = st.sampled_from([(1.0, 1.0, 1.0), (0.7, 1.3, 2.5), (3.0, 0.5, 1.0)])


@settings(max_examples=40, deadline=None)
@given(st.integers(0, 100_000), SHAPES, SPACINGS)
def test_surface_distances_match_three_references(seed, shape, spacing):
    pred, gt = _random_masks(seed, shape)
    spacing = spacing[: len(shape)]
    d_pg, d_gp = S.surface_distances(pred, gt, spacing)
    e_pg, e_gp = S.surface_distances(pred, gt, spacing, method="edt")
    np.testing.assert_allclose(d_pg, e_pg, rtol=1e-12)
    np.testing.assert_allclose(d_gp, e_gp, rtol=1e-12)
    b_pg, b_gp = _brute(pred, gt, spacing)
    np.testing.assert_allclose(np.sort(d_pg), np.sort(b_pg), rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(np.sort(d_gp), np.sort(b_gp), rtol=1e-9, atol=1e-9)

    hd = S.hausdorff(pred, gt, spacing)
    hd95 = S.hausdorff95(pred, gt, spacing)
    assd = S.assd(pred, gt, spacing)
    masd = S.masd(pred, gt, spacing)
    # MONAI
    assert hd == _monai(compute_hausdorff_distance, pred, gt, spacing)
    assert hd95 == _monai(compute_hausdorff_distance, pred, gt, spacing, percentile=95)
    assert assd == _monai(compute_average_surface_distance, pred, gt, spacing, symmetric=True)
    # medpy: hd, pooled assd, directed asd, pooled hd95
    assert hd == pytest.approx(medpy_binary.hd(pred, gt, voxelspacing=spacing))
    assert assd == pytest.approx(medpy_binary.assd(pred, gt, voxelspacing=spacing))
    medpy_masd = (medpy_binary.asd(pred, gt, spacing) + medpy_binary.asd(gt, pred, spacing)) / 2
    assert masd == pytest.approx(medpy_masd)
    assert np.percentile(np.hstack([d_pg, d_gp]), 95) == pytest.approx(
        medpy_binary.hd95(pred, gt, voxelspacing=spacing)
    )
    # brute force
    assert hd95 == pytest.approx(max(np.percentile(b_pg, 95), np.percentile(b_gp, 95)))
    assert assd == pytest.approx(np.concatenate([b_pg, b_gp]).mean())


@settings(max_examples=40, deadline=None)
@given(st.integers(0, 100_000), SHAPES, SPACINGS, st.sampled_from([0.0, 1.0, 1.5, 3.0]))
def test_nsd_and_boundary_f1_match_references(seed, shape, spacing, tol):
    pred, gt = _random_masks(seed, shape)
    spacing = spacing[: len(shape)]
    t = lambda m: torch.tensor(m[None, None].astype(np.float32))  # noqa: E731
    ref = float(compute_surface_dice(t(pred), t(gt), [tol], include_background=True, spacing=list(spacing)))
    assert S.nsd(pred, gt, tol, spacing, convention="voxel") == pytest.approx(ref)
    b_pg, b_gp = _brute(pred, gt, spacing)
    p, r = np.mean(b_pg <= tol), np.mean(b_gp <= tol)
    f1 = 0.0 if p + r == 0 else 2 * p * r / (p + r)
    assert S.boundary_f1(pred, gt, tol, spacing) == pytest.approx(f1)


def test_bounding_box_crop_touching_border():
    # masks touching the image border: border voxels are surface, as with MONAI and medpy
    pred = np.zeros((12, 10, 8), bool)
    gt = np.zeros((12, 10, 8), bool)
    pred[0:6, 0:10, 2:8] = True
    gt[3:12, 2:7, 0:5] = True
    sp = (1.5, 0.8, 2.0)
    assert S.hausdorff95(pred, gt, sp) == _monai(compute_hausdorff_distance, pred, gt, sp, percentile=95)
    assert S.assd(pred, gt, sp) == pytest.approx(
        _monai(compute_average_surface_distance, pred, gt, sp, symmetric=True)
    )
    assert S.assd(pred, gt, sp) == pytest.approx(medpy_binary.assd(pred, gt, voxelspacing=sp))


def test_overlap_metric_accumulates_patches():
    rng = np.random.default_rng(1)
    pred, gt = rng.random((8, 16, 16)) < 0.4, rng.random((8, 16, 16)) < 0.4
    m = S.OverlapMetric()
    for z in range(0, 8, 2):
        m.update(torch.tensor(pred[z : z + 2]), torch.tensor(gt[z : z + 2]))
    out = m.compute()
    assert out["dice"] == pytest.approx(S.dice(pred, gt))
    assert out["iou"] == pytest.approx(S.iou(pred, gt))
    assert out["specificity"] == pytest.approx(S.specificity(pred, gt))
    m.reset()
    m.update(np.zeros((2, 2)), np.zeros((2, 2)))
    assert m.compute()["dice"] == 1.0
