"""Pulmonary artery / vein CT (card pulmonary-av): chest CT with PA/PV labels and lung masks, MSD-like NIfTI tree.

The paper's 95 in-house scans have no public layout (the cited repository holds a README only), so the pipeline
reads the layout the card fixes::

    <root>/
        imagesTr/<id>.nii.gz     CT, 3D; stored value = HU + dataset.stored_offset (0 for HU files, 1024 for
                                 int16 "HU+1024" exports); the header's scl_slope/scl_inter are applied by nibabel
        labelsTr/<id>.nii.gz     0 background, 1 pulmonary artery (PA), 2 pulmonary vein (PV) (other codings:
                                 dataset.label_map, e.g. {"3": 1, "4": 2})
        lungsTr/<id>.nii.gz      lung mask (any non-zero value is lung)

Checks (each a ``DataError`` naming the file and the fix): a missing folder or a case without its label or lung
file; a label volume with values outside {0, 1, 2} after ``label_map``; an image, label and lung mask whose shape,
voxel size or orientation differ (refused, never resampled: the message says which and by how much).

The fixture (``fixture``) writes six 64×64×40 cases at 1×1×1.25 mm, int16 = HU+1024: a body ellipse at 40 HU, two
lung ellipsoids at −850 HU, and per lung one PA tree (+80 HU) and one PV tree (+20 HU) of branching tubes (radius
1–3 voxels) grown from the hilum in the mediastinum (so part of each tree is extrapulmonary), kept at least two
voxels apart, plus Gaussian noise σ 15 HU: A/V can be told apart by intensity. A seventh case, ``pav_gap``, has a
4-voxel stretch of its left PA trunk (straight along x inside the lung) at −250 HU (a faint,
partial-volume-like stretch: inside the iso-700 prior with the +1024 offset, outside what a network trained on
+80 HU vessels calls vessel); its label is intact. The refine stage's gap check uses it (``pipelines/pulmonary_av``).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from medrun.errors import DataError

from . import DatasetInfo

DATASETS = [
    DatasetInfo("pulmonary_av", "Pulmonary artery/vein CT with lung masks (MSD-like imagesTr/labelsTr/lungsTr)",
                "{imagesTr,labelsTr,lungsTr}/<id>.nii.gz; labels 0 bg / 1 PA / 2 PV",
                "the paper's in-house scans are announced via github.com/XiaoweiXu/PulmonaryVesselSegSurgicalPlanning "
                "(no data there yet); any chest CT with PA/PV labels and lung masks converted to this tree",
                "medrun.datasets.pulmonary_av:fixture", ("segmentation", "3d", "ct", "vessels")),
]

FOLDERS = ("imagesTr", "labelsTr", "lungsTr")
LABELS = {0: "background", 1: "PA", 2: "PV"}
GAP_CASE = "pav_gap"
_HINT = "point dataset.root (--data-dir) at the folder holding imagesTr/, labelsTr/ and lungsTr/, or try --fixture"


@dataclass(frozen=True)
class Case:
    id: str
    image: Path
    label: Path | None
    lung: Path


@dataclass
class Volume:
    id: str
    files: list[str]
    hu: object  # (X, Y, Z) float32 HU
    label: object  # (X, Y, Z) uint8 0/1/2
    lung: object  # (X, Y, Z) bool
    spacing: tuple[float, float, float]
    affine: object


def _stem(p: Path) -> str:
    return p.name[:-7] if p.name.endswith(".nii.gz") else p.stem


def read(root: Path, labels: bool = True) -> list[Case]:
    """The cases of ``root`` (sorted by id), each with its image, label and lung mask (``labels=False``: images and
    lung masks only, for prediction; ``Case.label`` is then None)."""
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"{root} is not a folder", fix=_HINT)
    folders = FOLDERS if labels else ("imagesTr", "lungsTr")
    missing = [f for f in folders if not (root / f).is_dir()]
    if missing:
        raise DataError(f"{root} has no {', '.join(missing)} folder", fix=_HINT)
    images = sorted(p for p in (root / "imagesTr").iterdir()
                    if not p.name.startswith(".") and p.name.endswith((".nii.gz", ".nii")))
    if not images:
        raise DataError(f"no .nii.gz CT volumes in {root / 'imagesTr'}", fix=_HINT)
    cases = []
    for img in images:
        sid = _stem(img)
        other = {}
        other["labelsTr"] = None
        for f in folders[1:]:
            hits = [root / f / f"{sid}{s}" for s in (".nii.gz", ".nii") if (root / f / f"{sid}{s}").exists()]
            if not hits:
                raise DataError(f"{img} has no {f}/{sid}.nii.gz", fix=f"add the {f[:-2]} volume or remove the case")
            other[f] = hits[0]
        cases.append(Case(sid, img, other["labelsTr"], other["lungsTr"]))
    return cases


def _grid(img) -> tuple:
    import nibabel as nib
    import numpy as np

    return img.shape[:3], tuple(float(z) for z in img.header.get_zooms()[:3]), nib.aff2axcodes(img.affine), \
        np.asarray(img.affine)


def load(case: Case, stored_offset: float = 0.0, label_map: dict | None = None) -> Volume:
    """One case as arrays: HU (stored − ``stored_offset``), labels mapped to 0/1/2, lung mask; the three volumes
    must share shape, voxel size (to 1e-3 mm) and orientation."""
    import nibabel as nib
    import numpy as np

    imgs = {}
    for what, p in (("image", case.image), ("label", case.label), ("lung", case.lung)):
        if p is None:
            continue
        try:
            imgs[what] = nib.load(str(p))
        except Exception as e:  # nibabel raises several types for damaged files
            raise DataError(f"{p} is not a readable NIfTI file ({e})", fix="re-export the volume") from e
    shape, zooms, axes, affine = _grid(imgs["image"])
    for what in [w for w in ("label", "lung") if w in imgs]:
        s2, z2, a2, _ = _grid(imgs[what])
        p = case.label if what == "label" else case.lung
        if s2 != shape:
            raise DataError(f"{p} has shape {s2}, its image {case.image.name} {shape}",
                            fix="export the mask on the CT's grid (this pipeline refuses to resample)")
        if not np.allclose(z2, zooms, atol=1e-3):
            raise DataError(f"{p} has voxel size {z2} mm, its image {case.image.name} {zooms} mm",
                            fix="resample the mask onto the CT's grid (this pipeline refuses to resample)")
        if a2 != axes:
            raise DataError(f"{p} has orientation {''.join(a2)}, its image {case.image.name} {''.join(axes)}",
                            fix="reorient the mask to the CT's orientation (e.g. nibabel as_closest_canonical on "
                                "both)")
    hu = np.asarray(imgs["image"].dataobj, dtype=np.float32)
    if hu.ndim != 3:
        raise DataError(f"{case.image} is {hu.ndim}D, expected one 3D CT volume", fix="split the channels")
    hu = hu - np.float32(stored_offset)
    if "label" not in imgs:
        return Volume(case.id, [str(case.image), str(case.lung)], hu, np.zeros(hu.shape, np.uint8),
                      np.asarray(imgs["lung"].dataobj) > 0, zooms, affine)
    raw = np.asarray(imgs["label"].dataobj)
    if label_map:
        mapped = np.zeros(raw.shape, np.int64)
        for k, v in label_map.items():
            mapped[raw == int(k)] = int(v)
        known = np.isin(raw, [int(k) for k in label_map] + [0])
        if not known.all():
            bad = sorted({int(x) for x in np.unique(raw[~known])})[:5]
            raise DataError(f"{case.label} holds values {bad} that dataset.label_map does not map",
                            fix="add them to dataset.label_map (value: 0, 1 or 2)")
        raw = mapped
    values = np.unique(raw)
    bad = [v for v in values.tolist() if v not in LABELS]
    if bad:
        raise DataError(f"{case.label} holds values outside 0/1/2: {', '.join(str(int(b)) for b in bad[:5])}",
                        fix="relabel to 0 background, 1 artery, 2 vein, or set dataset.label_map")
    files = [str(case.image), str(case.label), str(case.lung)]
    return Volume(case.id, files, hu, raw.astype(np.uint8), np.asarray(imgs["lung"].dataobj) > 0, zooms, affine)


# -- fixture -----------------------------------------------------------------------------------------------------
SHAPE = (64, 64, 40)
SPACING = (1.0, 1.0, 1.25)
HU = {"air": -1000.0, "body": 40.0, "lung": -850.0, "pa": 80.0, "pv": 20.0, "gap": -250.0}


def _segment(grid, a, b, r):
    """Voxels within ``r`` (mm) of the segment a→b (computed inside the segment's bounding box)."""
    import numpy as np

    out = np.zeros(grid.shape[:3], bool)
    scale = np.array(SPACING) / SPACING[0]
    lo = np.maximum(np.floor((np.minimum(a, b) - r) / scale).astype(int), 0)
    hi = np.minimum(np.ceil((np.maximum(a, b) + r) / scale).astype(int) + 1, SHAPE)
    if np.any(hi <= lo):
        return out
    box = tuple(slice(int(l_), int(h)) for l_, h in zip(lo, hi, strict=True))
    g = grid[box]
    ab = b - a
    t = np.clip(((g - a) @ ab) / max(float(ab @ ab), 1e-9), 0, 1)
    out[box] = np.linalg.norm(g - (a + t[..., None] * ab), axis=-1) <= r
    return out


def _tree(rng, grid, start, direction, radius, depth, segs):
    import numpy as np

    length = rng.uniform(9, 13) if depth else rng.uniform(6, 9)
    d = direction / np.linalg.norm(direction)
    end = start + d * length
    segs.append((start, end, radius))
    if depth == 0:
        return
    for sign in (-1, 1):
        ax = np.cross(d, rng.normal(size=3))
        ax /= np.linalg.norm(ax)
        ang = np.deg2rad(rng.uniform(25, 45)) * sign
        nd = d * np.cos(ang) + np.cross(ax, d) * np.sin(ang)
        _tree(rng, grid, end, nd, max(1.0, radius - 0.7), depth - 1, segs)


def synthetic_case(rng, gap: bool = False):
    """(stored int16 CT, label uint8, lung uint8) of one fixture case; ``gap`` adds the faint PA stretch."""
    import numpy as np
    from scipy import ndimage

    X, Y, Z = SHAPE
    grid = np.stack(np.meshgrid(np.arange(X), np.arange(Y), np.arange(Z) * SPACING[2] / SPACING[0],
                                indexing="ij"), -1).astype(np.float32)
    cx, cy, cz = X / 2, Y / 2, (Z / 2) * SPACING[2]
    body = ((grid[..., 0] - cx) / 30) ** 2 + ((grid[..., 1] - cy) / 28) ** 2 <= 1
    hu = np.where(body, HU["body"], HU["air"]).astype(np.float32)
    lung = np.zeros(SHAPE, bool)
    label = np.zeros(SHAPE, np.uint8)
    gap_mask = np.zeros(SHAPE, bool)
    for side in (-1, 1):
        lc = np.array([cx + side * 13, cy, cz])
        lung |= (((grid - lc) / np.array([10.5, 19, 21])) ** 2).sum(-1) <= 1
    for side in (-1, 1):
        for cls, dy in ((1, -5.0), (2, 5.0)):
            start = np.array([cx + side * 1.0, cy + dy, cz + rng.uniform(-3, 3)])
            direction = np.array([side * 1.0, np.sign(dy) * rng.uniform(0.1, 0.4), rng.uniform(-0.2, 0.2)])
            cut = gap and cls == 1 and side == -1
            if cut:  # the gap case's left PA trunk runs straight along x, so the gap's two ends face each other
                direction = np.array([-1.0, 0.0, 0.0])
            segs: list = []
            _tree(rng, grid, start, direction, 2.6, 2, segs)
            tube = np.zeros(SHAPE, bool)
            for a, b, r in segs:
                tube |= _segment(grid, a, b, r)
            if cls == 2:  # veins keep two voxels away from arteries (no contact between the trees)
                tube &= ~ndimage.binary_dilation(label == 1, iterations=2)
            label[tube & body & (label == 0)] = cls
            if cut:  # a 4-voxel stretch across the trunk, inside the lung, before its first branching
                a, b, _ = segs[0]
                d = (b - a) / np.linalg.norm(b - a)
                t = (grid - a) @ d
                gap_mask = (label == 1) & (t >= 4) & (t < 8) & (np.linalg.norm(grid - a - t[..., None] * d, axis=-1)
                                                                  <= 3.5)
                gap_mask &= lung
    hu[lung] = HU["lung"]
    hu[label == 1] = HU["pa"]
    hu[label == 2] = HU["pv"]
    hu[gap_mask] = HU["gap"]
    hu += rng.normal(0, 15, SHAPE).astype(np.float32)
    stored = np.clip(np.round(hu + 1024), -32768, 32767).astype(np.int16)
    return stored, label, lung.astype(np.uint8)


def fixture(out: Path, seed: int = 0, n: int = 6) -> Path:
    """Write ``n`` cases plus the gap case in the layout above; returns the root."""
    import nibabel as nib
    import numpy as np

    out = Path(out)
    for f in FOLDERS:
        (out / f).mkdir(parents=True, exist_ok=True)
    affine = np.diag([*SPACING, 1.0])
    rng = np.random.default_rng(seed)
    ids = [f"pav_{i:03d}" for i in range(1, n + 1)] + [GAP_CASE]
    for sid in ids:
        ct, label, lung = synthetic_case(rng, gap=sid == GAP_CASE)
        for f, arr in zip(FOLDERS, (ct, label, lung), strict=True):
            img = nib.Nifti1Image(arr, affine)
            img.header.set_xyzt_units("mm")
            nib.save(img, str(out / f / f"{sid}.nii.gz"))
    (out / "README.txt").write_text(json.dumps({"labels": LABELS, "stored": "HU+1024 (int16)",
                                                "gap_case": GAP_CASE}, indent=1) + "\n")
    return out
