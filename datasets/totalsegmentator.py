"""TotalSegmentator (whole-body CT, one binary mask per anatomical structure).

Layout (as unpacked from Zenodo: v1 record 6802614, 1,204 cases / 104 structures; v2 record 10047292,
1,228 cases / 117 structures)::

    Totalsegmentator_dataset/
        meta.csv                           semicolon-separated; columns include image_id and split (train/val/test)
        s0000/ct.nii.gz                    the CT in HU (int16), 1.5 mm in the released files
        s0000/segmentations/liver.nii.gz   one binary mask per structure, same grid as ct.nii.gz
        ...

The class list is read from the mask file names (so v1 and v2 both work); index = position in the sorted list
+ 1 (0 is background), or the order the user gives. Overlaps (rare): the higher index wins.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from medrun.errors import DataError, UsageError, unknown_name

from . import DatasetInfo

DATASETS = [
    DatasetInfo("totalsegmentator", "TotalSegmentator whole-body CT, 104 (v1) or 117 (v2) structures",
                "Totalsegmentator_dataset/{meta.csv,s*/ct.nii.gz,s*/segmentations/<structure>.nii.gz}",
                "Zenodo (v1: record 6802614; v2: record 10047292); point at the folder holding meta.csv and s0000/",
                "medrun.datasets.totalsegmentator:fixture", ("segmentation", "ct", "3d")),
]

_HINT = "point at the Totalsegmentator_dataset folder (it holds meta.csv and s0000/ct.nii.gz), or try --fixture"
SPLITS = ("train", "val", "test")


@dataclass(frozen=True)
class Case:
    id: str  # e.g. s0000
    ct: Path
    seg_dir: Path
    split: str


def check_layout(root: Path) -> None:
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"TotalSegmentator folder not found: {root}", fix=_HINT)
    if not (root / "meta.csv").is_file():
        inner = root / "Totalsegmentator_dataset"
        raise DataError(f"{root} does not have the TotalSegmentator layout: no meta.csv",
                        fix=f"use {inner} instead" if (inner / "meta.csv").is_file() else _HINT)
    if not next(root.glob("s*/ct.nii.gz"), None):
        raise DataError(f"{root} has meta.csv but no s*/ct.nii.gz", fix=_HINT)


def read_meta(root: Path):
    """meta.csv as a DataFrame (semicolon-separated; a comma-separated file is accepted too)."""
    import pandas as pd

    path = Path(root) / "meta.csv"
    try:
        meta = pd.read_csv(path, sep=None, engine="python", dtype=str)
    except Exception as e:
        raise DataError(
            f"cannot read {path}: {e.__class__.__name__}", fix="restore meta.csv from the archive"
        ) from None
    missing = [c for c in ("image_id", "split") if c not in meta.columns]
    if missing:
        raise DataError(f"{path} lacks the column(s) {', '.join(missing)} (has {', '.join(meta.columns)})",
                        fix="meta.csv must have image_id and split columns, separated by ';'")
    bad = sorted(set(meta["split"].str.strip()) - set(SPLITS))
    if bad:
        raise DataError(f"{path}: unknown split value(s) {', '.join(bad)}", fix="split must be train, val or test")
    return meta


def read(root: Path, classes: list[str] | None = None) -> tuple[list[Case], list[str]]:
    """Every case of meta.csv and the class list (sorted mask names, or `classes` checked against them).

    A case folder or ct.nii.gz missing, or a case lacking a mask the others have, is a DataError naming it;
    a class name not in the dataset is a UsageError with the nearest name."""
    root = Path(root)
    check_layout(root)
    meta = read_meta(root)
    cases, names = [], None
    for image_id, split in zip(meta["image_id"].str.strip(), meta["split"].str.strip(), strict=True):
        folder = root / image_id
        ct, seg_dir = folder / "ct.nii.gz", folder / "segmentations"
        if not ct.is_file():
            raise DataError(f"{ct} is missing (listed in meta.csv)", fix="restore the case or remove its meta.csv row")
        if not seg_dir.is_dir():
            raise DataError(f"{seg_dir} is missing", fix="each case needs segmentations/<structure>.nii.gz")
        here = sorted(p.name[: -len(".nii.gz")] for p in seg_dir.glob("*.nii.gz"))
        if names is None:
            names, first = here, seg_dir
        elif here != names:
            lost = sorted(set(names) - set(here))
            extra = sorted(set(here) - set(names))
            what = f"lacks {', '.join(lost[:3])}" if lost else f"has extra {', '.join(extra[:3])}"
            raise DataError(f"{seg_dir} {what} (compared with {first})",
                            fix="every case must hold the same structure masks; restore the files")
        cases.append(Case(image_id, ct, seg_dir, split))
    if not cases:
        raise DataError(f"{root / 'meta.csv'} lists no cases", fix=_HINT)
    if not names:
        raise DataError(f"{cases[0].seg_dir} holds no .nii.gz masks", fix=_HINT)
    if classes:
        for c in classes:
            if c not in names:
                err = unknown_name("class", c, names, fallback=f"the dataset's classes are {', '.join(names[:6])} …")
                raise UsageError(f"{err.message} in {cases[0].seg_dir}", file=str(cases[0].seg_dir), fix=err.fix)
        names = list(classes)
    return cases, names


def _load_nifti(path: Path):
    import nibabel as nib
    import numpy as np

    try:
        img = nib.load(str(path))
        return img, np.asanyarray(img.dataobj)
    except Exception as e:
        raise DataError(f"cannot read NIfTI {path}: {e.__class__.__name__}: {str(e)[:120]}",
                        fix="re-extract the file from the archive") from None


def load_case(case: Case, classes: list[str]):
    """(CT float32 (X, Y, Z) in HU, label uint8/int16 (X, Y, Z), affine 4×4). Every mask must have the CT's shape;
    the label of a voxel is the index (1-based, in `classes` order) of its last mask, so overlaps go to the
    higher index."""
    import numpy as np

    img, ct = _load_nifti(case.ct)
    ct = np.asarray(ct, dtype=np.float32)
    if ct.ndim != 3:
        raise DataError(f"{case.ct} has {ct.ndim} dimensions", fix="ct.nii.gz must be a 3D volume")
    label = np.zeros(ct.shape, dtype=np.uint8 if len(classes) < 255 else np.int16)
    for i, name in enumerate(classes, start=1):
        path = case.seg_dir / f"{name}.nii.gz"
        _, mask = _load_nifti(path)
        if tuple(mask.shape) != tuple(ct.shape):
            raise DataError(f"segmentation {path} has shape {tuple(mask.shape)} but its CT {case.ct} has "
                            f"{tuple(ct.shape)}", fix="masks must be on their CT's voxel grid; restore the files")
        label[np.asarray(mask) > 0] = i
    return ct, label, img.affine


# -- fixture -------------------------------------------------------------------------------------------------------
FIXTURE_ORGANS = {  # name: (mean HU, centre (fraction of the side, per axis), radii (voxels at 48³))
    "liver": (60.0, (0.38, 0.45, 0.55), (11, 9, 9)),
    "spleen": (45.0, (0.66, 0.58, 0.55), (8, 7, 8)),
    "kidney_left": (150.0, (0.62, 0.30, 0.36), (7, 6, 7)),
    "gallbladder": (10.0, (0.36, 0.72, 0.35), (6, 6, 6)),
}
FIXTURE_SPLITS = ["train"] * 5 + ["val"] * 2 + ["test"]


def fixture(out: Path, seed: int = 0, n: int = 8, size: int = 48) -> Path:
    """`n` synthetic CTs (s0000…, `size`³ at 1.5 mm, gzip NIfTI, LPS-like affine as many CTs have) in the
    TotalSegmentator layout: air at −1000 HU, a body ellipsoid at ≈0 HU (noise SD 20), four jittered organ
    ellipsoids with distinct mean HU (liver 60, spleen 45, kidney_left 150, gallbladder 10), each written as
    segmentations/<name>.nii.gz, and meta.csv (';', with the split column: 5 train / 2 val / 1 test)."""
    import nibabel as nib
    import numpy as np

    rng = np.random.default_rng(seed)
    root = Path(out) / "Totalsegmentator_dataset"
    root.mkdir(parents=True, exist_ok=True)
    affine = np.diag([-1.5, -1.5, 1.5, 1.0])
    grid = np.stack(np.meshgrid(*[np.arange(size, dtype=np.float32)] * 3, indexing="ij"), -1)
    rows = ["image_id;age;gender;institute;study_type;split"]
    for i in range(n):
        case = root / f"s{i:04d}"
        (case / "segmentations").mkdir(parents=True, exist_ok=True)
        centre = np.array([size / 2] * 3) + rng.normal(0, 1, 3)
        radii = np.array([0.46, 0.40, 0.47]) * size * rng.uniform(0.95, 1.05, 3)
        body = (((grid - centre) / radii) ** 2).sum(-1) <= 1
        ct = np.where(body, rng.normal(0, 20, grid.shape[:3]), rng.normal(-1000, 20, grid.shape[:3]))
        for name, (hu, c, r) in FIXTURE_ORGANS.items():
            oc = np.array(c) * size + rng.normal(0, 1.5, 3)
            orad = np.array(r) * (size / 48) * rng.uniform(0.85, 1.15, 3)
            mask = ((((grid - oc) / orad) ** 2).sum(-1) <= 1) & body
            ct[mask] = rng.normal(hu, 20, int(mask.sum()))
            nib.save(nib.Nifti1Image(mask.astype(np.uint8), affine), case / "segmentations" / f"{name}.nii.gz")
        nib.save(nib.Nifti1Image(np.round(ct).astype(np.int16), affine), case / "ct.nii.gz")
        split = FIXTURE_SPLITS[i] if i < len(FIXTURE_SPLITS) else "train"
        rows.append(f"s{i:04d};{int(rng.integers(20, 90))};{'mf'[i % 2]};A;ct abdomen;{split}")
    (root / "meta.csv").write_text("\n".join(rows) + "\n")
    return root
