"""Retinal-layer OCT volumes in the transnet-oct card's layout (the paper's 85-patient set is private; this is the
layout a user arranges their own data in, and the fixture writes).

Layout: ``ROOT/<patient_id>/oct.nii.gz`` (B-scans stacked on axis 0: shape (n_bscans, H, W); any numeric type),
``ROOT/<patient_id>/labels.nii.gz`` (uint8, same grid: 0 background, 1 NFL, 2 GCL, 3 IPL, 4 INL, 5 OPL, 6 ONL, 7 ELM,
8 MZ, 9 EZ, 10 OPR, 11 RPE on annotated B-scans; 255 on every voxel of a B-scan nobody annotated), and optionally
``ROOT/<patient_id>/meta.json`` (``{"fovea_index": int, "group": "normal|early|intermediate"}``; without it the
fovea is the middle B-scan). Folders without ``oct.nii.gz`` and hidden folders are skipped.

Checks (a DataError naming the file and the fix): labels on another grid (shape, voxel size or orientation: refused,
never resampled), label values outside 0–11 and 255, a partly annotated B-scan (255 mixed with labels), a volume
with no annotated B-scan, fewer than 5 B-scans, a fovea index whose ±2 neighbours fall outside the volume.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from medrun.errors import DataError

from . import DatasetInfo

DATASETS = [
    DatasetInfo(
        "oct-layers",
        "Retinal OCT volumes with 12-class layer labels (TransNetOCT layout; the paper's data are private)",
        "<patient>/oct.nii.gz (n_bscans×H×W) + labels.nii.gz (uint8 0–11, 255 = B-scan not annotated) "
        "[+ meta.json {fovea_index, group}]",
        "not public (University of Louisville / Legacy Devers, IRB); arrange your own labelled OCT volumes in this "
        "layout and point at the folder of patient folders",
        "medrun.datasets.oct_layers:fixture",
        ("segmentation", "oct", "3d"),
    ),
]

LAYERS = ("BG", "NFL", "GCL", "IPL", "INL", "OPL", "ONL", "ELM", "MZ", "EZ", "OPR", "RPE")
UNANNOTATED = 255
_HINT = "point at the folder of <patient>/oct.nii.gz + labels.nii.gz folders, or try --fixture"


@dataclass
class Patient:
    id: str
    oct: Path
    labels: Path | None
    meta: dict = field(default_factory=dict)


def read(root: Path, labelled: bool = True) -> list[Patient]:
    """The patient folders under ``root`` (sorted by id), each checked for its files (not their content)."""
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"OCT folder not found: {root}", fix=_HINT)
    if (root / "oct.nii.gz").is_file():  # one patient folder given as the root
        folders = [root]
    else:
        folders = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    out = []
    for d in folders:
        if not (d / "oct.nii.gz").is_file():
            continue
        lab = d / "labels.nii.gz"
        if labelled and not lab.is_file():
            raise DataError(f"{d} has oct.nii.gz but no labels.nii.gz", fix="add the label volume or remove the folder")
        meta = {}
        if (d / "meta.json").is_file():
            try:
                meta = json.loads((d / "meta.json").read_text())
            except (ValueError, UnicodeDecodeError) as e:
                raise DataError(f"{d / 'meta.json'} is not valid JSON ({e})",
                                fix='write {"fovea_index": <int>, "group": "normal"} or delete it') from None
            if not isinstance(meta, dict) or not isinstance(meta.get("fovea_index", 0), int):
                raise DataError(f"{d / 'meta.json'}: fovea_index must be an integer",
                                fix='write {"fovea_index": <int>, ...}')
        out.append(Patient(d.name, d / "oct.nii.gz", lab if lab.is_file() else None, meta))
    if not out:
        raise DataError(f"no <patient>/oct.nii.gz under {root}", fix=_HINT)
    return out


def _load(path: Path):
    import nibabel as nib
    import numpy as np

    try:
        img = nib.load(str(path))
        arr = np.asarray(img.dataobj)
    except Exception as e:  # nibabel raises many types for damaged files
        raise DataError(f"cannot read {path}: {e.__class__.__name__}: {e}", fix="replace the file") from None
    if arr.ndim != 3:
        raise DataError(f"{path} is not a 3D volume of stacked B-scans (shape {arr.shape})",
                        fix="store B-scans stacked on axis 0: (n_bscans, H, W)")
    return img, arr


def load(p: Patient, labelled: bool = True):
    """(oct float32 (n, H, W), labels uint8 (n, H, W) or None, affine, fovea index) with every check of the layout."""
    import nibabel as nib
    import numpy as np

    img, vol = _load(p.oct)
    if not np.isfinite(vol).all():
        raise DataError(f"{p.oct} holds NaN or inf voxels", fix="replace the file")
    n = vol.shape[0]
    if n < 5:
        raise DataError(f"{p.oct} has {n} B-scan(s); the 2.5D input needs 5 (fovea ±2)",
                        fix="give at least 5 B-scans stacked on axis 0")
    fovea = int(p.meta.get("fovea_index", n // 2))
    if not 2 <= fovea <= n - 3:
        where = p.oct.parent / "meta.json" if "fovea_index" in p.meta else p.oct
        raise DataError(f"{where}: fovea index {fovea} leaves no 2 B-scans on each side (volume has {n})",
                        fix=f"set fovea_index between 2 and {n - 3}")
    labels = None
    if labelled and p.labels is not None:
        limg, labels = _load(p.labels)
        if labels.shape != vol.shape:
            raise DataError(f"{p.labels} is {'×'.join(map(str, labels.shape))} but {p.oct.name} is "
                            f"{'×'.join(map(str, vol.shape))}", fix="labels must be on the B-scans' grid")
        z0, z1 = img.header.get_zooms()[:3], limg.header.get_zooms()[:3]
        if not np.allclose(z0, z1, rtol=1e-4, atol=1e-6):
            raise DataError(f"{p.labels} has voxel size {tuple(map(float, z1))} but {p.oct.name} has "
                            f"{tuple(map(float, z0))}; refusing to resample labels",
                            fix="write the labels on the OCT volume's grid (same header)")
        o0, o1 = nib.aff2axcodes(img.affine), nib.aff2axcodes(limg.affine)
        if o0 != o1:
            raise DataError(f"{p.labels} has orientation {''.join(o1)} but {p.oct.name} has {''.join(o0)}; refusing "
                            "to reorient", fix="write the labels with the OCT volume's affine")
        if not np.issubdtype(labels.dtype, np.integer) and not np.all(labels == np.round(labels)):
            raise DataError(f"{p.labels} holds non-integer labels", fix="store labels as uint8")
        values = np.unique(labels)
        bad = [int(v) for v in values if not (0 <= v < len(LAYERS) or v == UNANNOTATED)]
        if bad:
            raise DataError(f"label volume {p.labels} has values outside 0–11 and 255: {bad[:8]}",
                            fix="map the layers to 0 BG, 1 NFL … 11 RPE and unannotated B-scans to 255")
        labels = labels.astype(np.uint8)
        ann = annotated(labels)
        partial = [i for i in range(n) if not ann[i] and (labels[i] != UNANNOTATED).any()]
        if partial:
            raise DataError(f"{p.labels}: B-scan {partial[0]} is partly 255 (unannotated) and partly labelled",
                            fix="a B-scan is either fully labelled (0–11) or fully 255")
        if not ann.any():
            raise DataError(f"{p.labels} has no annotated B-scan (every voxel is 255)",
                            fix="label at least the fovea B-scan and its neighbours, or drop this patient")
    return vol.astype(np.float32), labels, img.affine, fovea


def annotated(labels):
    """Per B-scan: True when it holds no 255."""
    return (labels != UNANNOTATED).all(axis=(1, 2))


# -- fixture ------------------------------------------------------------------------------------------------------
# base thickness (rows at 64 px height) and mean intensity of each layer, NFL … RPE
_THICK = (4.0, 4.0, 3.0, 3.0, 2.0, 6.0, 1.5, 2.0, 2.0, 2.0, 3.0)
_LEVEL = (0.80, 0.45, 0.65, 0.25, 0.60, 0.15, 0.55, 0.35, 0.90, 0.50, 0.95)
_DIP = (0.9, 0.9, 0.8, 0.7, 0.6, -0.3, 0, 0, 0, 0, 0)  # foveal thinning (negative: thickening)


def synth_volume(rng, n: int = 9, size: int = 64, fovea: int = 4, amd: bool = False):
    """(oct uint8 (n, size, size), labels uint8 (n, size, size)) of 11 horizontal bands between smooth sinusoidal
    surfaces that vary slowly across B-scans, a foveal dip at the centre, per-layer intensity, speckle, and drusen
    under the RPE in AMD cases. Labels are exact."""
    import numpy as np

    s = size / 64.0
    x = np.arange(size)[None, :]
    k = np.arange(n)[:, None]
    phase, amp, top = rng.uniform(0, 2 * np.pi), rng.uniform(1.0, 2.5) * s, rng.uniform(13, 17) * s
    tilt = rng.uniform(-0.05, 0.05)
    surf = top + amp * np.sin(2 * np.pi * x / size + phase + 0.15 * k) + tilt * (x - size / 2) + 0.3 * s * (k - fovea)
    xc = size / 2 + rng.uniform(-3, 3) * s
    pit = np.exp(-((x - xc) ** 2) / (2 * (6 * s) ** 2) - ((k - fovea) ** 2) / (2 * 1.5 ** 2))
    bounds = [surf + sum(_THICK) * s]  # built from the RPE's outer surface upwards: the pit dips the inner layers
    for t, d in zip(_THICK[::-1], _DIP[::-1], strict=True):
        thick = t * s * rng.uniform(0.85, 1.15) * (1 - d * pit)
        bounds.append(bounds[-1] - np.maximum(thick, 0.3 * s))
    bounds = bounds[::-1]
    if amd:  # drusen: the RPE and the photoreceptor layers above it lifted by bumps
        bumps = np.zeros((n, size))
        for _ in range(rng.integers(2, 5)):
            cx, ck, h = rng.uniform(8, size - 8), rng.uniform(0, n - 1), rng.uniform(1.5, 3.5) * s
            bumps += h * np.exp(-((x - cx) ** 2) / (2 * (3 * s) ** 2) - ((k - ck) ** 2) / 2.0)
        for j in range(7, 12):  # ELM/MZ … RPE lower surfaces move up
            bounds[j] = bounds[j] - bumps
        for j in range(7, 12):
            bounds[j] = np.maximum(bounds[j], bounds[j - 1] + 0.3 * s)
    y = np.arange(size)[None, :, None] + 0.5
    labels = np.zeros((n, size, size), np.uint8)
    for j in range(11):
        inside = (y >= bounds[j][:, None, :]) & (y < bounds[j + 1][:, None, :])
        labels[inside] = j + 1
    level = np.array((0.05, *_LEVEL), np.float32)[labels]
    below = y >= bounds[11][:, None, :]
    level = np.where(below, 0.2, level)  # choroid: background class, darker than the RPE
    speckle = rng.gamma(8.0, 1 / 8.0, size=labels.shape)
    img = np.clip(level * speckle + rng.normal(0, 0.03, labels.shape), 0, 1)
    return np.round(img * 255).astype(np.uint8), labels


def _save(arr, path: Path, affine) -> None:
    import nibabel as nib

    nib.save(nib.Nifti1Image(arr, affine), str(path))


def fixture(out: Path, seed: int = 0, n_patients: int = 6, n_bscans: int = 9, size: int = 64) -> Path:
    """6 patients × 9 B-scans of 64×64 in the card's layout: B-scans 1–7 annotated, 0 and 8 all 255 (unannotated);
    meta.json with the fovea index (4 ± 1) and group for all but the last patient (fovea = middle B-scan there)."""
    import numpy as np

    rng = np.random.default_rng(seed)
    root = Path(out) / "oct-layers"
    affine = np.diag([0.1, 0.001955, 0.011, 1.0])  # B-scan step, axial 1.955 µm, lateral 11 µm (mm)
    for i in range(n_patients):
        pid = f"P{i + 1:03d}"
        d = root / pid
        d.mkdir(parents=True, exist_ok=True)
        fovea = int(rng.integers(3, 6)) if i < n_patients - 1 else n_bscans // 2
        amd = i % 2 == 1
        img, lab = synth_volume(rng, n_bscans, size, fovea, amd)
        lab[0] = UNANNOTATED
        lab[-1] = UNANNOTATED
        _save(img, d / "oct.nii.gz", affine)
        _save(lab, d / "labels.nii.gz", affine)
        if i < n_patients - 1:
            group = "normal" if not amd else ("early" if i % 4 == 1 else "intermediate")
            (d / "meta.json").write_text(json.dumps({"fovea_index": fovea, "group": group}) + "\n")
    return root
