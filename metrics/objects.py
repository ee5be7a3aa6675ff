"""Object-level Dice and Hausdorff distance of the GlaS challenge (Sirinukunwattana et al., Medical Image
Analysis 35, 2017, section 4.2), the scores MTUNet and MA-DTNet report on GlaS Test A / Test B.

Inputs: ``pred`` (S) and ``gt`` (G), 2D maps of one shape: integer instance labels (0 = background, every other
value one object) or a boolean mask, whose 8-connected components are taken as objects (``objects``). Card:
ma-dtnet (Table 6).

With γ_i = |G_i| / Σ|G| and σ_j = |S_j| / Σ|S| (each map's objects weighted by their share of its foreground):

- ``object_dice`` = ½ [Σ_i γ_i Dice(G_i, S*(G_i)) + Σ_j σ_j Dice(G*(S_j), S_j)], where S*(G_i) is the object of S
  that overlaps G_i most (Dice 0 when none overlaps) and G*(S_j) likewise.
- ``object_hausdorff`` = ½ [Σ_i γ_i H(G_i, S*(G_i)) + Σ_j σ_j H(G*(S_j), S_j)], H the symmetric Hausdorff distance
  between the two objects' pixel sets in pixels; S*(G_i) is the most-overlapping object and, when none overlaps, the
  object of S nearest to G_i in Hausdorff distance (the challenge's rule), and G*(S_j) likewise.

Ties in overlap go to the lower label. Empty maps: both empty → Dice 1, Hausdorff 0 (nothing to find, nothing
found); one empty → Dice 0 and Hausdorff ``inf`` (the challenge leaves it undefined; a caller averaging over images
leaves ``inf`` out and counts it, as the segmentation metrics' HD95). The distances use exact Euclidean distance
transforms (``scipy.ndimage.distance_transform_edt``) of each object's complement.
"""

from __future__ import annotations

import math

import numpy as np

from ._arrays import to_numpy

__all__ = ["object_dice", "object_hausdorff", "objects"]


def objects(mask) -> np.ndarray:
    """An integer instance map: a boolean mask becomes its 8-connected components; an integer map is kept."""
    from scipy import ndimage

    arr = to_numpy(mask)
    if arr.ndim != 2:
        raise ValueError(f"object metrics take 2D maps, got shape {arr.shape}")
    if arr.dtype == bool:
        return ndimage.label(arr, structure=np.ones((3, 3), bool))[0]
    return arr.astype(np.int64)


def _prepare(pred, gt):
    s, g = objects(pred), objects(gt)
    if s.shape != g.shape:
        raise ValueError(f"pred and gt must have one shape, got {s.shape} and {g.shape}")
    s_ids, g_ids = np.unique(s[s > 0]), np.unique(g[g > 0])
    # overlap[i, j] = |G_i ∩ S_j|, by one bincount over the pairs of (gt index, pred index)
    gi = np.where(g.ravel() > 0, np.searchsorted(g_ids, g.ravel()), -1)
    si = np.where(s.ravel() > 0, np.searchsorted(s_ids, s.ravel()), -1)
    both = (gi >= 0) & (si >= 0)
    overlap = np.bincount(gi[both] * len(s_ids) + si[both], minlength=len(g_ids) * len(s_ids)).reshape(
        len(g_ids), len(s_ids))
    g_area = np.array([(g == k).sum() for k in g_ids], dtype=float)
    s_area = np.array([(s == k).sum() for k in s_ids], dtype=float)
    return s, g, s_ids, g_ids, overlap, g_area, s_area


def object_dice(pred, gt) -> float:
    """Object-level Dice of the GlaS challenge (module docstring), in [0, 1]."""
    _, _, s_ids, g_ids, overlap, g_area, s_area = _prepare(pred, gt)
    if not len(g_ids) or not len(s_ids):
        return 1.0 if not len(g_ids) and not len(s_ids) else 0.0
    dice = 2 * overlap / (g_area[:, None] + s_area[None, :])  # Dice of every pair
    best_s = dice[np.arange(len(g_ids)), overlap.argmax(1)] * (overlap.max(1) > 0)
    best_g = dice[overlap.argmax(0), np.arange(len(s_ids))] * (overlap.max(0) > 0)
    return float(0.5 * ((g_area / g_area.sum()) @ best_s + (s_area / s_area.sum()) @ best_g))


def object_hausdorff(pred, gt) -> float:
    """Object-level Hausdorff distance of the GlaS challenge in pixels (module docstring); ``inf`` when exactly one
    of the maps is empty."""
    from scipy import ndimage

    s, g, s_ids, g_ids, overlap, g_area, s_area = _prepare(pred, gt)
    if not len(g_ids) or not len(s_ids):
        return 0.0 if not len(g_ids) and not len(s_ids) else math.inf
    g_masks = [g == k for k in g_ids]
    s_masks = [s == k for k in s_ids]
    g_dist = [ndimage.distance_transform_edt(~m) for m in g_masks]  # distance to G_i from every pixel
    s_dist = [ndimage.distance_transform_edt(~m) for m in s_masks]
    haus = np.array([[max(s_dist[j][gm].max(), g_dist[i][sm].max()) for j, sm in enumerate(s_masks)]
                     for i, gm in enumerate(g_masks)])
    # the most-overlapping partner, or the Hausdorff-nearest one where nothing overlaps
    pick_s = np.where(overlap.max(1) > 0, overlap.argmax(1), haus.argmin(1))
    pick_g = np.where(overlap.max(0) > 0, overlap.argmax(0), haus.argmin(0))
    h_g = haus[np.arange(len(g_ids)), pick_s]
    h_s = haus[pick_g, np.arange(len(s_ids))]
    return float(0.5 * ((g_area / g_area.sum()) @ h_g + (s_area / s_area.sum()) @ h_s))
