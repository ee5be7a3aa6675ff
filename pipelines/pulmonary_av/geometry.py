"""The paper's classical parts (card pulmonary-av): Stage 1a (intrapulmonary prior from marching-cubes
isosurfaces), skeleton nodes and terminal counts, and Stage 3, ASE (connectivity + classification refinement).

Skeletons are scikit-image's Lee skeletonisation (the paper's ref [3]), components scipy/scikit-image labelling
with 26-connectivity, nearest candidates a scipy cKDTree; nothing here is a hand-written morphology."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy import ndimage

CUBE = np.ones((3, 3, 3), bool)


# -- Stage 1a ------------------------------------------------------------------------------------------------------
def prior_in(hu: np.ndarray, lung: np.ndarray, spacing, iso_levels=(700, 800, 900, 1000), offset: float = 1024,
             fast_threshold: bool = False, axes=(2, 1, 0)) -> np.ndarray:
    """P_in: the union of the isosurfaces of HU + ``offset`` at ``iso_levels`` (marching cubes, vertices mapped
    back to voxel indices by rounding), kept inside the lung, holes filled in 3D and then per slice along ``axes``
    (the card: axial only, ``(2,)``; default also coronal and sagittal, which closes tubes running in-plane).
    ``fast_threshold``: HU + offset ≥ min(iso_levels) inside the lung instead of the meshes."""
    from skimage.measure import marching_cubes

    vol = hu + np.float32(offset)
    if fast_threshold:
        surf = vol >= min(iso_levels)
    else:
        surf = np.zeros(vol.shape, bool)
        lo, hi = float(vol.min()), float(vol.max())
        for level in iso_levels:
            if not lo < level < hi:
                continue
            verts, *_ = marching_cubes(vol, level=float(level), spacing=tuple(float(s) for s in spacing))
            idx = np.clip(np.round(verts / np.asarray(spacing, float)).astype(int), 0, np.array(vol.shape) - 1)
            surf[tuple(idx.T)] = True
    p = surf & lung
    p = ndimage.binary_fill_holes(p)
    for axis in axes:  # per slice: axial (NIfTI's third axis) first, then the others (``fill_axes``)
        for i in range(p.shape[axis]):
            sl = [slice(None)] * 3
            sl[axis] = i
            p[tuple(sl)] = ndimage.binary_fill_holes(p[tuple(sl)])
    return p & lung


# -- skeleton nodes --------------------------------------------------------------------------------------------
def skeleton(mask: np.ndarray) -> np.ndarray:
    from skimage.morphology import skeletonize

    return skeletonize(mask.astype(bool), method="lee") > 0


def neighbour_counts(skel: np.ndarray) -> np.ndarray:
    """N per skeleton voxel: skeleton voxels in its 26-neighbourhood (0 off the skeleton)."""
    n = ndimage.convolve(skel.astype(np.int16), CUBE.astype(np.int16), mode="constant") - skel
    return np.where(skel, n, 0)


def terminals(mask: np.ndarray) -> int:
    """The terminal-vessel count: skeleton voxels with exactly one skeleton neighbour."""
    skel = skeleton(mask > 0)
    return int((neighbour_counts(skel) == 1).sum()) if skel.any() else 0


@dataclass
class Nodes:
    skel: np.ndarray
    counts: np.ndarray
    endpoints: np.ndarray  # (k, 3) voxel indices
    centroids: np.ndarray  # (m, 3): per 26-connected cluster of branch voxels, its voxel with the largest N
    component: np.ndarray  # skeleton component label per voxel


def nodes(mask: np.ndarray) -> Nodes:
    skel = skeleton(mask > 0)
    counts = neighbour_counts(skel)
    ends = np.argwhere(counts == 1)
    branch = counts >= 3
    lab, n = ndimage.label(branch, CUBE)
    cents = []
    if n:
        for sl_i, sl in enumerate(ndimage.find_objects(lab), 1):
            local = np.where(lab[sl] == sl_i, counts[sl], -1)
            k = np.unravel_index(int(np.argmax(local)), local.shape)
            cents.append([s.start + i for s, i in zip(sl, k, strict=True)])
    comp, _ = ndimage.label(skel, CUBE)
    return Nodes(skel, counts, ends, np.array(cents, int).reshape(-1, 3), comp)


def walk(skel: np.ndarray, start, steps: int = 3) -> list[np.ndarray]:
    """The skeleton voxels ``steps`` nodes from ``start`` along the skeleton (breadth first, 26-neighbours): one
    per incident branch (an endpoint has one; a bifurcation centroid one per branch)."""
    shape = np.array(skel.shape)
    offs = np.argwhere(CUBE) - 1
    offs = offs[np.any(offs != 0, 1)]
    seen = {tuple(start)}
    frontier = [np.asarray(start)]
    for _ in range(steps):
        nxt = []
        for p in frontier:
            for q in p + offs:
                t = tuple(q)
                if np.all(q >= 0) and np.all(q < shape) and t not in seen and skel[t]:
                    seen.add(t)
                    nxt.append(q)
        if not nxt:
            break
        frontier = nxt
    return [p for p in frontier if tuple(p) != tuple(start)]


# -- Stage 3: ASE ---------------------------------------------------------------------------------------------
@dataclass
class AseReport:
    pairs: list[dict] = field(default_factory=list)
    filled: int = 0
    relabelled: int = 0
    iterations: int = 0


def angle_deg(p0, q, k) -> float:
    """α = arccos[((P0 − Q)·(K − P0)) / (|P0 − Q| |K − P0|)] in degrees."""
    a, b = np.asarray(p0, float) - q, np.asarray(k, float) - p0
    den = np.linalg.norm(a) * np.linalg.norm(b)
    return float(np.degrees(np.arccos(np.clip(a @ b / den, -1, 1)))) if den > 0 else 180.0


def end_radius(seg: np.ndarray, comp: np.ndarray, p0, n_hat, spacing, window_mm: float = 10.0) -> float:
    """R at an end: the largest distance (mm) from P0 to the foreground voxels of P0's component in the plane
    through P0 normal to n (|n̂·(x − P0)| ≤ half a voxel), within a ``window_mm`` box around P0."""
    sp = np.asarray(spacing, float)
    half = np.ceil(window_mm / sp).astype(int)
    lo = np.maximum(np.asarray(p0) - half, 0)
    hi = np.minimum(np.asarray(p0) + half + 1, seg.shape)
    box = tuple(slice(int(a), int(b)) for a, b in zip(lo, hi, strict=True))
    own = comp[tuple(p0)]
    pts = np.argwhere((comp[box] == own) & (seg[box] > 0)) + lo
    if not len(pts):
        return float(sp.min()) / 2
    d = (pts - p0) * sp
    plane = np.abs(d @ n_hat) <= float(sp.min()) / 2
    return float(np.linalg.norm(d[plane], axis=1).max()) if plane.any() else float(sp.min()) / 2


def frustum(shape, p0, q, r1: float, r2: float, spacing) -> tuple[tuple[slice, ...], np.ndarray]:
    """The "round table" between P0 (radius R1) and Q (radius R2), mm: v inside when t = n·(v − Q)/|n|² ∈ [0, 1]
    and ‖v − Q − t n‖ ≤ R2 + t (R1 − R2), n = P0 − Q. Returns the bounding box and the mask inside it."""
    sp = np.asarray(spacing, float)
    pad = np.ceil(max(r1, r2) / sp).astype(int) + 1
    lo = np.maximum(np.minimum(p0, q) - pad, 0)
    hi = np.minimum(np.maximum(p0, q) + pad + 1, shape)
    box = tuple(slice(int(a), int(b)) for a, b in zip(lo, hi, strict=True))
    grid = np.stack(np.meshgrid(*(np.arange(a, b) for a, b in zip(lo, hi, strict=True)), indexing="ij"), -1) * sp
    qm, n = np.asarray(q) * sp, (np.asarray(p0) - np.asarray(q)) * sp
    v = grid - qm
    t = (v @ n) / max(float(n @ n), 1e-12)
    dist = np.linalg.norm(v - t[..., None] * n, axis=-1)
    return box, (t >= 0) & (t <= 1) & (dist <= r2 + t * (r1 - r2))


def connectivity_refinement(seg: np.ndarray, prior: np.ndarray, spacing, t_deg: float = 10.0, k: int = 5,
                            d_max: float = 15.0, walk_steps: int = 3, window_mm: float = 10.0,
                            report: AseReport | None = None) -> np.ndarray:
    """Bridge broken vessel ends: candidate pairs (endpoints and bifurcation centroids on different skeleton
    components, among the ``k`` nearest within ``d_max`` mm, α < ``t_deg``) get their frustum's prior voxels that
    are background in ``seg`` filled with the label of the end with the larger radius."""
    from scipy.spatial import cKDTree

    report = report if report is not None else AseReport()
    out = seg.copy()
    nd = nodes(seg)
    cands = np.concatenate([nd.endpoints, nd.centroids]) if len(nd.centroids) else nd.endpoints
    if len(cands) < 2:
        return out
    sp = np.asarray(spacing, float)
    tree = cKDTree(cands * sp)
    comp_s, _ = ndimage.label(seg > 0, CUBE)
    done = set()
    for i, p0 in enumerate(cands):
        ks = walk(nd.skel, p0, walk_steps)
        if not ks:
            continue
        dists, idx = tree.query(p0 * sp, k=min(k + 1, len(cands)))
        for d, j in zip(np.atleast_1d(dists), np.atleast_1d(idx), strict=True):
            if j == i or d > d_max or d == 0:
                continue
            q = cands[j]
            if nd.component[tuple(p0)] == nd.component[tuple(q)]:
                continue
            key = (min(i, int(j)), max(i, int(j)))
            if key in done:
                continue
            alpha = min(angle_deg(p0 * sp, q * sp, kk * sp) for kk in ks)
            if alpha >= t_deg:
                continue
            done.add(key)
            n_hat = (p0 - q) * sp / np.linalg.norm((p0 - q) * sp)
            r1 = end_radius(seg, comp_s, p0, n_hat, sp, window_mm)
            r2 = end_radius(seg, comp_s, q, n_hat, sp, window_mm)
            label = int(seg[tuple(p0)] if r1 >= r2 else seg[tuple(q)])
            box, inside = frustum(seg.shape, p0, q, r1, r2, sp)
            fill = inside & prior[box] & (out[box] == 0)
            out[box][fill] = label
            report.filled += int(fill.sum())
            report.pairs.append({"p0": p0.tolist(), "q": q.tolist(), "alpha_deg": alpha, "r1_mm": r1, "r2_mm": r2,
                                 "label": label, "filled": int(fill.sum())})
    return out


def classification_refinement(seg: np.ndarray, labels=(1, 2), max_iter: int = 10,
                              report: AseReport | None = None) -> np.ndarray:
    """A label-L component that does not touch L's trunk (its largest 26-connected component) but touches the
    other label's trunk takes that label; repeated until nothing changes (at most ``max_iter`` rounds)."""
    from skimage.measure import label as cc

    report = report if report is not None else AseReport()
    out = seg.copy()
    for it in range(max_iter):
        trunks, comps = {}, {}
        for lab in labels:
            comps[lab] = cc(out == lab, connectivity=3)
            sizes = np.bincount(comps[lab].ravel())
            sizes[0] = 0
            trunks[lab] = comps[lab] == int(np.argmax(sizes)) if sizes.size > 1 and sizes.max() else None
        changed = 0
        for lab in labels:
            for other in labels:
                if other == lab or trunks[other] is None or trunks[lab] is None:
                    continue
                near_other = ndimage.binary_dilation(trunks[other], CUBE)
                near_own = ndimage.binary_dilation(trunks[lab], CUBE)
                for sl_i, sl in enumerate(ndimage.find_objects(comps[lab]), 1):
                    if sl is None:
                        continue
                    part = comps[lab][sl] == sl_i
                    if (trunks[lab][sl] & part).any() or (near_own[sl] & part).any():
                        continue
                    if (near_other[sl] & part).any():
                        out[sl][part] = other
                        changed += int(part.sum())
        report.iterations = it + 1
        report.relabelled += changed
        if not changed:
            break
    return out


def ase(seg: np.ndarray, prior: np.ndarray, spacing, **kw) -> tuple[np.ndarray, AseReport]:
    """Stage 3: connectivity refinement, then classification refinement."""
    rep = AseReport()
    out = connectivity_refinement(seg, prior, spacing, report=rep, **kw)
    return classification_refinement(out, report=rep), rep
