"""The classical steps of the specular card: intensity, MMSER (component tree), Eq. 5 saturation, the
intensity–saturation test, false-region removal, fusion, Navier–Stokes inpainting, the weight-free detection
baselines, and the per-image detection metrics. NumPy, SciPy, scikit-image and OpenCV only."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage as ndi

EIGHT = np.ones((3, 3), bool)
REF_AREA = 384 * 288  # CVC-ClinicSpec's frame size, where t_h = 20 px


@dataclass(frozen=True)
class Params:
    delta: int = 5
    a_max: float = 0.001  # fraction of the image area
    min_area: int = 1
    floor: bool = True  # keep regions with I ≥ ½·max(I) only
    stability: str = "paper"  # paper: |A(t−Δ) − A(t)|; normalised: divided by A(t) (standard MSER)
    mser_impl: str = "tree"  # tree: scipy component tree; opencv: cv2.MSER (normalised stability)
    t_h: float = 20.0  # false-region area threshold at 384×288, scaled by H·W/(384·288)
    sat: str = "paper"  # paper: Eq. 5; hsv: (max − min)/max · 255


def intensity(rgb: np.ndarray) -> np.ndarray:
    """Eq. 1: I = (r + g + b)/3 in [0, 255]."""
    return rgb.astype(np.float32).mean(-1)


def saturation(rgb: np.ndarray, kind: str = "paper") -> np.ndarray:
    """Eq. 5 as written (it can go negative): ½(2r − g − b) if b + r ≥ 2g else ½(r + g − 2b); or HSV saturation."""
    r, g, b = (rgb[..., i].astype(np.float32) for i in range(3))
    if kind == "hsv":
        mx, mn = rgb.max(-1).astype(np.float32), rgb.min(-1).astype(np.float32)
        return np.where(mx > 0, (mx - mn) / np.maximum(mx, 1) * 255, 0)
    return np.where(b + r >= 2 * g, 0.5 * (2 * r - g - b), 0.5 * (r + g - 2 * b))


def mmser(gray: np.ndarray, p: Params) -> np.ndarray:
    """M_RS: union of the bright extremal regions that are local minima of the stability along their chain of
    the component tree of upper level sets {I ≥ t} (8-connected), with A < A_max."""
    img = np.clip(np.rint(gray), 0, 255).astype(np.uint8)
    a_max = p.a_max * img.size
    if p.mser_impl == "opencv":
        return _mser_opencv(img, p, a_max)
    t0 = int(np.ceil(img.max() / 2)) if p.floor else 0
    start = max(0, t0 - p.delta - 1)  # levels below the floor only give the first kept levels a full Δ
    levels = list(range(start, int(img.max()) + 1))
    # per level: area of each component, one member pixel, parent component at the level below
    areas, parents, labels = [], [], []
    prev = None
    for t in levels:
        lab, n = ndi.label(img >= t, EIGHT)
        lf = lab.ravel()
        idx = np.flatnonzero(lf)
        rep = np.zeros(n + 1, np.int64)
        rep[lf[idx]] = idx  # any member pixel links a component to its parent
        areas.append(np.bincount(lf, minlength=n + 1)[1:].astype(np.float64))
        parents.append(prev[rep[1:]] - 1 if prev is not None else np.full(n, -1))
        labels.append(lf)
        prev = lf
    nl = len(levels)
    # stability S(t) = |A(ancestor Δ levels down) − A(t)| (clamped at the first level)
    stab = []
    for i in range(nl):
        anc = np.arange(len(areas[i]))
        j = i
        for _ in range(p.delta):
            if j == 0:
                break
            anc = parents[j][anc]
            j -= 1
        s = areas[j][anc] - areas[i] if i - j == p.delta else np.full(len(areas[i]), np.inf)
        stab.append(s / areas[i] if p.stability == "normalised" else s)
    # the chain continues upward through the largest child. A run of equal S along the chain counts as one value:
    # up[i] is the first S above the region that differs from its own. A leaf has no S(t+1): it ends a run as a
    # minimum only when its area did not change over Δt levels (S = 0, a stable plateau), else it is never kept
    child = [np.full(len(a), -1) for a in areas]
    for i in range(1, nl):
        par = parents[i]
        if len(par) == 0:
            continue
        order = np.lexsort((areas[i], par))  # per parent, largest child last
        last = np.r_[par[order][1:] != par[order][:-1], True]
        child[i - 1][par[order][last]] = order[last]
    up = [np.where(st == 0, np.inf, -np.inf) for st in stab]
    for i in range(nl - 2, -1, -1):
        c = child[i]
        has = c >= 0
        cs = stab[i + 1][c[has]]
        up[i][has] = np.where(cs != stab[i][has], cs, up[i + 1][c[has]])
    out = np.zeros(img.size, bool)
    for i in range(nl):
        # levels below the floor only serve as ancestors: the chain starts at the floor
        par_s = stab[i - 1][parents[i]] if i > 0 and levels[i - 1] >= t0 else np.full(len(areas[i]), np.inf)
        keep = (stab[i] < par_s) & (stab[i] < up[i]) & (areas[i] < a_max) & (areas[i] >= p.min_area)
        keep &= np.isfinite(stab[i]) & (levels[i] >= t0)
        if keep.any():
            ids = np.zeros(len(areas[i]) + 1, bool)
            ids[1:] = keep
            out |= ids[labels[i]]
    return out.reshape(img.shape)


def _mser_opencv(img: np.ndarray, p: Params, a_max: float) -> np.ndarray:
    """cv2.MSER on I (normalised stability), keeping regions brighter than their 1-px outer ring."""
    import cv2

    mser = cv2.MSER_create(delta=p.delta, min_area=max(1, p.min_area), max_area=max(2, int(a_max)))
    regions, _ = mser.detectRegions(img)
    out = np.zeros(img.shape, bool)
    floor = img.max() / 2 if p.floor else -1
    for reg in regions:
        m = np.zeros(img.shape, bool)
        m[reg[:, 1], reg[:, 0]] = True
        ring = ndi.binary_dilation(m, EIGHT) & ~m
        inside = img[m].mean()
        if inside >= floor and (not ring.any() or inside > img[ring].mean()):
            out |= m
    return out


def is_candidates(rgb: np.ndarray, p: Params) -> np.ndarray:
    """Eq. 6: I ≥ ½·max(I) and S ≤ ⅓·max(S), image-wise maxima."""
    i, s = intensity(rgb), saturation(rgb, p.sat)
    return (i >= 0.5 * i.max()) & (s <= s.max() / 3.0)


def t_h_for(shape, p: Params) -> float:
    return p.t_h * shape[0] * shape[1] / REF_AREA


def remove_false_regions(cand: np.ndarray, p: Params) -> np.ndarray:
    """Eq. 7: keep the 8-connected components of IS with area ≤ t_h (scaled to the image size)."""
    from skimage.morphology import remove_small_objects

    big = remove_small_objects(cand, max_size=int(np.floor(t_h_for(cand.shape, p))), connectivity=2)
    return cand & ~big


def detect(rgb: np.ndarray, p: Params) -> dict[str, np.ndarray]:
    """The three ablation masks: mmser (M_RS), is (IS, no removal), is_en (IS after removal), fused (Eq. 8)."""
    m = mmser(intensity(rgb), p)
    cand = is_candidates(rgb, p)
    en = remove_false_regions(cand, p)
    return {"mmser": m, "is": cand, "is_en": en, "fused": m | en}


def baseline_shen(rgb: np.ndarray, thr: float = 0.9) -> np.ndarray:
    """Shen-style: grey level ≥ thr·max, then a 3×3 opening-free closing (fills pinholes)."""
    g = intensity(rgb)
    return ndi.binary_closing(g >= thr * g.max(), EIGHT)


def baseline_arnold(rgb: np.ndarray, t_abs: float = 235.0, t_rel: float = 1.15) -> np.ndarray:
    """Arnold-style two-level threshold: absolutely bright pixels, or pixels brighter than t_rel × their median-
    filtered surroundings (31×31) that are also above the image's 75th percentile."""
    import cv2

    g = intensity(rgb)
    bg = cv2.medianBlur(np.clip(np.rint(g), 0, 255).astype(np.uint8), 31).astype(np.float32)
    return (g >= t_abs) | ((g >= t_rel * bg) & (g >= np.percentile(g, 75)) & (g >= 0.6 * g.max()))


def variants(rgb: np.ndarray, p: Params, which) -> dict[str, np.ndarray]:
    d = detect(rgb, p)
    out = {k: d[k] for k in ("fused", "mmser", "is", "is_en") if k in which}
    if "shen" in which:
        out["shen"] = baseline_shen(rgb)
    if "arnold" in which:
        out["arnold"] = baseline_arnold(rgb)
    return out


def inpaint(rgb: np.ndarray, mask: np.ndarray, method: str = "ns", radius: int = 3) -> np.ndarray:
    """Eq. 9: cv2.inpaint on the mask dilated once by 3×3 (NS by default; telea; arnold = two-level: NS on the
    core, then the ring blended with a Gaussian-smoothed copy)."""
    import cv2

    dil = ndi.binary_dilation(mask, EIGHT).astype(np.uint8) * 255
    if method == "telea":
        return cv2.inpaint(rgb, dil, radius, cv2.INPAINT_TELEA)
    out = cv2.inpaint(rgb, dil, radius, cv2.INPAINT_NS)
    if method == "arnold":
        ring = ndi.binary_dilation(dil > 0, EIGHT, iterations=2)
        smooth = cv2.GaussianBlur(out, (0, 0), 2.0)
        out = np.where(ring[..., None], smooth, out)
    return out


def scores(pred: np.ndarray, gt: np.ndarray) -> dict[str, float]:
    """Pixel accuracy, precision, recall, F1 (Dice) and Jaccard of one image (medrun.metrics.segmentation)."""
    from medrun.metrics import segmentation as seg

    c = seg.confusion_counts(pred, gt)
    return {"accuracy": (c["tp"] + c["tn"]) / max(1, pred.size), "precision": seg.precision(pred, gt),
            "recall": seg.recall(pred, gt), "f1": seg.dice(pred, gt), "jaccard": seg.iou(pred, gt), **c}


def pooled(counts: list[dict]) -> dict[str, float]:
    tp, fp, fn, tn = (sum(c[k] for c in counts) for k in ("tp", "fp", "fn", "tn"))
    p = tp / (tp + fp) if tp + fp else 0.0
    r = tp / (tp + fn) if tp + fn else 0.0
    return {"accuracy": (tp + tn) / max(1, tp + fp + fn + tn), "precision": p, "recall": r,
            "f1": 2 * tp / max(1, 2 * tp + fp + fn), "jaccard": tp / max(1, tp + fp + fn)}
