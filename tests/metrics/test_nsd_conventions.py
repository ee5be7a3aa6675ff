"""NSD conventions (issue 14, item 11): the surfel definition of Nikolov et al. / DeepMind's ``surface-distance``
(the default) against hand-computed contour lengths and areas and against MONAI's own port of it
(``use_subvoxels=True``); MONAI's voxel-count form kept as ``convention="voxel"``. DeepMind's package itself does not
run on NumPy 2 (``np.Inf``, ``np.NaN``), so it is not a test dependency; with those two aliases patched it agreed
with this implementation to 2e-9 on 60 random 2D/3D masks with anisotropic spacing, border-touching ones included."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from monai.metrics import compute_surface_dice

from medrun.metrics import segmentation as S

R2 = math.sqrt(2)


def _length(mask, spacing):
    return S.surfel_distances(mask, mask, spacing)[1].sum()


def test_rectangle_contour_by_hand():
    m = np.zeros((12, 14), bool)
    m[2:9, 3:12] = True  # 7 rows × 9 columns
    assert _length(m, (1.0, 1.0)) == pytest.approx(4 * 0.5 * R2 + 2 * 6 + 2 * 8)
    s0, s1 = 2.0, 0.5
    corners = 4 * 0.5 * math.hypot(s0, s1)  # marching squares cuts each corner pixel diagonally
    assert _length(m, (s0, s1)) == pytest.approx(corners + 2 * 6 * s0 + 2 * 8 * s1)


def test_cube_area_by_hand_anisotropic():
    m = np.zeros((12, 12, 12), bool)
    m[2:10, 2:10, 2:10] = True
    k = 7  # n - 1 unit faces along each edge
    s0, s1, s2 = 2.0, 0.5, 1.0
    faces = 2 * k * k * (s1 * s2 + s0 * s2 + s0 * s1)
    edges = 4 * k * (s0 * math.hypot(s1, s2) + s1 * math.hypot(s0, s2) + s2 * math.hypot(s0, s1)) / 2
    corners = 8 * math.sqrt((s1 * s2) ** 2 + (s0 * s2) ** 2 + (s0 * s1) ** 2) / 8
    assert _length(m, (s0, s1, s2)) == pytest.approx(faces + edges + corners, rel=1e-6)
    assert _length(m, (1, 1, 1)) == pytest.approx(6 * 49 + 12 * 7 * R2 / 2 + math.sqrt(3), rel=1e-6)


def test_sphere_area_near_the_true_area():
    r, n = 15, 38
    g = np.indices((n, n, n)) - n // 2
    ball = (g**2).sum(0) <= r * r
    # marching cubes on a binary volume overestimates a sphere's area by about 8 % (a staircase, not a sphere)
    assert 1.05 < _length(ball, (1, 1, 1)) / (4 * math.pi * r * r) < 1.10


def test_nsd_by_hand_where_the_conventions_differ():
    gt = np.zeros((6, 6), bool)
    gt[2, 2] = True  # one pixel: four diagonal surfels of √2/2
    pred = gt.copy()
    pred[3, 2] = True  # two pixels: four diagonals, two unit edges; the far corners are 1 from gt's contour
    surfel = (2 * R2 + R2 + 2) / (2 * R2 + 2 * R2 + 2)
    assert S.nsd(pred, gt, 0.0) == pytest.approx(surfel)  # 0.815
    assert S.nsd(pred, gt, 0.0, convention="voxel") == pytest.approx(2 / 3)  # surface voxels 1 + 2, 2 within
    assert S.nsd(pred, gt, 1.0) == S.nsd(pred, gt, 1.0, convention="voxel") == 1.0


@pytest.mark.parametrize("shape,spacing", [((40, 36), (1.0, 1.0)), ((40, 36), (0.7, 1.9)),
                                           ((20, 22, 18), (1.0, 1.0, 1.0)), ((20, 22, 18), (2.5, 0.8, 0.8))])
def test_surfel_nsd_matches_monai_subvoxel_port(shape, spacing):
    from scipy.ndimage import gaussian_filter

    rng = np.random.default_rng(len(shape) * 10 + int(spacing[0] * 10))
    gt = gaussian_filter(rng.normal(size=shape), 2) > 0.05
    pred = gaussian_filter(rng.normal(size=shape), 2) > 0.05
    pred[0] |= gt[0]  # touch the border too
    t = lambda m: torch.tensor(m[None, None].astype(np.float32))  # noqa: E731
    for tol in (0.0, 1.0, 2.0):
        ref = float(compute_surface_dice(t(pred), t(gt), [tol], include_background=True, spacing=list(spacing),
                                         use_subvoxels=True))
        assert S.nsd(pred, gt, tol, spacing) == pytest.approx(ref, abs=1e-6)


def _ellipsoid(shape, centre, radii):
    g = np.indices(shape).astype(float)
    return sum(((g[i] - centre[i]) / radii[i]) ** 2 for i in range(3)) <= 1


@pytest.mark.parametrize("pred_centre,pred_radii", [((25.5, 24, 24), (14, 11, 12)), ((24, 24, 24), (15, 12, 13))])
def test_conventions_differ_by_the_issue_s_margin_on_organ_like_masks(pred_centre, pred_radii):
    """An organ-sized ellipsoid segmented 1.5 voxels off, or one voxel too large, at τ = 1 voxel."""
    gt = _ellipsoid((48, 48, 48), (24, 24, 24), (14, 11, 12))
    pred = _ellipsoid((48, 48, 48), pred_centre, pred_radii)
    gap = S.nsd(pred, gt, 1.0) - S.nsd(pred, gt, 1.0, convention="voxel")
    assert 0.07 <= gap <= 0.12


def test_names_and_options():
    a = np.zeros((8, 8), bool)
    a[2:5, 2:5] = True
    b = np.roll(a, 1, axis=0)
    assert S.METRICS["nsd_surfel"](a, b, 0.5) == S.nsd(a, b, 0.5)
    assert S.METRICS["nsd_voxel"](a, b, 0.5) == S.nsd(a, b, 0.5, convention="voxel")
    m = S.CaseMeanMetric("nsd", tolerance=0.5, convention="voxel")
    m.update(a, b)
    assert m.compute()["mean"] == S.nsd_voxel(a, b, 0.5)
    with pytest.raises(ValueError, match="convention"):
        S.nsd(a, b, 1.0, convention="area")
    z = np.zeros((8, 8), bool)
    assert S.nsd(z, z, 1.0) == 1.0 and S.nsd(a, z, 1.0) == 0.0 and math.isnan(S.nsd(a, z, 1.0, empty="nan"))
