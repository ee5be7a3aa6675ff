"""drivpocket's geometry, without torch: the atom-density gridder (libmolgrid's density), voxel labels, the
point set of a box, random rigid augmentation, SFM fusion, pocket extraction and the lattice of fallback candidates.

A box of ``n`` voxels per side at ``spacing`` Å is centred on ``centre``: voxel i lies at centre + (i − (n−1)/2)·s.
"""

from __future__ import annotations

import numpy as np

CH = 14


def origin(centre, n: int, spacing: float) -> np.ndarray:
    return np.asarray(centre, np.float64) - (n - 1) / 2 * spacing


def density_value(d, r):
    """libmolgrid's atom density at distance d from an atom of radius r: exp(−2d²/r²) below r, a quadratic to 0
    at 1.5 r, 0 beyond."""
    d = np.asarray(d)
    e2 = np.e ** 2
    inner = np.exp(-2 * d ** 2 / r ** 2)
    outer = 4 * d ** 2 / (e2 * r ** 2) - 12 * d / (e2 * r) + 9 / e2
    return np.where(d < r, inner, np.where(d < 1.5 * r, outer, 0.0))


def _stencil(reach: float, spacing: float) -> np.ndarray:
    """Integer offsets that can lie within ``reach`` Å of a point rounded to its nearest voxel."""
    m = int(np.ceil(reach / spacing)) + 1
    g = np.arange(-m, m + 1)
    st = np.stack(np.meshgrid(g, g, g, indexing="ij"), -1).reshape(-1, 3)
    return st[np.linalg.norm(st, axis=1) * spacing <= reach + np.sqrt(3) / 2 * spacing]


def density(coords, channels, centre, n: int, spacing: float, radii) -> np.ndarray:
    """(14, n, n, n) float32: each atom's density summed into its channel (atoms outside contribute their tails)."""
    radii = np.asarray(radii, np.float32)
    o = origin(centre, n, spacing)
    rel = ((np.asarray(coords, np.float64) - o) / spacing).astype(np.float32)
    reach = 1.5 * float(radii.max()) / spacing
    keep = np.all((rel > -reach - 1) & (rel < n + reach), axis=1)
    rel, ch = rel[keep], np.asarray(channels)[keep]
    if not len(rel):
        return np.zeros((CH, n, n, n), np.float32)
    st = _stencil(1.5 * float(radii.max()), spacing)
    base = np.round(rel).astype(np.int64)
    idx = base[:, None, :] + st[None]  # (A, S, 3)
    d = np.linalg.norm((idx - rel[:, None, :]) * np.float32(spacing), axis=-1)
    val = density_value(d, radii[ch][:, None]).astype(np.float32)
    ok = np.all((idx >= 0) & (idx < n), -1) & (val > 0)
    a, s = np.nonzero(ok)
    i = idx[a, s]
    lin = ((ch[a] * n + i[:, 0]) * n + i[:, 1]) * n + i[:, 2]
    out = np.bincount(lin, weights=val[a, s], minlength=CH * n ** 3)
    return out.astype(np.float32).reshape(CH, n, n, n)


def label_grid(points, centre, n: int, spacing: float, radius: float) -> np.ndarray:
    """(n, n, n) bool: voxels whose centre lies within ``radius`` Å of any point."""
    out = np.zeros((n, n, n), bool)
    if points is None or not len(points):
        return out
    rel = (np.asarray(points, np.float64) - origin(centre, n, spacing)) / spacing
    st = _stencil(radius, spacing)
    idx = np.round(rel).astype(np.int64)[:, None, :] + st[None]
    d = np.linalg.norm((idx - rel[:, None, :]) * spacing, axis=-1)
    ok = np.all((idx >= 0) & (idx < n), -1) & (d <= radius)
    i = idx[ok]
    out[i[:, 0], i[:, 1], i[:, 2]] = True
    return out


def voxel_centres(n: int, spacing: float, centre) -> np.ndarray:
    g = np.arange(n) * spacing
    return np.stack(np.meshgrid(g, g, g, indexing="ij"), -1) + origin(centre, n, spacing)


def fps_numpy(x: np.ndarray, m: int) -> np.ndarray:
    """Farthest point sampling from point 0 (the same rule as models.drivpocket.fps)."""
    idx = np.zeros(m, np.int64)
    dist = np.full(len(x), np.inf)
    cur = 0
    for i in range(m):
        idx[i] = cur
        dist = np.minimum(dist, ((x - x[cur]) ** 2).sum(1))
        cur = int(dist.argmax())
    return idx


def point_set(coords, channels, centre, n: int, spacing: float, npts: int, ligands=()):
    """The atoms inside the box: (pts (npts, 3) centred and scaled by the box's half-diagonal so they lie in the
    unit sphere, one-hot types (npts, 14), voxel indices (npts, 3), labels (npts,) within ``label_distance`` of a
    ligand atom — filled by the caller — and the indices of the chosen atoms). FPS keeps ``npts`` when the box holds
    more; fewer are repeated."""
    coords = np.asarray(coords, np.float64)
    half = (n - 1) / 2 * spacing
    inside = np.flatnonzero(np.all(np.abs(coords - centre) <= half, axis=1))
    if not len(inside):
        inside = np.array([int(np.argmin(np.linalg.norm(coords - centre, axis=1)))])
    local = coords[inside]
    if len(inside) > npts:
        sel = fps_numpy(local, npts)
    else:
        sel = np.resize(np.arange(len(inside)), npts)
    atoms = inside[sel]
    xyz = coords[atoms]
    pts = (xyz - centre) / (half * np.sqrt(3))
    feats = np.eye(CH, dtype=np.float32)[np.asarray(channels)[atoms]]
    vox = np.clip(np.round((xyz - origin(centre, n, spacing)) / spacing), 0, n - 1).astype(np.int64)
    return pts.astype(np.float32), feats, vox, atoms


def atom_labels(xyz, ligands, distance: float) -> np.ndarray:
    from scipy.spatial import cKDTree

    if not len(ligands):
        return np.zeros(len(xyz), np.float32)
    d = cKDTree(np.concatenate(ligands)).query(xyz)[0]
    return (d <= distance).astype(np.float32)


def random_rotation(rng) -> np.ndarray:
    from scipy.spatial.transform import Rotation

    return Rotation.random(random_state=rng).as_matrix()


def random_shift(rng, max_shift: float) -> np.ndarray:
    v = rng.normal(size=3)
    return v / np.linalg.norm(v) * max_shift * rng.uniform() ** (1 / 3)


# -- inference --------------------------------------------------------------------------------------------------------
def sfm(p_v: np.ndarray, atom_xyz: np.ndarray, p_pc: np.ndarray, centre, spacing: float, threshold: float = 0.5):
    """SFM (Eq. 15): atoms A with P_pc > 0.5, c_v the centroid of voxels with P_v > 0.5; every voxel inside the
    sphere around a ∈ A of radius ‖a − c_v‖ receives P_pc(a); the sum over A divided by |A| is P̂_pc;
    P_fuse = P_v + P̂_pc·P_v + P̂_pc. Without such atoms or voxels P_fuse = P_v."""
    n = p_v.shape[-1]
    a = p_pc > threshold
    hot = np.argwhere(p_v > threshold)
    if not a.any() or not len(hot):
        return p_v
    cv = origin(centre, n, spacing) + hot.mean(0) * spacing
    centres = voxel_centres(n, spacing, centre).reshape(-1, 3)
    xyz, p = atom_xyz[a], p_pc[a]
    r2 = ((xyz - cv) ** 2).sum(1)
    acc = np.zeros(len(centres))
    for i in range(0, len(xyz), 16):  # 16 atoms × all voxels at a time
        d2 = ((centres[None] - xyz[i:i + 16, None]) ** 2).sum(-1)
        acc += ((d2 <= r2[i:i + 16, None]) * p[i:i + 16, None]).sum(0)
    hat = acc.reshape(p_v.shape) / a.sum()
    return (p_v + hat * p_v + hat).astype(np.float32)


def pocket(prob: np.ndarray, centre, spacing: float, threshold: float = 0.5):
    """The connected component (26-connectivity) above ``threshold`` with the largest summed probability:
    (centre in Å or None, mask (n, n, n) bool, score = mean probability in it)."""
    from skimage.measure import label

    n = prob.shape[-1]
    lab = label(prob > threshold, connectivity=3)
    if lab.max() == 0:
        return None, np.zeros_like(prob, bool), 0.0
    sums = np.bincount(lab.ravel(), weights=prob.ravel())
    sums[0] = -1
    k = int(np.argmax(sums))
    mask = lab == k
    c = origin(centre, n, spacing) + np.argwhere(mask).mean(0) * spacing
    return c, mask, float(prob[mask].mean())


def lattice_candidates(coords, step: float = 8.0, near: tuple[float, float] = (2.0, 6.0)) -> np.ndarray:
    """The card's fallback: points of a ``step`` Å lattice over the protein whose nearest atom is 2–6 Å away."""
    from scipy.spatial import cKDTree

    lo, hi = coords.min(0), coords.max(0)
    axes = [np.arange(a, b + step, step) for a, b in zip(lo, hi, strict=True)]
    lat = np.stack(np.meshgrid(*axes, indexing="ij"), -1).reshape(-1, 3)
    d = cKDTree(coords).query(lat)[0]
    return lat[(d >= near[0]) & (d <= near[1])]


def surface_points(coords, channels, radii, probe: float = 1.4, per_atom: int = 24) -> np.ndarray:
    """Shrake–Rupley solvent-accessible surface points (for the coloured .ply and the figures)."""
    from scipy.spatial import cKDTree

    k = np.arange(per_atom) + 0.5
    phi, theta = np.arccos(1 - 2 * k / per_atom), np.pi * (1 + 5 ** 0.5) * k
    sphere = np.stack([np.cos(theta) * np.sin(phi), np.sin(theta) * np.sin(phi), np.cos(phi)], 1)
    r = np.asarray(radii)[channels] * 0.75 + probe
    pts = (coords[:, None, :] + r[:, None, None] * sphere[None]).reshape(-1, 3)
    owner = np.repeat(np.arange(len(coords)), per_atom)
    tree = cKDTree(coords)
    d, j = tree.query(pts, k=min(8, len(coords)))
    d, j = d.reshape(len(pts), -1), j.reshape(len(pts), -1)
    buried = ((d < r[j] - 1e-6) & (j != owner[:, None])).any(1)
    return pts[~buried]
