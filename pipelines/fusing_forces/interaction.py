"""The simulated human of fusing-forces (card, Algorithms 1–3 and "Simulated interaction"), numpy/scipy/scikit-image
only: stroke statistics, error maps, skeleton segments, one simulated stroke, and the pasted mask Y^Δ (Eq. 1).

All masks are boolean (H, W) arrays; Δ is int8 with +1 = add, −1 = erase, 0 = no hint.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage
from skimage.morphology import skeletonize

K_EDGE = np.array([[1, 1, 1], [1, 10, 1], [1, 1, 1]])
EIGHT = np.ones((3, 3), bool)


def skel(mask: np.ndarray) -> np.ndarray:
    """Zhang–Suen skeleton (``skimage.morphology.skeletonize``) of a boolean mask."""
    mask = np.asarray(mask, bool)
    return skeletonize(mask) if mask.any() else np.zeros_like(mask)


# -- Algorithm 1: stroke statistics ----------------------------------------------------------------------------
def skeleton_widths(mask: np.ndarray) -> np.ndarray:
    """Euclidean distance transform of the foreground sampled at its skeleton pixels (≈ half the stroke width)."""
    mask = np.asarray(mask, bool)
    return ndimage.distance_transform_edt(mask)[skel(mask)].astype(np.float64)


@dataclass(frozen=True)
class WidthStats:
    mu: float  # mean after dropping values outside the initial mean ± 2 sd
    sigma: float
    a: float  # scipy.stats.gamma shape, loc, scale fitted to the kept values
    loc: float
    scale: float
    n_all: int
    n_kept: int

    @property
    def gamma_mean(self) -> float:
        return self.a * self.scale + self.loc

    def sample(self, rng: np.random.Generator) -> float:
        from scipy.stats import gamma

        return float(gamma.rvs(self.a, loc=self.loc, scale=self.scale, random_state=rng))


def fit_widths(values: np.ndarray) -> WidthStats:
    """Alg. 1: drop values outside mean ± 2·sd, then μ, σ and a Gamma fit (``scipy.stats.gamma.fit``) of the rest."""
    from scipy.stats import gamma

    v = np.asarray(values, np.float64)
    m0, s0 = v.mean(), v.std()
    kept = v[np.abs(v - m0) <= 2 * s0]
    a, loc, scale = gamma.fit(kept)
    return WidthStats(float(kept.mean()), float(kept.std()), float(a), float(loc), float(scale), len(v), len(kept))


# -- Algorithm 2: error maps -----------------------------------------------------------------------------------
def get_add(y: np.ndarray, gt_skel: np.ndarray) -> np.ndarray:
    """False negatives: skel(Y*) ∧ ¬Y."""
    return np.asarray(gt_skel, bool) & ~np.asarray(y, bool)


def get_erase(y: np.ndarray, gt_skel: np.ndarray, tolerance: int = 9) -> np.ndarray:
    """False positives: ¬dilate(skel(Y*), ``tolerance`` iterations of the cross) ∧ skel(Y)."""
    gt_skel = np.asarray(gt_skel, bool)
    near = ndimage.binary_dilation(gt_skel, iterations=tolerance) if gt_skel.any() and tolerance > 0 else gt_skel
    return ~near & skel(y)


# -- Algorithm 3: segments -------------------------------------------------------------------------------------
def segments(skeleton: np.ndarray) -> list[np.ndarray]:
    """Skeleton pixels with exactly two 8-neighbours (convolution with K_edge == 12), 8-connected components, as
    (n, 2) row/col arrays sorted by size, largest first."""
    s = np.asarray(skeleton, bool)
    inner = s & (ndimage.convolve(s.astype(np.int32), K_EDGE, mode="constant") == 12)
    lab, n = ndimage.label(inner, structure=EIGHT)
    if n == 0:
        return []
    comps = [np.argwhere(lab == i) for i in range(1, n + 1)]
    return sorted(comps, key=len, reverse=True)


def walk(pixels: np.ndarray) -> np.ndarray:
    """The pixels of one segment ordered along the path (from an end; from the first pixel of a closed loop)."""
    pts = [tuple(p) for p in pixels]
    left = set(pts)

    def nbrs(p):
        return [(p[0] + dy, p[1] + dx) for dy in (-1, 0, 1) for dx in (-1, 0, 1) if (dy or dx)
                and (p[0] + dy, p[1] + dx) in left]

    start = next((p for p in pts if len(nbrs(p)) <= 1), pts[0])
    order = [start]
    left.discard(start)
    while True:
        nxt = nbrs(order[-1])
        if not nxt:
            break
        nxt.sort(key=lambda q: abs(q[0] - order[-1][0]) + abs(q[1] - order[-1][1]))  # 4-neighbours first
        order.append(nxt[0])
        left.discard(nxt[0])
    return np.array(order)


def sub_segment(seg: np.ndarray, rng: np.random.Generator, length: int = 11, raster: bool = False) -> np.ndarray:
    """Up to ``length`` pixels (±length//2) around a random centre: along the path, or (``raster``, the repo's
    behaviour) consecutive in raster order."""
    path = seg[np.lexsort((seg[:, 1], seg[:, 0]))] if raster else walk(seg)
    c = int(rng.integers(len(path)))
    half = length // 2
    return path[max(0, c - half): c + half + 1]


def stroke_mask(pixels: np.ndarray, shape, width: float) -> np.ndarray:
    """The sub-segment dilated with ``round(width)`` iterations of scipy's default cross (as the repo)."""
    m = np.zeros(shape, bool)
    m[pixels[:, 0], pixels[:, 1]] = True
    it = int(round(width))
    return ndimage.binary_dilation(m, iterations=it) if it > 0 else m


def merge(delta: np.ndarray, stroke: np.ndarray, sign: int) -> np.ndarray:
    """Δ with the new stroke written only where Δ == 0 (earlier strokes stay fixed)."""
    out = delta.copy()
    out[stroke & (delta == 0)] = sign
    return out


def paste(y: np.ndarray, delta: np.ndarray) -> np.ndarray:
    """Eq. 1, Y^Δ: 1 where Δ = +1, 0 where Δ = −1, Y elsewhere."""
    return np.where(delta > 0, True, np.where(delta < 0, False, np.asarray(y, bool)))


@dataclass
class Stroke:
    op: str  # "add" | "erase" | "none"
    delta: np.ndarray  # Δ after the stroke
    pixels: int  # new human pixels


def candidates(y, gt_skel, tolerance: int = 9) -> dict[str, list[np.ndarray]]:
    return {"add": segments(get_add(y, gt_skel)), "erase": segments(get_erase(y, gt_skel, tolerance))}


def simulate(y: np.ndarray, gt_skel: np.ndarray, delta: np.ndarray, rng: np.random.Generator, width: float, *,
             policy: str = "longest", tolerance: int = 9, length: int = 11, raster: bool = False,
             segs: dict | None = None) -> Stroke:
    """One simulated stroke on the current mask Y. ``policy``: ``random`` (training: add/erase with p 0.5, the other
    if the chosen map is empty), ``longest`` (patch-level inference: the operation whose longest segment is longer),
    ``add`` or ``erase`` (only that operation). The stroke is drawn in the longest segment of that operation."""
    segs = candidates(y, gt_skel, tolerance) if segs is None else segs
    if policy == "random":
        first = "add" if rng.random() < 0.5 else "erase"
        op = first if segs[first] else ("erase" if first == "add" else "add")
    elif policy == "longest":
        la, le = (len(segs[k][0]) if segs[k] else 0 for k in ("add", "erase"))
        op = "add" if la >= le else "erase"
    else:
        op = policy
    if not segs.get(op):
        return Stroke("none", delta, 0)
    stroke = stroke_mask(sub_segment(segs[op][0], rng, length, raster), y.shape, width)
    new = merge(delta, stroke, 1 if op == "add" else -1)
    return Stroke(op, new, int(np.count_nonzero(new != delta)))
