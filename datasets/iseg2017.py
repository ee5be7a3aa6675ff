"""iSEG-2017 (6-month infant brain MRI, T1 + T2, CSF / GM / WM), in the challenge's Analyze 7.5 layout.

Layout (as unpacked from the archives the challenge site gives after registration)::

    <root>/
        iSeg-2017-Training/subject-{1..10}-T1.hdr/.img      T1, int16, 144×192×256 (1 mm iso)
                           subject-{1..10}-T2.hdr/.img      T2, same grid
                           subject-{1..10}-label.hdr/.img   labels 0 bg, 10 CSF, 150 GM, 250 WM
        iSeg-2017-Testing/subject-{11..23}-T1.hdr/.img, -T2.hdr/.img   (no labels: the challenge server scores them)

``root`` is the folder holding ``iSeg-2017-Training/``; the training folder itself is accepted too. Labels are
mapped to 0/1/2/3. Every subject's T1, T2 and label must share one grid (shape, voxel size and orientation): a
volume that does not is refused, naming the file, since resampling labels would change the ground truth. The
helpers here (``load_volume``, ``check_same_grid``, ``crop_box``, ``zscore``) are shared with ``mrbrains13``.

The fixture (``fixture``) writes 4 labelled subjects of 40³ voxels and one test subject as Analyze pairs in the same
names: nested ellipsoids (WM core, GM shell, CSF rim and a CSF "ventricle"), zero background, a smooth bias field
and noise. T1 separates GM from WM well but CSF from GM weakly; T2 the reverse, so each single-modality teacher is
good at different tissues, as in the paper's Table 2.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from medrun.errors import DataError

from . import DatasetInfo

DATASETS = [
    DatasetInfo(
        "iseg2017",
        "iSEG-2017 infant brain MRI (T1, T2; CSF/GM/WM labels)",
        "iSeg-2017-Training/subject-{1..10}-{T1,T2,label}.hdr/.img (Analyze 7.5; labels 0/10/150/250), "
        "iSeg-2017-Testing/subject-{11..23}-{T1,T2}.hdr/.img",
        "iSEG-2017 challenge (iseg2017.web.unc.edu, registration required); point at the folder holding "
        "iSeg-2017-Training/",
        "medrun.datasets.iseg2017:fixture",
        ("segmentation", "mri", "3d"),
    ),
]

TRAIN_DIR, TEST_DIR = "iSeg-2017-Training", "iSeg-2017-Testing"
LABEL_VALUES = (0, 10, 150, 250)  # bg, CSF, GM, WM as stored
MODALITIES = {"t1": "T1", "t2": "T2"}
TISSUES = ("csf", "gm", "wm")
_HINT = f"point at the folder that holds {TRAIN_DIR}/ (subject-N-T1.hdr/.img, -T2, -label), or try --fixture"


@dataclass
class Subject:
    id: str  # "subject-1"
    number: int
    images: dict[str, Path]  # modality ("t1", "t2") -> .hdr
    label: Path | None = None  # .hdr (None for test subjects)
    extra: dict = field(default_factory=dict)


def training_dir(root: Path) -> Path:
    """The folder of the labelled subjects: ``root/iSeg-2017-Training`` or ``root`` itself when it holds them."""
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"iSEG-2017 folder not found: {root}", fix=_HINT)
    if (root / TRAIN_DIR).is_dir():
        return root / TRAIN_DIR
    if any(root.glob("subject-*-label.hdr")):
        return root
    inner = [p for p in sorted(root.iterdir()) if (p / TRAIN_DIR).is_dir()]
    if inner:
        raise DataError(f"{root} is one level above the iSEG-2017 folder", fix=f"use {inner[0]} instead")
    found = ", ".join(sorted(p.name for p in root.iterdir())[:5]) or "nothing"
    raise DataError(f"{root} does not have the iSEG-2017 layout: no {TRAIN_DIR}/ (found: {found})", fix=_HINT)


def _number(name: str) -> int | None:
    parts = name.split("-")
    return int(parts[1]) if len(parts) >= 3 and parts[0] == "subject" and parts[1].isdigit() else None


def subjects_in(folder: Path, labelled: bool = True) -> list[Subject]:
    """The subjects of one folder (by their T1 header), each with all its files present (else a DataError)."""
    out = []
    for t1 in sorted(folder.glob("subject-*-T1.hdr"), key=lambda p: _number(p.name) or 0):
        n = _number(t1.name)
        if n is None:
            continue
        sid = f"subject-{n}"
        files = {m: folder / f"{sid}-{s}.hdr" for m, s in MODALITIES.items()}
        label = folder / f"{sid}-label.hdr" if labelled else None
        for f in [*files.values(), *([label] if label else [])]:
            for part in (f, f.with_suffix(".img")):
                if not part.is_file():
                    raise DataError(f"{sid} is incomplete: {part} is missing",
                                    fix="each subject needs its T1, T2 (and, for training, label) .hdr/.img pairs")
        out.append(Subject(sid, n, files, label))
    return out


def read(root: Path) -> list[Subject]:
    """The labelled subjects of ``iSeg-2017-Training`` (sorted by number)."""
    folder = training_dir(root)
    subs = subjects_in(folder, labelled=True)
    if not subs:
        raise DataError(f"no subject-N-T1.hdr in {folder}", fix=_HINT)
    return subs


def read_test(root: Path) -> list[Subject]:
    """The unlabelled test subjects of ``iSeg-2017-Testing`` (empty when that folder is absent)."""
    folder = Path(root) / TEST_DIR
    return subjects_in(folder, labelled=False) if folder.is_dir() else []


# -- volumes (shared with mrbrains13) ---------------------------------------------------------------------------------
def load_volume(path: Path):
    """(array float32 (D, H, W), nibabel image) of a NIfTI or Analyze file; the data's length must match what the
    header says (a DataError naming the file otherwise), trailing singleton axes are dropped."""
    import nibabel as nib
    import numpy as np

    path = Path(path)
    try:
        img = nib.load(str(path))
    except Exception as e:  # nibabel raises several types for a bad header
        raise DataError(f"cannot read {path}: {e.__class__.__name__}: {e}", fix="replace the file") from None
    if path.suffix in (".hdr", ".img") or (path.suffix == ".nii" and not str(path).endswith(".gz")):
        data_file = path.with_suffix(".img") if path.suffix == ".hdr" else path
        offset = int(getattr(img.dataobj, "offset", 0) or 0)
        expected = offset + int(np.prod(img.shape)) * img.header.get_data_dtype().itemsize
        size = data_file.stat().st_size
        if size != expected:
            dims = "×".join(map(str, img.shape))
            raise DataError(f"{path}: its header says {dims} voxels of {img.header.get_data_dtype()} "
                            f"({expected} bytes with the offset) but {data_file.name} holds {size} bytes",
                            fix="the header's dimensions disagree with the data; re-export the volume")
    arr = np.asarray(img.dataobj, dtype=np.float32)
    while arr.ndim > 3 and arr.shape[-1] == 1:
        arr = arr[..., 0]
    if arr.ndim != 3:
        raise DataError(f"{path} is not a 3D volume (shape {arr.shape})", fix="give one 3D volume per file")
    if not np.isfinite(arr).all():
        raise DataError(f"{path} holds NaN or inf voxels", fix="replace the file")
    return arr, img


def grid_of(img) -> tuple:
    """(voxel sizes, orientation codes) of a nibabel image."""
    import nibabel as nib

    return tuple(float(z) for z in img.header.get_zooms()[:3]), nib.aff2axcodes(img.affine)


def check_same_grid(ref_path: Path, ref, path: Path, arr, img) -> None:
    """Refuse (DataError naming ``path``) a volume whose shape, voxel size or orientation differs from the
    reference's: the pipeline does not resample."""
    (z0, o0), (z1, o1) = grid_of(ref[1]), grid_of(img)
    if arr.shape != ref[0].shape:
        raise DataError(f"{path} is {'×'.join(map(str, arr.shape))} but {ref_path.name} is "
                        f"{'×'.join(map(str, ref[0].shape))}", fix="all volumes of a subject must share one grid")
    if any(abs(a - b) > 1e-3 for a, b in zip(z0, z1, strict=True)):
        raise DataError(f"{path} has voxel size {z1} but {ref_path.name} has {z0}; refusing to resample",
                        fix=f"resample {path.name} onto {ref_path.name}'s grid first (labels by nearest neighbour)")
    if o0 != o1:
        raise DataError(f"{path} has orientation {''.join(o1)} but {ref_path.name} has {''.join(o0)}; refusing to "
                        f"reorient", fix=f"reorient {path.name} to {''.join(o0)} first")


def map_labels(arr, path: Path, values=LABEL_VALUES):
    """Stored label values → 0..len(values)-1 (uint8); a value outside ``values`` is a DataError naming the file."""
    import numpy as np

    stored = np.rint(arr).astype(np.int64)
    found = np.unique(stored)
    bad = sorted(set(found.tolist()) - set(values))
    if bad:
        shown = ", ".join(map(str, bad[:6])) + (" …" if len(bad) > 6 else "")
        raise DataError(f"label volume {path} has values outside {'/'.join(map(str, values))}: {shown}",
                        fix="labels must be " + ", ".join(f"{v}" for v in values) + " (bg, CSF, GM, WM)")
    lut = np.zeros(max(values) + 1, np.uint8)
    for i, v in enumerate(values):
        lut[v] = i
    return lut[stored]


def load_subject(s: Subject, modalities=("t1", "t2"), label_values=LABEL_VALUES):
    """(image float32 (C, D, H, W) raw intensities, label uint8 (D, H, W) in 0..3 or None, reference nibabel image)
    with every file checked against the first modality's grid."""
    import numpy as np

    ref_path = s.images[modalities[0]]
    ref = load_volume(ref_path)
    chans = [ref[0]]
    for m in modalities[1:]:
        arr, img = load_volume(s.images[m])
        check_same_grid(ref_path, ref, s.images[m], arr, img)
        chans.append(arr)
    label = None
    if s.label is not None:
        arr, img = load_volume(s.label)
        check_same_grid(ref_path, ref, s.label, arr, img)
        label = map_labels(arr, s.label, label_values)
    return np.stack(chans), label, ref[1]


def crop_box(mask, min_size: int = 1) -> tuple[slice, slice, slice]:
    """The bounding box of ``mask`` (the non-zero T1 voxels), grown symmetrically (inside the volume) to at least
    ``min_size`` per axis; the whole volume when the mask is empty."""
    import numpy as np

    box = []
    for ax in range(3):
        other = tuple(i for i in range(3) if i != ax)
        hit = np.flatnonzero(mask.any(axis=other))
        lo, hi = (int(hit[0]), int(hit[-1]) + 1) if hit.size else (0, mask.shape[ax])
        need = min(mask.shape[ax], max(min_size, hi - lo))
        lo = max(0, min(lo - (need - (hi - lo)) // 2, mask.shape[ax] - need))
        hi = lo + need
        box.append(slice(lo, hi))
    return tuple(box)


def zscore(image):
    """Per-volume, per-channel z-score over the non-zero voxels (zero voxels stay 0)."""
    import numpy as np

    out = np.zeros_like(image, dtype=np.float32)
    for c in range(image.shape[0]):
        v = image[c]
        nz = v != 0
        if nz.any():
            mu, sd = float(v[nz].mean()), float(v[nz].std())
            out[c][nz] = (v[nz] - mu) / (sd if sd > 0 else 1.0)
    return out


# -- fixture ----------------------------------------------------------------------------------------------------
# tissue intensities (bg, CSF, GM, WM): T1 separates GM/WM, T2 separates CSF
FIXTURE_CONTRAST = {"t1": (0.0, 0.50, 0.58, 0.90), "t2": (0.0, 1.00, 0.52, 0.44)}


def phantom(rng, shape=(40, 40, 40), spacing=(1.0, 1.0, 1.0)):
    """A tissue map (0 bg, 1 CSF, 2 GM, 3 WM) of nested, wobbly ellipsoids with a CSF ventricle, and a smooth
    multiplicative bias field, on a grid of ``shape``."""
    import numpy as np

    grid = np.stack(np.meshgrid(*[np.arange(s, dtype=np.float32) for s in shape], indexing="ij"))
    centre = np.array([(s - 1) / 2 for s in shape], np.float32) + rng.uniform(-1.5, 1.5, 3)
    radii = np.array([s * 0.42 for s in shape], np.float32) * rng.uniform(0.9, 1.02, 3)
    rel = (grid - centre[:, None, None, None]) / radii[:, None, None, None]
    r = np.sqrt((rel ** 2).sum(0))
    theta, phi = np.arctan2(rel[1], rel[0]), np.arctan2(rel[2], np.hypot(rel[0], rel[1]))
    wobble = 1 + sum(rng.uniform(0.02, 0.06) * np.cos(k * theta + rng.uniform(0, 6.3)) * np.cos(phi)
                     for k in (2, 3, 5))
    r = r / wobble
    t_csf, t_gm = rng.uniform(0.80, 0.86), rng.uniform(0.58, 0.66)
    tissue = np.zeros(shape, np.uint8)
    tissue[r <= 1.0] = 1
    tissue[r <= t_csf] = 2
    tissue[r <= t_gm] = 3
    vent = np.sqrt((((grid - centre[:, None, None, None]) / (radii[:, None, None, None] * 0.22)) ** 2).sum(0))
    tissue[vent <= 1.0] = 1
    coef = rng.uniform(-0.12, 0.12, 3)
    bias = 1 + sum(c * np.cos(np.pi * g / s) for c, g, s in zip(coef, grid, shape, strict=True))
    return tissue, bias.astype(np.float32)


def render(rng, tissue, bias, contrast, noise: float = 0.04, scale: float = 1000.0):
    """An int16 volume: the per-tissue intensity, times the bias field, plus noise inside the brain (background 0)."""
    import numpy as np

    vol = np.asarray(contrast, np.float32)[tissue] * bias
    vol += rng.normal(0, noise, tissue.shape).astype(np.float32) * (tissue > 0)
    return np.clip(np.rint(vol * scale), 1, 32767).astype(np.int16) * (tissue > 0)


def _save_analyze(arr, path: Path, zooms=(1.0, 1.0, 1.0)) -> None:
    import nibabel as nib
    import numpy as np

    img = nib.AnalyzeImage(np.asarray(arr)[..., None], np.diag([*zooms, 1.0]))  # iSEG volumes carry a 4th axis of 1
    img.header.set_zooms((*zooms, 1.0))
    nib.save(img, str(path))


def fixture(out: Path, seed: int = 0, n_train: int = 4, n_test: int = 1, size: int = 40) -> Path:
    """``n_train`` labelled subjects (subject-1..) and ``n_test`` test subjects (numbered after them) as Analyze
    pairs in the challenge's names; returns the folder holding ``iSeg-2017-Training/``."""
    import numpy as np

    rng = np.random.default_rng(seed)
    root = Path(out) / "iSEG2017"
    train, test = root / TRAIN_DIR, root / TEST_DIR
    train.mkdir(parents=True, exist_ok=True)
    test.mkdir(parents=True, exist_ok=True)
    for n in range(1, n_train + n_test + 1):
        tissue, bias = phantom(rng, (size, size, size))
        folder = train if n <= n_train else test
        for m, suffix in MODALITIES.items():
            _save_analyze(render(rng, tissue, bias, FIXTURE_CONTRAST[m]), folder / f"subject-{n}-{suffix}.hdr")
        if n <= n_train:
            _save_analyze(np.asarray(LABEL_VALUES, np.uint8)[tissue], folder / f"subject-{n}-label.hdr")
    return root
