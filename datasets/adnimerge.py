"""ADNIMERGE (ADNI's merged longitudinal table) plus user-preprocessed MRI/PET volumes (card: ad-progression.md).

Layout (what a user has after downloading ``ADNIMERGE.csv`` from the ADNI IDA, with the free data-use agreement, and
registering the images to MNI152 with SPM12 as the paper did)::

    <root>/
        ADNIMERGE.csv                        one row per visit; the real column names: RID, PTID, VISCODE, EXAMDATE,
                                             DX_bl, DX, AGE, PTGENDER, PTEDUCAT, APOE4, Ventricles, Hippocampus,
                                             WholeBrain, Entorhinal, Fusiform, MidTemp, ICV, ... (others ignored)
        images/{PTID}_{VISCODE}_{MRI|PET}.nii.gz   e.g. 011_S_0002_bl_MRI.nii.gz; an absent file = missing modality

``dataset.adnimerge`` and ``dataset.images`` may point elsewhere (absolute, or relative to the root).

Reading (``read_adnimerge``), each problem a ``DataError`` naming the file and the fix:

- required columns (``REQUIRED``) missing → error listing them;
- VISCODE normalised: stripped, lower case, ``m6``/``m006`` → ``m06``, ``m120`` stays; ``bl`` stays. Codes that are
  neither ``bl`` nor ``m<months>`` (``sc``, ``uns1``, ``y1`` ...) are a hard error naming the file and the codes,
  unless ``ignore_viscodes=True`` (then those rows are dropped and counted);
- DX: ``CN``/``NL`` → CN, ``MCI``/``EMCI``/``LMCI`` → MCI, ``Dementia``/``AD`` → AD; the old ADNIMERGE transition
  labels (``MCI to Dementia``, ``NL to MCI`` ...) take their target state; empty = missing; anything else is an error;
- two rows for one (PTID, VISCODE), or one PTID under two RIDs → error naming the subject;
- biomarker and demographic columns must be numeric where filled (ADNIMERGE's ``<``/``>`` censored strings only occur
  in CSF columns, which are not read).

Cohort (``select_cohort``, the paper's lines 5004–5012): visits bl, m12, m24, m36, m48, m60 (``VISITS``); subjects
with a diagnosed baseline and at least one more diagnosed kept visit; subjects with any reversion (MCI→CN, AD→MCI/CN)
are excluded. Counts are printed, never asserted (they depend on the ADNIMERGE version).

The fixture writes 30 subjects × the 6 kept VISCODEs plus some m06/m18 rows (which selection drops), about 30 % of
follow-up visits dropped, monotone CN→MCI→Dementia trajectories. A neurodegeneration stage, rising at a hidden
per-subject rate, shrinks Hippocampus (relative to ICV) and the other volumes and the radius of a bright sphere in
16×20×16 MRI volumes; the uptake of a blob in PET falls with the rate itself. The diagnosis follows that stage plus
a hidden amyloid status (half the subjects, +``AMYLOID_SHIFT`` stage units) that no table column shows and both
images do (a bright shell in MRI and PET), so the image branch has signal the biomarkers lack: from the last
biomarkers alone a logistic regression forecasts the next DX with mAUC about 0.84, with the image's mean intensity
added about 0.97 (the test checks the gap). PET is missing in half the visits, MRI in 15 %.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from medrun.errors import DataError

from . import DatasetInfo

DATASETS = [
    DatasetInfo("adnimerge", "ADNIMERGE longitudinal table + user-preprocessed MRI/PET NIfTI (ADNI)",
                "ADNIMERGE.csv + images/{PTID}_{VISCODE}_{MRI|PET}.nii.gz (MNI152-registered by the user)",
                "adni.loni.usc.edu (IDA, free data-use agreement): ADNIMERGE.csv from Study Data, images from "
                "Image Collections, registered to MNI152 (SPM12); point at the folder holding both",
                "medrun.datasets.adnimerge:fixture", ("longitudinal", "3d", "mri", "pet", "tabular")),
]

BIOMARKERS = ("Ventricles", "Hippocampus", "WholeBrain", "Entorhinal", "Fusiform", "MidTemp")
DEMOGRAPHICS = ("AGE", "PTGENDER", "PTEDUCAT", "APOE4")
REQUIRED = ("RID", "PTID", "VISCODE", "DX", *DEMOGRAPHICS, *BIOMARKERS, "ICV")
VISITS = ("bl", "m12", "m24", "m36", "m48", "m60")
CLASSES = ("CN", "MCI", "AD")
MODALITIES = ("MRI", "PET")
_DX = {"cn": 0, "nl": 0, "smc": 0, "mci": 1, "emci": 1, "lmci": 1, "dementia": 2, "ad": 2}
_VIS_RE = re.compile(r"^m(\d+)$")
AMYLOID_SHIFT = 0.9  # the fixture: stage units the hidden amyloid status adds to the diagnosis (see ``fixture``)
_FIX = "point dataset.root (--data-dir) at the folder holding ADNIMERGE.csv and images/, or try --fixture"


def normalise_viscode(code) -> str | None:
    """'bl' → 'bl'; 'M6', 'm006' → 'm06'; 'm120' → 'm120'; anything else → None (unknown)."""
    c = str(code).strip().lower()
    if c == "bl":
        return "bl"
    m = _VIS_RE.match(c)
    return f"m{int(m.group(1)):02d}" if m else None


def viscode_months(code: str) -> int:
    return 0 if code == "bl" else int(code[1:])


def dx_index(value) -> int | None:
    """ADNIMERGE DX text → 0 CN / 1 MCI / 2 AD; None when empty; KeyError for unknown text."""
    if value is None or (isinstance(value, float) and value != value):
        return None
    text = str(value).strip().lower()
    if not text or text == "nan":
        return None
    if " to " in text:  # old ADNIMERGE transition labels: 'MCI to Dementia' → the state reached
        text = text.split(" to ")[-1].strip()
    return _DX[text]


def adnimerge_path(root: Path, adnimerge: str = "ADNIMERGE.csv") -> Path:
    p = Path(adnimerge)
    return p if p.is_absolute() else Path(root) / p


def images_dir(root: Path, images: str = "images") -> Path:
    p = Path(images)
    return p if p.is_absolute() else Path(root) / p


def check_layout(root: Path, adnimerge: str = "ADNIMERGE.csv") -> Path:
    """Cheap check before anything is hashed: the table exists and its header has the required columns."""
    import csv

    path = adnimerge_path(root, adnimerge)
    if not path.is_file():
        raise DataError(f"{root} does not have the ADNIMERGE layout: {path.name} not found", file=path, fix=_FIX)
    with open(path, newline="", encoding="utf-8", errors="replace") as f:
        header = next(csv.reader(f), [])
    missing = [c for c in REQUIRED if c not in header]
    if missing:
        raise DataError(f"{path} lacks required ADNIMERGE column(s) {', '.join(missing)}", file=path,
                        fix="use ADNIMERGE.csv as downloaded from the ADNI IDA (Study Data → ADNIMERGE)")
    return path


def read_adnimerge(path: Path, ignore_viscodes: bool = False):
    """ADNIMERGE.csv → a pandas DataFrame with the required columns, VISCODE normalised, ``dx`` (0/1/2 or NA) and
    ``months``. Raises ``DataError`` naming the file for every problem listed in the module docstring."""
    import pandas as pd

    path = Path(path)
    if not path.is_file():
        raise DataError(f"ADNIMERGE table not found: {path}", file=path, fix=_FIX)
    try:
        df = pd.read_csv(path, low_memory=False, dtype={"PTID": str, "VISCODE": str, "DX": str, "PTGENDER": str})
    except Exception as e:  # noqa: BLE001 (an unreadable table is one problem to the user)
        raise DataError(f"cannot read {path} as CSV ({type(e).__name__}: {str(e).splitlines()[0][:120]})",
                        file=path, fix="export ADNIMERGE as comma-separated values") from None
    missing = [c for c in REQUIRED if c not in df.columns]
    if missing:
        raise DataError(f"{path} lacks required ADNIMERGE column(s) {', '.join(missing)}", file=path,
                        fix="use ADNIMERGE.csv as downloaded from the ADNI IDA (Study Data → ADNIMERGE)")
    df = df.copy()
    df["VISCODE_RAW"] = df["VISCODE"]
    df["VISCODE"] = [normalise_viscode(v) for v in df["VISCODE"]]
    unknown = sorted({str(r) for r, v in zip(df["VISCODE_RAW"], df["VISCODE"], strict=True) if pd.isna(v)})
    if unknown:
        if not ignore_viscodes:
            shown = ", ".join(repr(u) for u in unknown[:8]) + (" …" if len(unknown) > 8 else "")
            raise DataError(
                f"{path} has unknown VISCODE(s) {shown} ({int(df['VISCODE'].isna().sum())} rows)",
                file=path,
                fix="fix or remove those rows, or set -o dataset.ignore_viscodes=true to drop them",
            )
        df = df[df["VISCODE"].notna()].copy()
    df.attrs["dropped_viscodes"] = unknown
    df["PTID"] = df["PTID"].astype(str).str.strip()
    dx = []
    for i, v in zip(df.index, df["DX"], strict=True):
        try:
            dx.append(dx_index(v))
        except KeyError:
            raise DataError(f"{path} row {i + 2}: unknown DX '{v}' (subject {df.at[i, 'PTID']})", file=path,
                            fix="DX must be CN, MCI or Dementia (or empty when missing)") from None
    df["dx"] = pd.array(dx, dtype="Int64")
    for col in ("RID", "AGE", "PTEDUCAT", "APOE4", *BIOMARKERS, "ICV"):
        raw = df[col]
        num = pd.to_numeric(raw, errors="coerce")
        bad = raw.notna() & num.isna() & (raw.astype(str).str.strip() != "")
        if bad.any():
            i = bad.idxmax()
            raise DataError(f"{path} row {i + 2}: column {col} holds '{raw[i]}', not a number "
                            f"(subject {df.at[i, 'PTID']}, {bad.sum()} such rows)", file=path,
                            fix=f"clean column {col}: numbers or empty cells only")
        df[col] = num
    dup = df.duplicated(["PTID", "VISCODE"], keep=False)
    if dup.any():
        row = df[dup].iloc[0]
        raise DataError(f"{path}: subject {row['PTID']} has {int(dup[df['PTID'] == row['PTID']].sum())} rows for "
                        f"VISCODE {row['VISCODE']}", file=path, fix="keep one row per subject and visit")
    rids = df.groupby("PTID")["RID"].nunique()
    if (rids > 1).any():
        ptid = rids[rids > 1].index[0]
        raise DataError(f"{path}: subject {ptid} appears under several RIDs", file=path,
                        fix="each PTID must map to one RID")
    df["months"] = [viscode_months(v) for v in df["VISCODE"]]
    return df.reset_index(drop=True)


@dataclass
class Cohort:
    table: object  # DataFrame, kept visits of kept subjects
    subjects: list[str]  # PTIDs, sorted
    counts: dict


def select_cohort(df, visits=VISITS) -> Cohort:
    """The paper's selection: kept VISCODEs, diagnosed baseline + ≥ 1 more diagnosed visit, no reversion."""
    import pandas as pd

    all_subjects, all_visits = df["PTID"].nunique(), len(df)
    t = df[df["VISCODE"].isin(list(visits))].copy()
    order = {v: i for i, v in enumerate(visits)}
    t["t"] = t["VISCODE"].map(order)
    t = t.sort_values(["PTID", "t"])
    keep, reverted, too_few = [], 0, 0
    stable = progressive = 0
    for ptid, g in t.groupby("PTID", sort=True):
        dx = [int(d) for d in g["dx"] if not pd.isna(d)]
        bl = g[g["t"] == 0]
        if bl.empty or bl["dx"].isna().all() or len(dx) < 2:
            too_few += 1
            continue
        if any(b < a for a, b in zip(dx, dx[1:], strict=False)):
            reverted += 1
            continue
        keep.append(ptid)
        progressive += dx[-1] > dx[0]
        stable += dx[-1] == dx[0]
    t = t[t["PTID"].isin(keep)].reset_index(drop=True)
    counts = {"table_subjects": int(all_subjects), "table_visits": int(all_visits), "subjects": len(keep),
              "visits": int(len(t)), "stable": int(stable), "progressive": int(progressive),
              "excluded_reversion": int(reverted), "excluded_too_few_visits": int(too_few),
              "dropped_viscodes": list(df.attrs.get("dropped_viscodes", []))}
    bl_dx = t[t["t"] == 0]["dx"].astype(int).value_counts()
    counts["baseline_dx"] = {c: int(bl_dx.get(i, 0)) for i, c in enumerate(CLASSES)}
    return Cohort(t, sorted(keep), counts)


def image_file(images: Path, ptid: str, viscode: str, modality: str) -> Path:
    return Path(images) / f"{ptid}_{viscode}_{modality}.nii.gz"


def scan_images(images: Path, cohort: Cohort, visits=VISITS) -> dict[tuple[str, str, str], Path]:
    """{(PTID, VISCODE, MRI|PET): path} for the files present. Files under ``images/`` are matched by name; a
    missing folder means no images at all (biomarker-only), which the pipeline reports."""
    images = Path(images)
    if not images.is_dir():
        return {}
    names = {p.name for p in images.iterdir()}
    out = {}
    for ptid in cohort.subjects:
        for v in visits:
            for mod in MODALITIES:
                f = f"{ptid}_{v}_{mod}.nii.gz"
                if f in names:
                    out[(ptid, v, mod)] = images / f
    return out


def load_volume(path: Path, shape: tuple[int, int, int], crop: tuple[int, int, int] | None = (128, 160, 128)):
    """A user's MNI152-registered volume → float32 array of ``shape`` in [0, 1]: centre crop to ``crop`` (the paper's
    128×160×128 from 182×218×182; skipped for volumes already that small), trilinear resize to ``shape`` if different
    (for CPU runs), per-volume min–max scaling. The same as MONAI's ``CenterSpatialCrop`` → ``Resize(mode=
    'trilinear')`` → ``ScaleIntensity(0, 1)`` (the test checks it against them) without importing MONAI, whose import
    costs seconds on every command."""
    import numpy as np
    import torch

    try:
        import nibabel as nib

        arr = np.asarray(nib.load(str(path)).get_fdata(dtype=np.float32))
    except Exception as e:  # noqa: BLE001
        raise DataError(f"cannot read volume {path} ({type(e).__name__}: {str(e).splitlines()[0][:120]})", file=path,
                        fix="re-export it as a 3D NIfTI (.nii.gz)") from None
    if arr.ndim == 4 and arr.shape[-1] == 1:
        arr = arr[..., 0]
    if arr.ndim != 3:
        raise DataError(f"volume {path} has shape {arr.shape}, not 3D", file=path, fix="one 3D volume per file")
    if crop is not None and all(s >= c for s, c in zip(arr.shape, crop, strict=True)):
        starts = [s // 2 - c // 2 for s, c in zip(arr.shape, crop, strict=True)]  # MONAI's centre
        arr = arr[tuple(slice(a, a + c) for a, c in zip(starts, crop, strict=True))]
    x = torch.from_numpy(np.ascontiguousarray(arr, dtype=np.float32))
    if tuple(x.shape) != tuple(shape):
        x = torch.nn.functional.interpolate(x[None, None], size=tuple(shape), mode="trilinear", align_corners=False)[
            0, 0
        ]
    lo, hi = x.min(), x.max()
    x = (x - lo) / (hi - lo) if hi > lo else x - lo
    return x.numpy().astype(np.float32)


def read_folds(path: Path, subjects) -> dict[str, int]:
    """A user's fold assignment CSV (columns PTID, fold) → {PTID: fold}. A subject listed in two folds, or a cohort
    subject with no fold, is a ``DataError`` naming the subject."""
    import pandas as pd

    path = Path(path)
    if not path.is_file():
        raise DataError(f"folds file not found: {path}", file=path, fix="a CSV with columns PTID,fold")
    df = pd.read_csv(path, dtype={"PTID": str})
    if not {"PTID", "fold"} <= set(df.columns):
        raise DataError(f"{path} lacks column(s) PTID and/or fold", file=path, fix="a CSV with columns PTID,fold")
    folds: dict[str, int] = {}
    for ptid, fold in zip(df["PTID"].astype(str).str.strip(), df["fold"], strict=True):
        if ptid in folds and folds[ptid] != int(fold):
            raise DataError(f"{path}: subject {ptid} is in two folds ({folds[ptid]} and {int(fold)})", file=path,
                            fix="each subject must be in exactly one fold (subject-level CV)")
        folds[ptid] = int(fold)
    absent = [s for s in subjects if s not in folds]
    if absent:
        raise DataError(f"{path}: subject {absent[0]} ({len(absent)} in all) has no fold", file=path,
                        fix="list every cohort subject once")
    return {s: folds[s] for s in subjects}


def check_disjoint(folds: list[list[str]], source: str = "folds") -> None:
    """Every subject in at most one fold (a subject in two folds leaks its visits into its own test)."""
    seen: dict[str, int] = {}
    for i, fold in enumerate(folds):
        for s in fold:
            if s in seen and seen[s] != i:
                raise DataError(f"{source}: subject {s} is in folds {seen[s] + 1} and {i + 1}", file=source,
                                fix="each subject must be in exactly one fold (subject-level CV)")
            seen[s] = i


# -- fixture ---------------------------------------------------------------------------------------------------
def fixture(out_dir: Path, seed: int = 0, n_subjects: int = 30, shape=(16, 20, 16)) -> Path:
    """A miniature ADNIMERGE.csv (real column names) + images/ in the public naming. The signal: a hidden rate r
    drives a neurodegeneration stage (Hippocampus/ICV, the other volumes, the radius of a bright sphere in MRI; PET
    uptake falls with r itself); the diagnosis (monotone) follows that stage plus a hidden amyloid status that only
    the images show (a bright shell in MRI and PET), so that the image branch's gain can be shown."""
    import nibabel as nib
    import numpy as np
    import pandas as pd

    rng = np.random.default_rng(seed)
    root = Path(out_dir) / "ADNI"
    img_dir = root / "images"
    img_dir.mkdir(parents=True, exist_ok=True)
    grid = np.stack(np.meshgrid(*[np.arange(s) - (s - 1) / 2 for s in shape], indexing="ij"))
    dist = np.sqrt((grid ** 2).sum(0))
    affine = np.diag([1.5, 1.5, 1.5, 1.0])
    rows = []
    months_all = [0, 6, 12, 18, 24, 36, 48, 60]
    for i in range(n_subjects):
        rid = 100 + i
        ptid = f"{(i % 9) + 2:03d}_S_{rid:04d}"
        base = rng.choice([0.0, 0.9], p=[0.55, 0.45]) + rng.uniform(0, 0.6)  # neurodegeneration at baseline
        rate = rng.uniform(0.0, 0.45)  # its units per year
        amyloid = float(rng.random() < 0.5)  # drives conversion; shown by the images only, never by a table column
        age, edu = rng.uniform(60, 85), int(rng.integers(8, 21))
        sex, apoe = rng.choice(["Male", "Female"]), int(rng.choice([0, 1, 2], p=[0.5, 0.35, 0.15]))
        icv = rng.normal(1.5e6, 1.2e5)
        for months in months_all:
            vis = "bl" if months == 0 else f"m{months:02d}"
            if months and months not in (6, 18) and rng.random() < 0.3:
                continue  # a missed visit
            if months in (6, 18) and rng.random() < 0.5:
                continue
            neuro = base + rate * months / 12 + 0.25 * (apoe / 2)  # what the volumes (and the MRI sphere) show
            stage = neuro + AMYLOID_SHIFT * amyloid  # what the diagnosis follows
            dx = "CN" if stage < 1.0 else "MCI" if stage < 2.0 else "Dementia"
            frac = 1 - 0.12 * neuro
            hippo = icv * 4.8e-3 * frac * rng.normal(1, 0.03)
            row = {"RID": rid, "COLPROT": "ADNI2", "ORIGPROT": "ADNI2", "PTID": ptid, "SITE": int(ptid[:3]),
                   "VISCODE": vis, "EXAMDATE": (pd.Timestamp("2012-01-15") + pd.DateOffset(months=months)
                                               + pd.Timedelta(days=int(rng.integers(-20, 20)))).strftime("%Y-%m-%d"),
                   "DX_bl": {"CN": "CN", "MCI": "LMCI", "Dementia": "AD"}[dx] if months == 0 else "",
                   "AGE": round(age, 1), "PTGENDER": sex, "PTEDUCAT": edu, "PTETHCAT": "Not Hisp/Latino",
                   "PTRACCAT": "White", "APOE4": apoe, "MMSE": round(30 - 2.5 * stage + rng.normal(0, 1)),
                   "Ventricles": icv * 0.022 * (1 + 0.25 * neuro) * rng.normal(1, 0.05),
                   "Hippocampus": hippo,
                   "WholeBrain": icv * 0.69 * (1 - 0.03 * neuro) * rng.normal(1, 0.01),
                   "Entorhinal": icv * 2.5e-3 * (1 - 0.1 * neuro) * rng.normal(1, 0.05),
                   "Fusiform": icv * 1.2e-2 * (1 - 0.04 * neuro) * rng.normal(1, 0.03),
                   "MidTemp": icv * 1.35e-2 * (1 - 0.04 * neuro) * rng.normal(1, 0.03),
                   "ICV": icv * rng.normal(1, 0.005), "DX": dx, "Month": months, "M": months}
            if rng.random() < 0.1 and months:
                for b in BIOMARKERS:  # an MRI without FreeSurfer volumes
                    row[b] = np.nan
            if rng.random() < 0.05 and months:
                row["DX"] = ""  # a visit without a diagnosis
            rows.append(row)
            if months in (6, 18):
                continue  # not a kept visit: no images written
            radius = 6.0 * (1 - 0.16 * neuro) * (shape[0] / 16)
            shell = np.abs(dist - 7.0 * shape[0] / 16) < 1.0  # the amyloid-positive subjects' bright shell
            if rng.random() < 0.85:
                mri = (0.3 * (dist < radius + 2.0) + 0.7 * (dist < radius) + 0.5 * amyloid * shell
                       + rng.normal(0, 0.08, shape))
                nib.save(
                    nib.Nifti1Image(mri.astype(np.float32) * 800, affine), str(img_dir / f"{ptid}_{vis}_MRI.nii.gz")
                )
            if rng.random() < 0.5:
                # PET uptake falls with the progression *rate* (what the tables do not show): the image branch's gain
                pet = ((1.0 - 1.4 * rate) * np.exp(-(dist / 5.0) ** 2) + 0.8 * amyloid * shell + 0.2
                       + rng.normal(0, 0.05, shape))
                nib.save(
                    nib.Nifti1Image(pet.astype(np.float32) * 3e4, affine), str(img_dir / f"{ptid}_{vis}_PET.nii.gz")
                )
    pd.DataFrame(rows).to_csv(root / "ADNIMERGE.csv", index=False)
    return root
