"""MIDRC-RICORD-1a (TCIA): chest CT of COVID-19-positive adults as the NBIA Data Retriever writes it, with the
radiologist CT severity grades of Dey et al. (``COVID_grade.xlsx``), TCIA's clinical sheet and the MD.ai export of
the rough lesion annotations; optionally a folder of lobe label maps (one NIfTI per case).

Layout (``<root>`` is the download folder, ``manifest-<number>/`` from NBIA)::

    <root>/
        MIDRC-RICORD-1A/<PatientID>/<study>/<series>/*.dcm
            e.g. MIDRC-RICORD-1A-419639-000082/08-02-2002-NA-CT CHEST WITHOUT CONTRAST-04614/
                 2.000000-ROUTINE CHEST NON-CON-97100/1-001.dcm      (a study often holds several series:
                 thin and thick axial reconstructions, bone kernels, coronal reformats, scouts)
        metadata.csv                                            NBIA's listing (not read)
        COVID_grade.xlsx                                        Dataset, Sequence ID, Series ID, Score, Comments
        MIDRC-RICORD-1a-Clinical-Data-Jan-13-2021.xlsx          Anon MRN, Anon Age, Anon Sex, Anon Study UID, …
        MIDRC-RICORD-1a_annotations_labelgroup_all_2020-Dec-8.json   MD.ai export (labelGroups, datasets[].annotations)
        lobes/<PatientID>.nii.gz                                labels 0–5 (lungmask LTRCLobes order), optional

The sheets, the annotation JSON and the lobe folder may also live elsewhere (the manifest names them).

A case is a patient folder (its name is the DICOM PatientID). The grades sheet names a case by ``Sequence ID`` (the
site: 419639, 440808, 660042 or ``IA SITE 2``) and ``Series ID`` (the patient number): the row (419639, 82) is
``MIDRC-RICORD-1A-419639-000082``; a site written in words matches by its digits (``IA SITE 2`` ↔ a PatientID
``MIDRC-RICORD-1A-SITE2-<n>``). A sheet may instead hold a ``Case ID`` / ``PatientID`` column. A score of ``-`` (with
a comment such as "only scars") excludes the case, as the paper did.

One series per case is used: the series the annotation export references if any, else the axial CT series (not a
localizer) with the most slices; ``dataset.series`` in the manifest can name it. A series is read with each slice's
RescaleSlope and RescaleIntercept (HU), ordered by position along the slice normal (apex first), and refused when
its slices differ in orientation or size, repeat a position, or leave a gap (missing slices).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path

from medrun.errors import DataError, EnvError

from . import DatasetInfo

DATASETS = [
    DatasetInfo("ricord-1a", "MIDRC-RICORD-1a chest CT (COVID-19+) with radiologist CT severity grades",
                "MIDRC-RICORD-1A/<PatientID>/<study>/<series>/*.dcm + COVID_grade.xlsx + clinical xlsx "
                "(+ MD.ai annotation JSON, + lobes/<PatientID>.nii.gz)",
                "TCIA collection MIDRC-RICORD-1A (NBIA Data Retriever; clinical xlsx and MD.ai JSON on the collection "
                "page); grades: 'Radiologist gradations/COVID_grade.xlsx' of Samiran-Dey/explainable_seg; point at the "
                "folder holding MIDRC-RICORD-1A/", "medrun.datasets.ricord:fixture", ("ct", "grading", "dicom")),
]

DICOM_DIR = "MIDRC-RICORD-1A"
GRADES = "COVID_grade.xlsx"
CLINICAL = "MIDRC-RICORD-1a-Clinical-Data-Jan-13-2021.xlsx"
ANNOTATIONS = "MIDRC-RICORD-1a_annotations_labelgroup_all_2020-Dec-8.json"
INFECTION_LABELS = ("Infectious opacity", "Infectious TIB/micronodules", "Infectious cavity")
LOBES = {1: "left upper", 2: "left lower", 3: "right upper", 4: "right middle", 5: "right lower"}
_HINT = ("point dataset.root (--data-dir) at the NBIA download folder that holds MIDRC-RICORD-1A/, or try --fixture")
_PID = re.compile(r"^MIDRC-RICORD-1A-(.+)-(\d+)$", re.IGNORECASE)
_TAGS = ["PatientID", "StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID", "Modality", "ImageType",
         "ImageOrientationPatient", "ImagePositionPatient", "Rows", "Columns", "SeriesDescription", "PixelSpacing",
         "PatientSex", "PatientAge"]


# -- layout -------------------------------------------------------------------------------------------------------
def resolve(root: Path, path: str | Path | None) -> Path | None:
    """A manifest path: absolute, or relative to the dataset root; None stays None."""
    if path is None or str(path) == "":
        return None
    p = Path(str(path)).expanduser()
    return p if p.is_absolute() else Path(root) / p


def check_layout(root: Path, dicom_dir: str = DICOM_DIR) -> Path:
    """The DICOM folder under ``root``, after cheap checks (no file is opened); a DataError naming what is wrong."""
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"MIDRC-RICORD-1a folder not found: {root}", fix=_HINT)
    dicom = root / dicom_dir
    if dicom.is_dir():
        return dicom
    if root.name.upper() == dicom_dir.upper() or any(_PID.match(p.name) for p in root.iterdir() if p.is_dir()):
        raise DataError(f"{root} is the {dicom_dir} folder itself", fix=f"use its parent {root.parent} instead")
    inner = [p for p in sorted(root.iterdir()) if p.is_dir() and (p / dicom_dir).is_dir()]
    if inner:
        raise DataError(f"{root} is one level above the download folder", fix=f"use {inner[0]} instead")
    found = ", ".join(sorted(p.name for p in root.iterdir())[:5]) or "nothing"
    raise DataError(f"{root} has no {dicom_dir}/ folder (found: {found})", fix=_HINT)


# -- case identities ----------------------------------------------------------------------------------------------
def site_key(site) -> str:
    """A site as the grades sheet and PatientIDs write it, reduced to compare: 419639 → '419639', 'IA SITE 2' and
    'SITE2' → 'S2'."""
    s = str(site).strip().upper()
    if s.endswith(".0") and s[:-2].isdigit():
        s = s[:-2]
    if s.isdigit():
        return str(int(s))
    digits = re.sub(r"\D", "", s)
    return f"S{int(digits)}" if digits else re.sub(r"\W", "", s)


def case_key(patient_id: str) -> tuple[str, int] | None:
    """(site, number) of a RICORD PatientID (``MIDRC-RICORD-1A-419639-000082`` → ('419639', 82)); None otherwise."""
    m = _PID.match(str(patient_id).strip())
    return (site_key(m.group(1)), int(m.group(2))) if m else None


# -- series -------------------------------------------------------------------------------------------------------
@dataclass
class Slice:
    path: Path
    sop: str
    position: tuple[float, float, float]
    orientation: tuple[float, ...]
    shape: tuple[int, int]
    spacing: tuple[float, float]


@dataclass
class Series:
    case: str  # the patient folder's name (its PatientID)
    uid: str
    study: str
    modality: str
    description: str
    image_type: str
    slices: list[Slice] = field(default_factory=list)
    sex: str | None = None
    age: float | None = None

    @property
    def folder(self) -> Path:
        parents = {s.path.parent for s in self.slices}
        return parents.pop() if len(parents) == 1 else Path(*_common([p.parts for p in parents]))

    def is_axial(self) -> bool:
        import numpy as np

        o = np.asarray(self.slices[0].orientation, float)
        return len(o) == 6 and abs(np.cross(o[:3], o[3:])[2]) > 0.9

    def usable(self) -> bool:
        return (self.modality.upper() in ("CT", "") and "LOCALIZER" not in self.image_type.upper()
                and len(self.slices) >= 3 and self.is_axial())


def _common(parts: list[tuple]) -> tuple:
    out = []
    for items in zip(*parts, strict=False):
        if len(set(items)) != 1:
            break
        out.append(items[0])
    return tuple(out)


def _dcmread(path: Path, **kw):
    import pydicom

    try:
        return pydicom.dcmread(str(path), **kw)
    except Exception as e:  # truncated, not DICOM, unreadable
        raise DataError(f"cannot read DICOM file {path}: {e.__class__.__name__}: {str(e).splitlines()[0][:160]}",
                        fix="replace or delete the file (re-download the series)") from None


def _age(text) -> float | None:
    m = re.match(r"^\s*(\d+(?:\.\d+)?)\s*([YMWD]?)", str(text or ""), re.IGNORECASE)
    if not m:
        return None
    v, unit = float(m.group(1)), (m.group(2) or "Y").upper()
    return v / {"Y": 1, "M": 12, "W": 52.18, "D": 365.25}[unit]


def scan(dicom_root: Path) -> dict[str, list[Series]]:
    """Every series under ``dicom_root`` (``*.dcm`` found recursively, headers only), by case (the first folder
    below the root). Hidden files and folders are skipped."""
    dicom_root = Path(dicom_root)
    by_uid: dict[str, Series] = {}
    for path in sorted(dicom_root.rglob("*")):
        rel = path.relative_to(dicom_root)
        if not path.is_file() or path.suffix.lower() != ".dcm" or any(p.startswith(".") for p in rel.parts):
            continue
        if len(rel.parts) < 2:
            raise DataError(f"{path} lies directly in {dicom_root}",
                            fix="DICOM files belong under <PatientID>/<study>/<series>/")
        ds = _dcmread(path, stop_before_pixels=True, specific_tags=_TAGS)
        uid = str(ds.get("SeriesInstanceUID", "")) or f"folder:{path.parent}"
        if uid not in by_uid:
            by_uid[uid] = Series(rel.parts[0], uid, str(ds.get("StudyInstanceUID", "")), str(ds.get("Modality", "")),
                                 str(ds.get("SeriesDescription", "")),
                                 "\\".join(map(str, ds.get("ImageType", []) or [])),
                                 sex=str(ds.get("PatientSex", "") or "") or None, age=_age(ds.get("PatientAge")))
        ipp, iop = ds.get("ImagePositionPatient"), ds.get("ImageOrientationPatient")
        spacing = ds.get("PixelSpacing") or [1.0, 1.0]
        by_uid[uid].slices.append(Slice(path, str(ds.get("SOPInstanceUID", "")),
                                        tuple(float(v) for v in ipp) if ipp else (0.0, 0.0, 0.0),
                                        tuple(round(float(v), 4) for v in iop) if iop else (),
                                        (int(ds.get("Rows", 0)), int(ds.get("Columns", 0))),
                                        (float(spacing[0]), float(spacing[1]))))
    cases: dict[str, list[Series]] = {}
    for s in by_uid.values():
        cases.setdefault(s.case, []).append(s)
    if not cases:
        raise DataError(f"no DICOM files (*.dcm) under {dicom_root}", fix=_HINT)
    return dict(sorted(cases.items()))


def choose_series(case: str, series: list[Series], prefer: set[str] = frozenset(), named: str | None = None) -> Series:
    """The case's series: ``named`` (a SeriesInstanceUID or a folder name), else one the annotations reference,
    else the usable axial CT series with the most slices."""
    if named:
        hit = [s for s in series if named in (s.uid, s.folder.name)]
        if not hit:
            raise DataError(f"case {case} has no series '{named}' (dataset.series)",
                            fix=f"its series: {', '.join(s.folder.name for s in series)}")
        return hit[0]
    usable = [s for s in series if s.usable()]
    if not usable:
        raise DataError(f"case {case} has no axial CT series (found: "
                        f"{', '.join(f'{s.folder.name} ({len(s.slices)} files)' for s in series)})",
                        fix="download its axial series, or name one in dataset.series")
    annotated = [s for s in usable if s.uid in prefer]
    return max(annotated or usable, key=lambda s: (len(s.slices), s.uid))


def ordered(series: Series) -> tuple[list[Slice], float]:
    """The slices apex first (descending position along the slice normal) and the slice spacing (mm), after checking
    that they share one orientation and size and leave no gap: a DataError naming the series folder otherwise."""
    import numpy as np

    where = series.folder
    orients = {s.orientation for s in series.slices}
    if len(orients) > 1:
        shown = "; ".join(str(list(o)) for o in sorted(orients)[:2])
        raise DataError(f"series {where} mixes slice orientations ({shown})",
                        fix="keep one reconstruction per series folder (re-download it, or remove the odd slices)")
    shapes = {s.shape for s in series.slices}
    if len(shapes) > 1:
        raise DataError(f"series {where} mixes slice sizes ({', '.join(f'{r}×{c}' for r, c in sorted(shapes))})",
                        fix="keep one reconstruction per series folder")
    o = np.asarray(series.slices[0].orientation or (1, 0, 0, 0, 1, 0), float)
    normal = np.cross(o[:3], o[3:])
    normal = normal if normal[2] >= 0 else -normal  # +z: superior in DICOM's patient coordinates
    pos = np.array([np.dot(normal, s.position) for s in series.slices])
    order = np.argsort(-pos, kind="stable")
    slices = [series.slices[i] for i in order]
    z = pos[order]
    if len(z) < 2:
        return slices, 1.0
    gaps = -np.diff(z)
    if np.any(gaps < 1e-3):
        i = int(np.argmax(gaps < 1e-3))
        raise DataError(f"series {where} has two slices at the same position ({slices[i].path.name}, "
                        f"{slices[i + 1].path.name})", fix="remove the duplicate slice")
    step = float(np.median(gaps))
    if np.any(gaps > 1.5 * step):
        i = int(np.argmax(gaps > 1.5 * step))
        missing = int(round(gaps[i] / step)) - 1
        raise DataError(f"series {where} is missing slices: a gap of {gaps[i]:.2f} mm after {slices[i].path.name} "
                        f"(about {missing} slice(s) at {step:.2f} mm spacing)",
                        fix="re-download the series (NBIA Data Retriever) or exclude the case from the grades sheet")
    return slices, step


@dataclass
class Volume:
    hu: object  # (Z, H, W) float32, apex first; rows anterior → posterior, columns patient right → left
    spacing: tuple[float, float, float]  # (slice, row, column) in mm
    origin: tuple[float, float, float]  # ImagePositionPatient of the most inferior slice (LPS, mm)
    sops: list[str]
    slice_files: list[Path]

    def affine(self, shape: tuple[int, int, int] | None = None):
        """The RAS affine of ``canonical(array)`` for an array of this volume's grid (or resampled in-plane to
        ``shape``), so NIfTI viewers overlay it on the DICOM series."""
        import numpy as np

        z, h, w = self.hu.shape
        zz, hh, ww = shape or (z, h, w)
        dz, dy, dx = self.spacing[0], self.spacing[1] * h / hh, self.spacing[2] * w / ww
        x0, y0, z0 = self.origin
        a = np.diag([dx, dy, dz, 1.0])
        a[:3, 3] = [-x0 - (ww - 1) * dx, -y0 - (hh - 1) * dy, z0]
        return a


def canonical(arr):
    """(Z, H, W) apex-first, rows anterior→posterior, columns right→left → NIfTI RAS voxel order (x, y, z)."""
    return arr[::-1, ::-1, ::-1].transpose(2, 1, 0)


def from_canonical(arr):
    return arr.transpose(2, 1, 0)[::-1, ::-1, ::-1]


def read_volume(series: Series) -> Volume:
    """The series as HU (each slice's pixels × RescaleSlope + RescaleIntercept), apex first."""
    import numpy as np

    slices, step = ordered(series)
    planes = []
    for s in slices:
        ds = _dcmread(s.path)
        try:
            px = ds.pixel_array
        except Exception as e:  # a compressed transfer syntax without its decoder, or broken pixel data
            text = str(e).splitlines()[0][:200]
            if "decod" in text.lower() or "handler" in text.lower() or "plugin" in text.lower():
                raise EnvError(f"cannot decode {s.path} ({ds.file_meta.get('TransferSyntaxUID', '?')}): {text}",
                               fix="pip install pylibjpeg pylibjpeg-libjpeg pylibjpeg-openjpeg") from None
            raise DataError(f"cannot read the pixels of {s.path}: {text}", fix="re-download the series") from None
        if px.ndim != 2:
            raise DataError(f"{s.path} holds {px.ndim}-D pixel data, not one axial slice",
                            fix="use a single-frame axial series")
        slope, intercept = float(ds.get("RescaleSlope", 1) or 1), float(ds.get("RescaleIntercept", 0) or 0)
        planes.append(px.astype(np.float32) * slope + intercept)
    lowest = slices[-1].position
    return Volume(np.stack(planes), (step, *slices[0].spacing), lowest, [s.sop for s in slices],
                  [s.path for s in slices])


def read_lobes(path: Path, volume: Volume):
    """A lobe label map (NIfTI, any orientation nibabel can bring to RAS) on the volume's grid, as uint8
    (Z, H, W) with labels 0–5; a DataError naming the file when it does not fit its series."""
    import nibabel as nib
    import numpy as np

    try:
        img = nib.as_closest_canonical(nib.load(str(path)))
        data = np.asanyarray(img.dataobj)
    except Exception as e:
        raise DataError(f"cannot read lobe mask {path}: {e.__class__.__name__}: {str(e)[:160]}",
                        fix="write it as NIfTI (.nii or .nii.gz)") from None
    data = np.squeeze(data)
    if data.ndim != 3:
        raise DataError(f"lobe mask {path} is {data.ndim}-D", fix="one 3-D label map per case")
    lobes = from_canonical(data)
    if lobes.shape != volume.hu.shape:
        z, h, w = volume.hu.shape
        raise DataError(f"lobe mask {path} is {lobes.shape[2]}×{lobes.shape[1]}×{lobes.shape[0]} but its series is "
                        f"{w}×{h}×{z}", fix="compute the lobes on the series this pipeline reads (see run's "
                                            "data.lock.json), or name that series in dataset.series")
    zooms = img.header.get_zooms()[:3]
    want = (volume.spacing[2], volume.spacing[1], volume.spacing[0])
    if not np.allclose(zooms, want, rtol=0.02, atol=0.02):
        raise DataError(f"lobe mask {path} has voxel size {tuple(round(float(v), 3) for v in zooms)} mm, its series "
                        f"{tuple(round(v, 3) for v in want)} mm", fix="compute the lobes on this series")
    values = np.unique(lobes)
    if values.min() < 0 or values.max() > 5 or not np.all(values == np.round(values)):
        raise DataError(f"lobe mask {path} holds values other than 0–5 ({', '.join(map(str, values[:8]))})",
                        fix="labels: 0 background, 1 left upper, 2 left lower, 3 right upper, 4 right middle, "
                            "5 right lower (lungmask LTRCLobes)")
    return np.ascontiguousarray(lobes).astype(np.uint8)


# -- sheets -------------------------------------------------------------------------------------------------------
def _norm(name) -> str:
    return re.sub(r"[^a-z0-9]", "", str(name).lower())


def _read_table(path: Path, what: str):
    import pandas as pd

    path = Path(path)
    if not path.is_file():
        raise DataError(f"{what} not found: {path}", fix=f"set the path in the manifest (it is read as {path.name})")
    try:
        if path.suffix.lower() in (".csv", ".txt"):
            return pd.read_csv(path, dtype=object)
        return pd.read_excel(path, dtype=object)
    except ImportError as e:
        raise EnvError(f"reading {path} needs {e.name or 'openpyxl'}", fix="pip install openpyxl") from None
    except Exception as e:
        raise DataError(f"cannot read {what} {path}: {e.__class__.__name__}: {str(e)[:160]}",
                        fix="save it as .xlsx or .csv") from None


def _column(df, path: Path, what: str, *names: str, required: bool = True):
    cols = {_norm(c): c for c in df.columns}
    for n in names:
        if _norm(n) in cols:
            return cols[_norm(n)]
    if required:
        raise DataError(f"{what} {path} has no column {names[0]!r} (columns: {', '.join(map(str, df.columns))})",
                        fix=f"name the column {names[0]!r}")
    return None


@dataclass(frozen=True)
class Grade:
    key: tuple[str, int] | str  # (site, number), or a case id when the sheet names cases
    score: int | None  # None: excluded (the sheet's '-')
    comment: str
    row: int  # the sheet's row number (header = 1)


def read_grades(path: Path) -> list[Grade]:
    """Rows of the grades sheet (the authors' ``Sequence ID``/``Series ID``/``Score``/``Comments``, or a ``Case ID``
    column); a non-numeric score excludes the case."""
    import math

    df = _read_table(path, "grades sheet")
    case_col = _column(df, path, "grades sheet", "Case ID", "PatientID", "Patient ID", required=False)
    seq_col = None if case_col else _column(df, path, "grades sheet", "Sequence ID")
    ser_col = None if case_col else _column(df, path, "grades sheet", "Series ID")
    score_col = _column(df, path, "grades sheet", "Score", "CTSS", "Grade")
    com_col = _column(df, path, "grades sheet", "Comments", "Comment", required=False)
    out = []
    for i, r in enumerate(df.to_dict("records")):
        raw = r[score_col]
        note = None if com_col is None else r[com_col]
        comment = "" if note is None or (isinstance(note, float) and math.isnan(note)) else str(note).strip()
        try:
            score = int(float(str(raw).strip()))
            if not 0 <= score <= 25:
                raise DataError(f"grades sheet {path} row {i + 2}: score {raw} is outside 0–25",
                                fix="CT severity scores are 0–25; write '-' to exclude a case")
        except (TypeError, ValueError):
            score = None
        if case_col:
            cid = str(r[case_col]).strip()
            key = case_key(cid) or cid
        else:
            try:
                key = (site_key(r[seq_col]), int(float(str(r[ser_col]).strip())))
            except (TypeError, ValueError):
                raise DataError(f"grades sheet {path} row {i + 2}: Series ID {r[ser_col]!r} is not a number",
                                fix="each row names a case by Sequence ID and Series ID") from None
        out.append(Grade(key, score, comment, i + 2))
    if not out:
        raise DataError(f"grades sheet {path} has no rows", fix="use the authors' COVID_grade.xlsx")
    return out


def match_grades(grades: list[Grade], cases, path: Path) -> tuple[dict[str, Grade], list[Grade]]:
    """{case: grade} for the rows that name a case present, and the rows that name none. No row matching any case
    is a DataError naming the sheet (wrong sheet, or wrong download folder)."""
    keys = {}
    for c in cases:
        keys[case_key(c) or c] = c
        keys[c] = c
    matched, unmatched = {}, []
    for g in grades:
        case = keys.get(g.key)
        if case is None:
            unmatched.append(g)
        else:
            matched[case] = g
    if not matched:
        shown = ", ".join(_show(g.key) for g in grades[:3])
        raise DataError(f"grades sheet {path} names no case of this download ({shown} …; the download has "
                        f"{', '.join(list(cases)[:3])} …)",
                        fix="use the grades sheet of MIDRC-RICORD-1a and point dataset.root at its download")
    return matched, unmatched


def _show(key) -> str:
    return f"{key[0]}/{key[1]}" if isinstance(key, tuple) else str(key)


def read_clinical(path: Path) -> list[dict]:
    """Rows of TCIA's clinical sheet as ``{"id", "study", "age", "sex"}`` (``Anon MRN``, ``Anon Study UID``,
    ``Anon Age``, ``Anon Sex``; plain ``PatientID``/``Age``/``Sex`` names work too). Sex is 'F', 'M' or None."""
    import math

    df = _read_table(path, "clinical sheet")
    id_col = _column(df, path, "clinical sheet", "Anon MRN", "PatientID", "Patient ID", "Case ID", "MRN")
    st_col = _column(df, path, "clinical sheet", "Anon Study UID", "StudyInstanceUID", "Study UID", required=False)
    age_col = _column(df, path, "clinical sheet", "Anon Age", "Age", "Age at Imaging", "Anon Age at Imaging")
    sex_col = _column(df, path, "clinical sheet", "Anon Sex", "Sex", "Gender")
    rows = []
    for r in df.to_dict("records"):
        sex = str(r[sex_col] or "").strip().upper()[:1]
        age = r[age_col]
        try:
            age = float(str(age).strip().rstrip("Yy"))
            age = None if math.isnan(age) else age
        except (TypeError, ValueError):
            age = None
        rows.append({"id": str(r[id_col]).strip(), "study": str(r[st_col]).strip() if st_col else "",
                     "age": age, "sex": sex if sex in ("F", "M") else None})
    return rows


def match_clinical(rows: list[dict], series: Series) -> dict:
    """The clinical row of a case (by PatientID, then by StudyInstanceUID), else the DICOM header's age and sex."""
    for r in rows:
        if r["id"] == series.case or (r["study"] and r["study"] == series.study):
            return {"age": r["age"], "sex": r["sex"], "source": "clinical"}
    sex = (series.sex or "").upper()[:1]
    return {"age": series.age, "sex": sex if sex in ("F", "M") else None,
            "source": "dicom" if series.age is not None or sex in ("F", "M") else "none"}


# -- annotations (MD.ai export) -----------------------------------------------------------------------------------
@dataclass
class Annotations:
    path: Path
    polygons: dict[str, dict[str, list]]  # series uid → SOP uid → [vertices (N, 2) as [x, y]]
    labels: list[str]  # the label names used

    def series(self) -> set[str]:
        return set(self.polygons)


def read_annotations(path: Path, labels=INFECTION_LABELS) -> Annotations:
    """Polygons of the named labels from an MD.ai export: ``labelGroups[].labels[]`` give label names, each
    ``datasets[].annotations[]`` entry a SeriesInstanceUID, SOPInstanceUID, labelId and ``data.vertices`` ([x, y]
    pixel pairs). Study- and series-level labels (no vertices) are skipped."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"annotation export not found: {path}",
                        fix="set dataset.annotations to the MD.ai JSON, or null to skip the annotation comparator")
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise DataError(f"cannot read annotation export {path}: {e.__class__.__name__}: {str(e)[:120]}",
                        fix="use the MD.ai JSON of the collection page, unzipped") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("datasets"), list):
        raise DataError(f"{path} is not an MD.ai export (no 'datasets' list)", fix="use the MD.ai JSON export")
    names = {lab.get("id"): lab.get("name")
             for g in doc.get("labelGroups", []) or [] for lab in g.get("labels", []) or []}
    wanted = {i for i, n in names.items() if n in set(labels)}
    if not wanted:
        raise DataError(f"annotation export {path} has none of the labels {', '.join(labels)} "
                        f"(it has: {', '.join(sorted(filter(None, names.values()))[:8])})",
                        fix="set dataset.annotation_labels to the lesion label names of the export")
    polys: dict[str, dict[str, list]] = {}
    for d in doc["datasets"]:
        for a in d.get("annotations", []) or []:
            data = a.get("data") or {}
            verts = data.get("vertices") if isinstance(data, dict) else None
            if a.get("labelId") not in wanted or not verts or not a.get("SOPInstanceUID"):
                continue
            polys.setdefault(str(a.get("SeriesInstanceUID")), {}).setdefault(str(a["SOPInstanceUID"]), []).append(verts)
    return Annotations(path, polys, list(labels))


def rasterise(polygons: dict[str, list], sops: list[str], shape: tuple[int, int]):
    """The union of a series' polygons as a (Z, H, W) bool mask on the series' own grid (slice order of ``sops``)."""
    import numpy as np
    from skimage.draw import polygon

    out = np.zeros((len(sops), *shape), bool)
    index = {s: i for i, s in enumerate(sops)}
    for sop, items in polygons.items():
        if sop not in index:
            continue
        for verts in items:
            v = np.asarray(verts, float).reshape(-1, 2)
            if len(v) < 3:
                continue
            rr, cc = polygon(v[:, 1], v[:, 0], shape)
            out[index[sop], rr, cc] = True
    return out


# -- fixture ------------------------------------------------------------------------------------------------------
# The planted lobe scores (left upper, left lower, right upper, right middle, right lower) of the fixture's graded
# cases; case 0 is the control: vessels and the liver dome only, no opacity anywhere.
FIXTURE_SCORES = [(0, 0, 0, 0, 0), (1, 0, 1, 0, 1), (2, 1, 1, 1, 1), (2, 2, 2, 1, 2), (3, 2, 3, 2, 2),
                  (3, 3, 3, 3, 3), (4, 4, 4, 3, 3), (5, 4, 5, 4, 3)]
# planted involvement per score, inside each score's bin with a margin for what a 128² grid loses at borders
FIXTURE_FRACTION = {0: 0.0, 1: 0.03, 2: 0.15, 3: 0.40, 4: 0.70, 5: 0.97}
_SITES = ["419639", "419639", "660042", "440808", "SITE2", "419639", "SITE2", "660042", "440808"]
_NUMBERS = [82, 361, 18, 5, 4, 800, 21, 124, 3]
_AGES = [34, 47, 55, 66, 72, 38, 44, 58, 61]
_SEXES = ["F", "M", "F", "M", "F", "M", "M", "F", "F"]


def fixture_cases(n: int = len(FIXTURE_SCORES) + 1) -> list[str]:
    return [f"MIDRC-RICORD-1A-{_SITES[i]}-{_NUMBERS[i]:06d}" for i in range(n)]


def score_of(pct: float) -> int:
    """The lobe score of an involvement percentage (0; <5; 5–25; 25–50; 50–75; >75), as the pipeline grades."""
    return 0 if pct <= 0 else 1 if pct < 5 else 2 if pct <= 25 else 3 if pct < 50 else 4 if pct <= 75 else 5


def phantom(rng, scores, size: int = 128, slices: int = 20, vessels: int = 4):
    """A chest CT phantom (HU, (Z, H, W) apex first) with lobe labels and opacities planted to ``scores``.

    Body 40 HU in air (−1000), two lung ellipsoids at −850 HU, a liver dome (+50 HU) rising into the right base with
    a scatter halo in the lung, bright vessels (+40 HU) running craniocaudally and in-plane, ground-glass opacity
    (−400 HU) in each lobe sized to its score's involvement (deepest lung first, with noise), then in-plane blur
    (partial volume) and noise (σ 25 HU). Returns (hu, lobes uint8, opacity bool, planted per-lobe percentages)."""
    import numpy as np
    from scipy import ndimage as ndi

    z, y, x = np.mgrid[0:slices, 0:size, 0:size].astype(np.float32)
    k = size / 128.0
    zc, zr = slices * 0.5, slices * 0.47
    body = ((x - 64 * k) / (58 * k)) ** 2 + ((y - 66 * k) / (46 * k)) ** 2 <= 1
    hu = np.where(body, 40.0, -1000.0).astype(np.float32)
    lungs = np.zeros(hu.shape, np.uint8)
    for side, cx in ((1, 90), (2, 38)):  # 1: patient left (image right), 2: patient right (image left)
        u = (z - zc) / zr
        v = (y - 64 * k) / (33 * k)
        w = (x - cx * k) / (21 * k)
        lungs[(u ** 2 + v ** 2 + w ** 2) <= 1] = side
    dome = ((z - slices * 1.2) / (slices * 0.45)) ** 2 + ((y - 66 * k) / (30 * k)) ** 2 \
        + ((x - 38 * k) / (24 * k)) ** 2 <= 1
    lungs[dome] = 0
    u = (z - zc) / zr
    v = (y - 64 * k) / (33 * k)
    lobes = np.zeros(hu.shape, np.uint8)
    left, right = lungs == 1, lungs == 2
    lower_l = u + 0.7 * v > 0.05
    lobes[left & ~lower_l] = 1
    lobes[left & lower_l] = 2
    lower_r = u + 0.7 * v > 0.15
    middle = ~lower_r & (u > -0.15) & (v < 0.15)
    lobes[right & ~lower_r & ~middle] = 3
    lobes[right & middle] = 4
    lobes[right & lower_r] = 5
    hu[lungs > 0] = -850.0
    hu[dome & body] = 50.0
    # scatter halo of the dome into the lung (in-plane distance, per slice)
    for s in range(slices):
        if dome[s].any():
            d = ndi.distance_transform_edt(~dome[s])
            halo = (lungs[s] > 0) & (d < 4 * k)
            hu[s][halo] += (700 * np.exp(-d[halo] / (1.3 * k))).astype(np.float32)
    # vessels: craniocaudal tubes drifting slowly (axial dots) and a few in-plane branches
    vessel = np.zeros(hu.shape, bool)
    inner = ndi.binary_erosion(lungs > 0, iterations=2)
    for side in (1, 2):
        ys, xs = np.nonzero((lungs[slices // 2] == side) & inner[slices // 2])
        for _ in range(vessels):
            j = rng.integers(len(ys))
            cy, cx, r = float(ys[j]), float(xs[j]), rng.uniform(1.6, 2.2) * k
            dy, dx = rng.normal(0, 0.6, 2) * k
            for s in range(slices):
                t = s - slices // 2
                vessel[s] |= ((y[0] - cy - dy * t) ** 2 + (x[0] - cx - dx * t) ** 2) <= r * r
        for _ in range(2):
            s = int(rng.integers(slices // 4, 3 * slices // 4))
            ys2, xs2 = np.nonzero((lungs[s] == side) & inner[s])
            if len(ys2) < 2:
                continue
            a, b = rng.choice(len(ys2), 2, replace=False)
            n = 60
            for t in np.linspace(0, 1, n):
                py, px = ys2[a] + t * (ys2[b] - ys2[a]), xs2[a] + t * (xs2[b] - xs2[a])
                vessel[s] |= ((y[0] - py) ** 2 + (x[0] - px) ** 2) <= (1.4 * k) ** 2
    vessel &= inner
    for s in range(slices):  # no unresolvable slivers where a tube leaves the lung: whole cross-sections only
        lab, n = ndi.label(vessel[s])
        if n:
            sizes = ndi.sum_labels(vessel[s], lab, range(1, n + 1))
            vessel[s] &= np.isin(lab, 1 + np.nonzero(sizes >= 6 * k * k)[0])
    # opacities: per lobe the deepest voxels (3-D distance to the lung's edge, mm) plus smooth noise
    depth = ndi.distance_transform_edt(lungs > 0, sampling=(10.0, 2.8 / k, 2.8 / k))
    noise = ndi.gaussian_filter(rng.normal(0, 1, hu.shape).astype(np.float32), (0.7, 3 * k, 3 * k))
    noise *= 4.0 / (noise.std() + 1e-6)
    opacity = np.zeros(hu.shape, bool)
    planted = []
    for lab, score in zip(range(1, 6), scores, strict=True):
        region = (lobes == lab) & ~vessel
        f = FIXTURE_FRACTION[score]
        if f > 0:
            vals = (depth + noise)[region]
            cut = np.quantile(vals, 1 - f)
            opacity |= region & ((depth + noise) >= cut)
        inside = lobes == lab
        planted.append(100.0 * float((opacity & inside).sum()) / max(1, int(inside.sum())))
    hu[opacity] = -400.0 + rng.normal(0, 30, int(opacity.sum())).astype(np.float32)
    hu[vessel] = 40.0
    hu = ndi.gaussian_filter(hu, (0, 0.6 * k, 0.6 * k))
    hu += rng.normal(0, 25, hu.shape).astype(np.float32)
    return hu, lobes, opacity, planted


def _uid(*parts) -> str:
    from pydicom.uid import generate_uid

    return generate_uid(prefix="1.2.826.0.1.3680043.10.474.", entropy_srcs=[str(p) for p in parts])


def _write_slice(path: Path, hu2d, *, case: str, study: str, series: str, sop: str, number: int, position, spacing,
                 thickness: float, description: str, sex: str, age: int, rle: bool = False, signed: bool = False,
                 orientation=(1, 0, 0, 0, 1, 0), image_type=("ORIGINAL", "PRIMARY", "AXIAL")) -> None:
    import numpy as np
    from pydicom.dataset import FileDataset, FileMetaDataset
    from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, RLELossless

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = CTImageStorage
    meta.MediaStorageSOPInstanceUID = sop
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = FileDataset(str(path), {}, file_meta=meta, preamble=b"\0" * 128)
    ds.SOPClassUID, ds.SOPInstanceUID = CTImageStorage, sop
    ds.PatientID, ds.PatientName, ds.PatientSex, ds.PatientAge = case, case, sex, f"{age:03d}Y"
    ds.StudyInstanceUID, ds.SeriesInstanceUID = study, series
    ds.Modality, ds.SeriesDescription, ds.ImageType = "CT", description, list(image_type)
    ds.StudyDate, ds.SeriesNumber, ds.InstanceNumber = "20020802", 2, number
    ds.ImagePositionPatient = [f"{v:.3f}" for v in position]
    ds.ImageOrientationPatient = [str(v) for v in orientation]
    ds.PixelSpacing = [f"{spacing:.4f}", f"{spacing:.4f}"]
    ds.SliceThickness = f"{thickness:.2f}"
    ds.Rows, ds.Columns = hu2d.shape
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = 16, 16, 15
    if signed:  # int16 pixels, intercept 0, slope 1 (another scanner's convention)
        ds.PixelRepresentation, ds.RescaleIntercept, ds.RescaleSlope = 1, "0", "1"
        px = np.clip(np.round(hu2d), -2048, 3071).astype(np.int16)
    else:  # uint16 pixels = (HU + 1024) / 0.5 with slope 0.5: exercises a non-unit slope
        ds.PixelRepresentation, ds.RescaleIntercept, ds.RescaleSlope = 0, "-1024", "0.5"
        px = np.clip(np.round((hu2d + 1024) / 0.5), 0, 65535).astype(np.uint16)
    ds.PixelData = px.tobytes()
    if rle:
        ds.compress(RLELossless, px)
    ds.save_as(str(path), enforce_file_format=True)


def write_series(folder: Path, hu, *, case: str, study: str, series: str, spacing: float, thickness: float,
                 description: str, sex: str, age: int, seed, rle: bool = False, signed: bool = False,
                 reverse_numbers: bool = False) -> list[str]:
    """One slice file per plane (``1-01.dcm`` …), apex first at the highest z; returns the SOP uids in that order.
    ``rle``: every fourth slice RLE Lossless (pydicom's pure-Python encoder is slow; a series may mix syntaxes)."""
    folder.mkdir(parents=True, exist_ok=True)
    z, h, w = hu.shape
    sops = []
    for s in range(z):
        sop = _uid(seed, case, series, s)
        number = z - s if reverse_numbers else s + 1
        pos = (-w / 2 * spacing, -h / 2 * spacing, (z - 1 - s) * thickness - 300.0)
        _write_slice(folder / f"1-{number:02d}.dcm", hu[s], case=case, study=study, series=series, sop=sop,
                     number=number, position=pos, spacing=spacing, thickness=thickness, description=description,
                     sex=sex, age=age, rle=rle and s % 4 == 0, signed=signed)
        sops.append(sop)
    return sops


def _polygons(mask2d, rng, grow: float) -> list[list[list[float]]]:
    """Rough outlines of a slice's opacity: each connected region's convex hull, grown by ``grow`` pixels."""
    import numpy as np
    from scipy.ndimage import binary_dilation
    from skimage.measure import find_contours, label
    from skimage.morphology import convex_hull_image, disk

    out = []
    lab = label(mask2d)
    for i in range(1, lab.max() + 1):
        region = lab == i
        if region.sum() < 4:
            continue
        hull = binary_dilation(convex_hull_image(region), disk(max(1, int(round(grow)))))
        contours = find_contours(np.pad(hull, 1).astype(float), 0.5)
        if not contours:
            continue
        c = max(contours, key=len)[::2] - 1
        out.append([[round(float(px), 1), round(float(py), 1)] for py, px in c])
    return out


def fixture(out: Path, seed: int = 0, size: int = 128, slices: int = 20) -> Path:
    """A MIDRC-RICORD-1a download in miniature (NBIA layout), with the grades, clinical and annotation files.

    Eight graded cases (``FIXTURE_SCORES``: planted CTSS 0, 3, 6, 9, 12, 15, 18, 21; case 0 is the vessels-only
    control) and one case the sheet excludes ('-', "only scars"), each 20 slices of 128² at 2.8 mm × 10 mm, some as
    uint16 with slope 0.5, one as int16, one with RLE-compressed slices, one numbered bottom-up; one study also holds
    a scout and a coronal reformat the reader must pass over. ``lobes/<PatientID>.nii.gz`` holds the lobe labels
    (1–5). The annotations are rough, as the real ones: grown convex hulls of the opacity, a quarter of slices left
    out."""
    import nibabel as nib
    import numpy as np
    import pandas as pd

    rng = np.random.default_rng(seed)
    root = Path(out) / "ricord-1a"
    dicom = root / DICOM_DIR
    (root / "lobes").mkdir(parents=True, exist_ok=True)
    dicom.mkdir(parents=True, exist_ok=True)
    spacing, thickness = 2.8 * 128 / size, 10.0
    cases = fixture_cases()
    grades, clinical, annotations, studies, meta = [], [], [], [], []
    label_ids = {"Infectious opacity": "L_8q4Vxd", "Typical": "L_gL5Ayd", "Atelectasis": "L_yz9Aj8"}
    for i, case in enumerate(cases):
        excluded = i == len(FIXTURE_SCORES)
        scores = (0, 0, 0, 0, 0) if excluded else FIXTURE_SCORES[i]
        hu, lobes, opacity, planted = phantom(rng, scores, size, slices, vessels=8 if i == 0 else 4)
        study, series = _uid(seed, case, "study"), _uid(seed, case, "series")
        study_dir = dicom / case / (f"0{1 + i % 9}-0{2 + i % 7}-20{10 + i:02d}-NA-CT CHEST WITHOUT CONTRAST-"
                                    f"{4614 + 97 * i:05d}")
        desc = "ROUTINE CHEST NON-CON"
        sops = write_series(study_dir / f"2.000000-{desc}-{97100 + 13 * i:05d}", hu, case=case, study=study,
                            series=series, spacing=spacing, thickness=thickness, description=desc, sex=_SEXES[i],
                            age=_AGES[i], seed=seed, rle=i == 3, signed=i == 5, reverse_numbers=i == 2)
        meta.append({"Series UID": series, "Collection": "MIDRC-RICORD-1A", "Subject ID": case, "Study UID": study,
                     "Series Description": desc, "Modality": "CT", "Number of Images": slices,
                     "File Location": f"./{DICOM_DIR}/{case}/{study_dir.name}/2.000000-{desc}-{97100 + 13 * i:05d}"})
        if i == 1:  # distractors the reader must skip: a scout and a coronal reformat in the same study
            scout = study_dir / "1.000000-SCOUT-11111"
            scout.mkdir(parents=True)
            _write_slice(scout / "1-1.dcm", hu.mean(0), case=case, study=study, series=_uid(seed, case, "scout"),
                         sop=_uid(seed, case, "scout", 0), number=1, position=(0, 0, 0), spacing=spacing,
                         thickness=thickness, description="SCOUT", sex=_SEXES[i], age=_AGES[i],
                         image_type=("ORIGINAL", "PRIMARY", "LOCALIZER"))
            cor = study_dir / "604.000000-COR 3X3-11320"
            cor.mkdir(parents=True)
            for j in range(3):
                _write_slice(cor / f"1-{j + 1:02d}.dcm", hu[:, 40 + 20 * j, :], case=case, study=study,
                             series=_uid(seed, case, "cor"), sop=_uid(seed, case, "cor", j), number=j + 1,
                             position=(0, 40.0 * j, 0), spacing=spacing, thickness=3.0, description="COR 3X3",
                             sex=_SEXES[i], age=_AGES[i], orientation=(1, 0, 0, 0, 0, -1),
                             image_type=("DERIVED", "SECONDARY", "REFORMATTED"))
        vol = Volume(hu, (thickness, spacing, spacing), (-size / 2 * spacing, -size / 2 * spacing, -300.0), sops, [])
        nib.save(nib.Nifti1Image(canonical(lobes).astype(np.uint8), vol.affine()),
                 str(root / "lobes" / f"{case}.nii.gz"))
        site, number = _SITES[i], _NUMBERS[i]
        ctss = int(sum(score_of(p) for p in planted))
        grades.append({"Dataset": "RICORD 1A", "Sequence ID": "IA SITE 2" if site == "SITE2" else int(site),
                       "Series ID": f"{number:06d}", "Score": "-" if excluded else ctss,
                       "Comments": "Only scars in lower lobes (fixture)" if excluded else None})
        clinical.append({"Anon MRN": case, "Anon Age": _AGES[i], "Anon TCIA Study Date": "08/02/2002",
                         "Anon Exam Description": "CT CHEST WITHOUT CONTRAST", "Anon Sex": _SEXES[i],
                         "Anon Study UID": study, "Anon Image Count": slices, "Modality": "CT",
                         "Result": "DETECTED", "Specimen Source": "NP swab"})
        studies.append({"StudyInstanceUID": study, "number": i + 1, "dataset": "MIDRC-RICORD-1a"})
        annotations.append({"id": f"A_{i:03d}st", "StudyInstanceUID": study, "SeriesInstanceUID": None,
                            "SOPInstanceUID": None, "labelId": label_ids["Typical"], "data": None, "scope": "STUDY"})
        for s in range(slices):
            if not opacity[s].any() or rng.random() < 0.25:
                continue
            for j, verts in enumerate(_polygons(opacity[s], rng, grow=2.5 * size / 128)):
                annotations.append({"id": f"A_{i:03d}{s:02d}{j}", "StudyInstanceUID": study,
                                    "SeriesInstanceUID": series, "SOPInstanceUID": sops[s],
                                    "labelId": label_ids["Infectious opacity"], "data": {"vertices": verts},
                                    "scope": "INSTANCE", "height": size, "width": size})
    clinical.append({"Anon MRN": "MIDRC-RICORD-1A-419639-000999", "Anon Age": 50, "Anon Sex": "M",
                     "Anon Study UID": "1.2.3.999", "Modality": "CT"})  # a patient not in this download
    pd.DataFrame(grades).to_excel(root / GRADES, index=False, sheet_name="Sheet1")
    pd.DataFrame(clinical).to_excel(root / CLINICAL, index=False)
    pd.DataFrame(meta).to_csv(root / "metadata.csv", index=False)
    doc = {"id": "P_fixture", "name": "MIDRC-RICORD-1a (medrun fixture)", "createdAt": "2020-12-08T00:00:00Z",
           "datasets": [{"id": "D_fixture", "name": "MIDRC-RICORD-1a", "studies": studies, "annotations": annotations}],
           "labelGroups": [{"id": "G_fixture", "name": "Group 1",
                            "labels": [{"id": v, "name": k, "scope": "STUDY" if k == "Typical" else "INSTANCE",
                                        "type": "global" if k == "Typical" else "local"}
                                       for k, v in label_ids.items()]}]}
    (root / ANNOTATIONS).write_text(json.dumps(doc))
    (root / "README.txt").write_text("synthetic MIDRC-RICORD-1a miniature written by medrun; no patient data\n")
    return root
