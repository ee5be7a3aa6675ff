"""The unsupervised infection segmentation and the CT severity grading (card steps 2–8), on arrays.

Everything works on a volume at the working in-plane size (``Settings.size``; the authors resize every slice to
512×512), apex first: ``hu`` float (Z, S, S), ``lobes`` uint8 (Z, S, S) with 1 left upper, 2 left lower, 3 right
upper, 4 right middle, 5 right lower. Sizes in pixels (kernels, areas) are the authors' values on the 512 grid and
are scaled to ``size`` (lengths × size/512, areas × (size/512)², at least one pixel when not zero); vesselness scales
(``vessel_sigmas``) are in working pixels and are not scaled. Morphology uses scipy/scikit-image: discs via exact
Euclidean distance transforms, Canny edges (``skimage.feature.canny``), Frangi vesselness
(``skimage.filters.frangi``), ``remove_small_objects``/``remove_small_holes`` and ``measure.label``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, fields

import numpy as np
from scipy import ndimage as ndi

EIGHT = np.ones((3, 3), bool)  # 8-connectivity, as the authors' OpenCV calls


@dataclass(frozen=True)
class Settings:
    size: int = 512  # working in-plane size (slices are resized to size×size, cubic; lobes nearest)
    # step 2: pleura
    pleura_px: int = 3  # erosion radius (elliptical 3×3 kernel, 3 iterations)
    # step 3: organ linings
    organ_p: tuple[float, float] = (57.0, 79.0)  # p range searched for the organ's onset slice
    organ_min_px: int = 20  # smallest enclosed non-lung blob taken for an organ (512 grid)
    organ_px: int = 4  # dilation of the organ blob (ellipse 5×5, 2 iterations)
    up_mm: float = 4.0  # going up from the onset: total thickness treated
    down_mm: float = 12.0  # going down from the onset: total thickness treated
    down_first_px: int = 20  # first dilation going down (ellipse 5×5, 10 iterations)
    edge_up_cut: float = 0.6  # edge band: drop the lower fraction f of the edge's vertical extent
    edge_down_cut: float = 0.55
    edge_last_cut: float = 0.6
    edge_px: int = 1  # edge band dilation (3×3)
    trim_until_p: float = 87.0  # organ-edge trimming continues down to this p
    no_organ_p: float = 68.0  # no organ found: base trimming starts here
    base_top_px: int = 7  # base trimming: each slice loses its top rows (the code's 7-row roll)
    # step 4: vessels
    vessel_sigmas: tuple[float, ...] = (1.0, 2.0, 3.0)
    vessel_beta: float = 1.0
    vessel_gamma: float | None = None  # None: scikit-image's default (half the largest Hessian norm)
    vessel_threshold: float = 10.0  # on the slice's vesselness rescaled to 0–255
    vessel_floor_hu: float | None = -300.0  # values below are raised to it before the vesselness (None: off)
    vessel_px: int = 1  # dilation of the vessel mask (2×2)
    big_vessel_px: int = 460  # vessels larger than this (512 grid) get one more dilation (3×3)
    # step 5: infection window
    hu_min: float = -595.0
    hu_max: float = -1.0
    # step 6: refinement
    min_object_px: int = 30
    hole_px: int = 30
    min_component_px: int = 0  # the code's 46; 0: off
    drop_isolated_slices: bool = False  # the code's rule; the paper does not mention it
    # step 7: motion artefacts
    motion: bool = True
    motion_px: int = 5  # band half-width (10×10 dilation)
    motion_apex_px: int = 3  # for p ≤ motion_apex_p (7×7)
    motion_apex_p: float = 15.0
    motion_whole_p: float = 7.0  # below this p the whole lung edge is the band
    motion_cut: float = 0.33  # the band keeps the upper 1 − cut of each lung's edge
    motion_area_rule: bool = False  # the code: remove only components smaller than half the band

    @property
    def scale(self) -> float:
        return self.size / 512.0

    def px(self, v: float) -> int:
        return 0 if v <= 0 else max(1, int(round(v * self.scale)))

    def area(self, v: float) -> int:
        return 0 if v <= 0 else max(1, int(round(v * self.scale ** 2)))

    @classmethod
    def from_dict(cls, d: dict) -> Settings:
        names = {f.name for f in fields(cls)}
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in d.items() if k in names})


# -- morphology helpers -------------------------------------------------------------------------------------------
def grow(mask: np.ndarray, r: float) -> np.ndarray:
    """Dilation by a disc of radius ``r`` pixels (exact, via the distance transform)."""
    if r <= 0 or not mask.any():
        return mask.copy()
    return ndi.distance_transform_edt(~mask) <= r


def shrink(mask: np.ndarray, r: float) -> np.ndarray:
    """Erosion by a disc of radius ``r`` pixels."""
    if r <= 0 or not mask.any():
        return mask.copy()
    return ndi.distance_transform_edt(np.pad(mask, 1)) [1:-1, 1:-1] > r


def square(mask: np.ndarray, half: int) -> np.ndarray:
    """Dilation by a (2·half + 1)² square."""
    return ndi.binary_dilation(mask, np.ones((2 * half + 1,) * 2, bool)) if half > 0 and mask.any() else mask.copy()


def edge_band(mask: np.ndarray, cut: float, half: int) -> np.ndarray:
    """The Canny edge of a binary mask, without the lowest ``cut`` fraction of its vertical extent (rows at the
    bottom of the image: posterior), dilated by a (2·half + 1)² square."""
    from skimage.feature import canny

    if not mask.any():
        return np.zeros_like(mask)
    e = canny(mask.astype(float), sigma=1.0) & grow(mask, 1.5)
    if not e.any():
        return np.zeros_like(mask)
    rows = np.nonzero(e.any(1))[0]
    limit = rows[-1] - int((rows[-1] - rows[0]) * cut)
    e[limit:] = False
    return square(e, half)


def _drop_small(mask: np.ndarray, max_size: int) -> np.ndarray:
    """``remove_small_objects``: 8-connected components of ``max_size`` pixels or fewer removed."""
    from skimage.morphology import remove_small_objects

    if max_size < 1:
        return mask
    try:
        return remove_small_objects(mask, max_size=max_size, connectivity=2)
    except TypeError:  # scikit-image < 0.26: min_size removes objects strictly smaller
        return remove_small_objects(mask, min_size=max_size + 1, connectivity=2)


def _fill_small(mask: np.ndarray, max_size: int) -> np.ndarray:
    """``remove_small_holes``: holes of ``max_size`` pixels or fewer filled."""
    from skimage.morphology import remove_small_holes

    if max_size < 1:
        return mask
    try:
        return remove_small_holes(mask, max_size=max_size, connectivity=2)
    except TypeError:
        return remove_small_holes(mask, area_threshold=max_size + 1, connectivity=2)


def percent_labels(lung: np.ndarray) -> np.ndarray:
    """p(z): each slice's position in the craniocaudal lung extent (0 apex … 100 base), extrapolated outside it."""
    has = np.nonzero(lung.reshape(len(lung), -1).any(1))[0]
    if len(has) == 0:
        return np.linspace(0, 100, len(lung))
    start, end = int(has[0]), int(has[-1])
    return (np.arange(len(lung)) - start) * (100.0 / max(1, end - start))


# -- steps ----------------------------------------------------------------------------------------------------------
def remove_pleura(lung: np.ndarray, s: Settings) -> np.ndarray:
    """Step 2: the lung mask eroded slice by slice (both lungs together)."""
    r = s.px(s.pleura_px)
    return np.stack([shrink(m, r) for m in lung])


def organ_onset(lung: np.ndarray, p: np.ndarray, s: Settings) -> tuple[int | None, np.ndarray | None]:
    """The first slice with ``organ_p[0] < p < organ_p[1]`` whose lung mask encloses a non-lung blob (the organ
    dome rising into the base), and that blob (the largest, if several)."""
    lo, hi = s.organ_p
    need = s.area(s.organ_min_px)
    for z in range(len(lung)):
        if not (lo < p[z] < hi) or not lung[z].any():
            continue
        holes = ndi.binary_fill_holes(lung[z]) & ~lung[z]
        lab, n = ndi.label(holes, EIGHT)
        if n == 0:
            continue
        sizes = ndi.sum_labels(holes, lab, range(1, n + 1))
        best = int(np.argmax(sizes))
        if sizes[best] >= need:
            return z, lab == best + 1
    return None, None


def remove_organ_lining(lung: np.ndarray, p: np.ndarray, thickness: float, s: Settings) -> tuple[np.ndarray, dict]:
    """Step 3: remove organs rising into the base and their scatter rim. Going up from the onset slice across
    ``up_mm``: the organ (shrinking per slice) and the anterior edge band, each slice ANDed with the one below; going
    down across ``down_mm``: the organ dilated more on every slice and the edge band, ANDed with the next slice,
    which continues to ``trim_until_p``; then the base trimming (edge band, top rows, AND) to the last slice. Without
    an organ the base trimming starts at ``no_organ_p``."""
    L = lung.copy()
    nz = len(L)
    edge = s.px(s.edge_px)
    z0, organ = organ_onset(L, p, s)
    info = {"organ_slice": z0, "organ_p": float(p[z0]) if z0 is not None else None}
    if z0 is None:
        start = int(np.argmax(p >= s.no_organ_p)) if np.any(p >= s.no_organ_p) else nz
        _trim_base(L, start, s)
        return L, info
    organ = grow(organ, s.px(s.organ_px))
    up, depth, z = organ.copy(), thickness, z0 - 1
    while z >= 0 and depth <= s.up_mm:
        L[z] &= L[z + 1]
        L[z] &= ~up
        L[z] &= ~edge_band(L[z], s.edge_up_cut, edge)
        up = shrink(up, s.px(2 * math.floor(thickness)))
        depth += thickness
        z -= 1
    down, depth, z = grow(organ, s.px(s.down_first_px)), 0.0, z0
    while z < nz - 1 and p[z] < s.trim_until_p:
        L[z] &= L[z + 1]
        if depth <= s.down_mm:
            L[z] &= ~down
            L[z] &= ~edge_band(L[z], s.edge_down_cut, edge)
            down = grow(down, s.px(2 * (math.ceil(thickness) + 1)))
        depth += thickness
        z += 1
    _trim_base(L, z, s)
    return L, info


def _trim_base(L: np.ndarray, start: int, s: Settings) -> None:
    edge, top = s.px(s.edge_px), s.px(s.base_top_px)
    for z in range(max(0, start), len(L) - 1):
        L[z] &= L[z + 1]
        L[z] &= ~edge_band(L[z], s.edge_last_cut, edge)
        if top:
            shifted = np.zeros_like(L[z])
            shifted[top:] = L[z][:-top]
            L[z] &= shifted


def vessel_mask(hu: np.ndarray, lung: np.ndarray, s: Settings) -> np.ndarray:
    """Step 4: bright tubular structures in the lung (Frangi vesselness at ``vessel_sigmas`` on the lung-only image,
    outside filled with the lung's median HU and values below ``vessel_floor_hu`` raised to it; per slice rescaled
    to 0–255 and above ``vessel_threshold``), dilated, the large ones once more."""
    from skimage.filters import frangi

    out = np.zeros(lung.shape, bool)
    if not lung.any():
        return out
    fill = float(np.median(hu[lung]))
    margin = int(3 * max(s.vessel_sigmas)) + 2
    big, grow_px = s.area(s.big_vessel_px), s.px(s.vessel_px)
    for z in np.nonzero(lung.reshape(len(lung), -1).any(1))[0]:
        rows, cols = np.nonzero(lung[z].any(1))[0], np.nonzero(lung[z].any(0))[0]
        r0, r1 = max(0, rows[0] - margin), min(lung.shape[1], rows[-1] + margin + 1)
        c0, c1 = max(0, cols[0] - margin), min(lung.shape[2], cols[-1] + margin + 1)
        m = lung[z, r0:r1, c0:c1]
        img = np.where(m, hu[z, r0:r1, c0:c1], fill).astype(np.float64)
        if s.vessel_floor_hu is not None:  # opacity below the floor makes no ridges (its plateau edges would)
            img = np.maximum(img, s.vessel_floor_hu)
        v = frangi(img, sigmas=s.vessel_sigmas, alpha=0.5, beta=s.vessel_beta, gamma=s.vessel_gamma,
                   black_ridges=False)
        top = float(v.max())
        if top <= 0:
            continue
        vm = (255.0 * v / top > s.vessel_threshold) & m
        vm = square(vm, grow_px) if grow_px else vm
        if big and vm.any():
            large = _drop_small(vm, big)  # the components larger than big
            vm |= square(large, 1)
        out[z, r0:r1, c0:c1] = vm
    return out


def motion_bands(lung: np.ndarray, lobes: np.ndarray, p: np.ndarray, s: Settings) -> np.ndarray:
    """Step 7's bands: the dilated edge of each lung's upper region (the whole edge near the apex)."""
    out = np.zeros(lung.shape, bool)
    for z in range(len(lung)):
        if not lung[z].any():
            continue
        if p[z] < s.motion_whole_p:
            out[z] = square(edge_band(lung[z], 0.0, 0), s.px(s.motion_px))
            continue
        half = s.px(s.motion_px if p[z] > s.motion_apex_p else s.motion_apex_px)
        left, right = lung[z] & (lobes[z] <= 2), lung[z] & (lobes[z] >= 3)
        e = edge_band(left, s.motion_cut, 0) | edge_band(right, s.motion_cut, 0)
        out[z] = square(e, half)
    return out


def refine(raw: np.ndarray, bands: np.ndarray, s: Settings) -> np.ndarray:
    """Steps 6–7 in the authors' order: drop components under ``min_object_px``; drop those under
    ``min_component_px`` and those whose centroid lies in the motion band (with ``motion_area_rule``: only if smaller
    than half the band); fill holes under ``hole_px``; optionally drop slices whose neighbours hold no infection."""
    from skimage.measure import label, regionprops

    out = np.zeros(raw.shape, bool)
    small, comp, holes = s.area(s.min_object_px), s.area(s.min_component_px), s.area(s.hole_px)
    for z in range(len(raw)):
        m = raw[z]
        if not m.any():
            continue
        if small:
            m = _drop_small(m, small - 1)
        lab = label(m, connectivity=2)
        band = bands[z]
        band_n = int(band.sum())
        for r in regionprops(lab):
            cy, cx = (int(round(c)) for c in r.centroid)
            in_band = s.motion and band[min(cy, band.shape[0] - 1), min(cx, band.shape[1] - 1)]
            if (comp and r.area < comp) or (in_band and (not s.motion_area_rule or r.area < band_n // 2)):
                m[lab == r.label] = False
        if holes and m.any():
            m = _fill_small(m, holes - 1)
        out[z] = m
    if s.drop_isolated_slices:
        has = out.reshape(len(out), -1).any(1)
        for z in range(1, len(out) - 1):
            if has[z] and not has[z - 1] and not has[z + 1]:
                out[z] = False
    return out


@dataclass
class Result:
    infection: np.ndarray  # (Z, S, S) bool
    p: np.ndarray
    organ: dict
    stages: dict = field(default_factory=dict)  # name → (Z, S, S) bool, the masks after each step


def lung_box(lung: np.ndarray, margin: int) -> tuple[slice, slice]:
    """The in-plane bounding box of the lung over all slices, grown by ``margin`` pixels (clipped to the image)."""
    rows, cols = np.nonzero(lung.any((0, 2)))[0], np.nonzero(lung.any((0, 1)))[0]
    if len(rows) == 0:
        return slice(0, lung.shape[1]), slice(0, lung.shape[2])
    return (slice(max(0, rows[0] - margin), min(lung.shape[1], rows[-1] + margin + 1)),
            slice(max(0, cols[0] - margin), min(lung.shape[2], cols[-1] + margin + 1)))


def segment(hu: np.ndarray, lobes: np.ndarray, thickness: float, s: Settings, *, keep_stages: bool = False) -> Result:
    """Steps 2–7 on one volume: the binary infection mask. Every step works inside the lungs' in-plane bounding box
    (with a margin of background wider than any kernel that reaches outside the lung), which gives the same masks
    as the whole slice at a fraction of the cost: every mask is ANDed with the lung, and the margin keeps edges,
    enclosed holes and distances the same."""
    lung0 = lobes > 0
    rs, cs = lung_box(lung0, s.px(s.base_top_px) + s.px(s.motion_px) + 8)
    crop = (slice(None), rs, cs)
    hu_c, lobes_c, lung0_c = hu[crop], lobes[crop], lung0[crop]
    p = percent_labels(lung0_c)
    lung1 = remove_pleura(lung0_c, s)
    lung2, organ = remove_organ_lining(lung1, p, thickness, s)
    vessels = vessel_mask(hu_c, lung2, s)
    lung3 = lung2 & ~vessels
    raw = lung3 & (hu_c >= s.hu_min) & (hu_c <= s.hu_max)
    infection = refine(raw, motion_bands(lung1, lobes_c, p, s) if s.motion else np.zeros_like(raw), s)

    def full(mask: np.ndarray) -> np.ndarray:
        out = np.zeros(lung0.shape, bool)
        out[crop] = mask
        return out

    named = (("pleura", lung1), ("organ", lung2), ("vessels", vessels), ("cleaned", lung3), ("threshold", raw))
    stages = {"lung": lung0, **{k: full(v) for k, v in named}} if keep_stages else {}
    return Result(full(infection), p, organ, stages)


# -- step 8: grading ------------------------------------------------------------------------------------------------
def involvement(infection: np.ndarray, lobes: np.ndarray) -> tuple[list[int], list[int]]:
    """Per lobe 1–5: (voxels of the lobe, infected voxels in it)."""
    lob = lobes.ravel()
    voxels = np.bincount(lob, minlength=6)[1:6]
    infected = np.bincount(lob[infection.ravel()], minlength=6)[1:6]
    return [int(v) for v in voxels], [int(v) for v in infected]


def lobe_score(pct: float) -> int:
    """0 for no involvement; 1 below 5 %; 2 for 5–25 %; 3 above 25 and below 50 %; 4 for 50–75 %; 5 above 75 %."""
    if not pct > 0:
        return 0
    return 1 if pct < 5 else 2 if pct <= 25 else 3 if pct < 50 else 4 if pct <= 75 else 5


def severity(ctss: int, classes: int = 3) -> int:
    """Severity class of a CT severity score: 0 mild (< 8), 1 moderate (8–15), 2 severe (> 15); with
    ``classes=4`` the authors' code's extra class 0 'no involvement' (CTSS 0) shifts the others by one."""
    c = 0 if ctss < 8 else 1 if ctss <= 15 else 2
    return c if classes == 3 else (0 if ctss == 0 else c + 1)


SEVERITY = ["mild", "moderate", "severe"]
SEVERITY4 = ["none", "mild", "moderate", "severe"]


def grade(voxels: list[int], infected: list[int]) -> dict:
    """Per-lobe involvement (%) and score, the CTSS (0–25) and the severity of one scan."""
    pct = [100.0 * i / v if v else math.nan for v, i in zip(voxels, infected, strict=True)]
    scores = [lobe_score(x) if math.isfinite(x) else 0 for x in pct]
    ctss = int(sum(scores))
    return {"involvement": pct, "scores": scores, "ctss": ctss, "severity": SEVERITY[severity(ctss)],
            "missing_lobes": [i + 1 for i, v in enumerate(voxels) if not v]}
