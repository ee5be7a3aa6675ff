"""MIMIC-CXR-JPG v2.0.0 (Johnson et al. 2019; PhysioNet, credentialed access): 377,110 chest X-ray JPEGs of 65,379
patients, 227,827 studies labelled by the CheXpert labeler (14 labels). The idqce pipeline's Table 1 data set.

Layout (PhysioNet ``mimic-cxr-jpg/2.0.0``, as downloaded)::

    <root>/
        mimic-cxr-2.0.0-metadata.csv.gz    dicom_id, subject_id, study_id, PerformedProcedureStepDescription,
                                           ViewPosition (PA, AP, LATERAL, LL, … or empty), Rows, Columns, …
        mimic-cxr-2.0.0-split.csv.gz       dicom_id, study_id, subject_id, split (train / validate / test)
        mimic-cxr-2.0.0-chexpert.csv.gz    subject_id, study_id, then the 14 labels, one row per study; each 1.0
                                           (positive), 0.0 (negative), -1.0 (uncertain) or empty (not mentioned)
        files/p10/p10000032/s50414267/02aa804e-bde0afdd-112c0b34-7bc16630-4e384014.jpg   (p1X = the first two
                                           digits of the subject id; one folder per subject and per study)

Read: the frontal images (ViewPosition PA or AP; the card's 201,083 + 42,164 images are MIMIC's frontal ones),
each with its study's CheXpert labels: 1.0 positive, everything else 0 (uncertain −1 → 0, U-zeros, the card's
choice; empty → 0), a study without a CheXpert row all 0. Split: the official one (train → pre-training and the
probe's training set, validate → the probe's epoch pick, test → scoring); the card's 42,164-image downstream
sample is not re-created.

Checks, each a DataError naming the file and the fix: a missing CSV (or an uncompressed copy instead: both
``.csv.gz`` and ``.csv`` are read), missing columns, a label value outside 1.0 / 0.0 / −1.0 / empty or a split
outside train / validate / test (line given), a frontal image named by the metadata that is not under ``files/``.

The fixture (:func:`fixture`) writes the same layout, gzip CSVs and all, with 110 patients of 1–2 studies each (a
frontal image per study, some with a lateral beside it, about 340 128×128 grey JPEGs), labels driving the NIH
fixture's drawn patterns (Cardiomegaly, Pleural Effusion → NIH Effusion, Lung Lesion → Nodule, Pneumothorax),
uncertain (−1.0) and empty values among them, and "No Finding" 1.0 when a study has no positive finding.
"""

from __future__ import annotations

import csv
import gzip
import io
from pathlib import Path

from medrun.errors import DataError

from . import DatasetInfo
from .nih import Entry

DATASETS = [
    DatasetInfo("mimic", "MIMIC-CXR-JPG v2.0.0 (377,110 chest X-rays, 14 CheXpert labels, multi-label)",
                "files/p1X/pXXXXXXXX/sXXXXXXXX/<dicom_id>.jpg + mimic-cxr-2.0.0-{chexpert,split,metadata}.csv.gz",
                "PhysioNet mimic-cxr-jpg 2.0.0 (credentialed access); point at the folder holding files/ and the "
                "three .csv.gz files", "medrun.datasets.mimic:fixture", ("multilabel", "xray")),
]

LABELS = ("Atelectasis", "Cardiomegaly", "Consolidation", "Edema", "Enlarged Cardiomediastinum", "Fracture",
          "Lung Lesion", "Lung Opacity", "No Finding", "Pleural Effusion", "Pleural Other", "Pneumonia",
          "Pneumothorax", "Support Devices")
CSVS = {"metadata": "mimic-cxr-2.0.0-metadata.csv.gz", "split": "mimic-cxr-2.0.0-split.csv.gz",
        "chexpert": "mimic-cxr-2.0.0-chexpert.csv.gz"}
FRONTAL = ("PA", "AP")
SPLITS = {"train": "train_val", "validate": "val", "test": "test"}
VALUES = {"1.0": 1, "1": 1, "0.0": 0, "0": 0, "-1.0": 0, "-1": 0, "": 0}  # U-zeros
# CheXpert label → the NIH fixture pattern drawn for it
PATTERNS = {"Cardiomegaly": "Cardiomegaly", "Pleural Effusion": "Effusion", "Lung Lesion": "Nodule",
            "Pneumothorax": "Pneumothorax"}
_HINT = "point at the MIMIC-CXR-JPG 2.0.0 folder holding files/ and mimic-cxr-2.0.0-*.csv.gz, or try --fixture"


def _read(root: Path, key: str, need: tuple[str, ...]) -> tuple[Path, list[tuple[int, dict]]]:
    path = root / CSVS[key]
    if not path.is_file():
        plain = path.with_suffix("")  # an unpacked .csv
        if not plain.is_file():
            raise DataError(f"{CSVS[key]} not found in {root}", fix=_HINT)
        path = plain
    try:
        raw = gzip.open(path, "rt", encoding="utf-8-sig", newline="") if path.suffix == ".gz" else \
            open(path, encoding="utf-8-sig", newline="")
        with raw as f:
            reader = csv.DictReader(f)
            header = [(h or "").strip() for h in (reader.fieldnames or [])]
            lacking = [c for c in need if c not in header]
            if lacking:
                raise DataError(f"{path} lacks column(s) {', '.join(lacking)} (has {', '.join(header[:6])})",
                                fix="use the MIMIC-CXR-JPG 2.0.0 file as distributed")
            reader.fieldnames = header
            rows = [(line, {k: (v or "").strip() for k, v in r.items() if isinstance(k, str)})
                    for line, r in enumerate(reader, 2)]
    except (OSError, EOFError, UnicodeDecodeError, csv.Error) as e:
        if isinstance(e, DataError):
            raise
        raise DataError(f"{path}: not a readable (gzip) CSV ({type(e).__name__}: {e})",
                        fix="download the file again from PhysioNet") from None
    return path, rows


def image_path(root: Path, subject: str, study: str, dicom: str) -> Path:
    return Path(root) / "files" / f"p{subject[:2]}" / f"p{subject}" / f"s{study}" / f"{dicom}.jpg"


def read_split(root: Path) -> dict[str, list[Entry]]:
    """``{"train_val": [...], "val": [...], "test": [...]}``: the frontal images of the official split."""
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"MIMIC-CXR-JPG folder not found at {root}", fix=_HINT)
    if not (root / "files").is_dir():
        raise DataError(f"{root} has no files/ folder (MIMIC-CXR-JPG's images)", fix=_HINT)
    cpath, crows = _read(root, "chexpert", ("subject_id", "study_id", *LABELS))
    labels: dict[str, tuple[str, ...]] = {}
    for line, row in crows:
        pos = []
        for lab in LABELS:
            v = row.get(lab, "")
            if v not in VALUES:
                raise DataError(f"{cpath}, line {line} (study {row.get('study_id')}): {lab} is '{v}', not 1.0, 0.0, "
                                f"-1.0 or empty", fix="use the CheXpert labels file as distributed")
            if VALUES[v]:
                pos.append(lab)
        labels[row["study_id"]] = tuple(pos)
    spath, srows = _read(root, "split", ("dicom_id", "study_id", "subject_id", "split"))
    split: dict[str, str] = {}
    for line, row in srows:
        if row["split"] not in SPLITS:
            raise DataError(f"{spath}, line {line} ({row['dicom_id']}): split '{row['split']}' is not train, "
                            f"validate or test", fix="use the official split file as distributed")
        split[row["dicom_id"]] = SPLITS[row["split"]]
    mpath, mrows = _read(root, "metadata", ("dicom_id", "subject_id", "study_id", "ViewPosition"))
    out: dict[str, list[Entry]] = {"train_val": [], "val": [], "test": []}
    missing = []
    for line, row in mrows:
        if row["ViewPosition"] not in FRONTAL:
            continue
        dicom, subject, study = row["dicom_id"], row["subject_id"], row["study_id"]
        if dicom not in split:
            raise DataError(f"{mpath}, line {line}: {dicom} is in no split of {spath.name}",
                            fix="use metadata and split files of the same release")
        path = image_path(root, subject, study, dicom)
        if not path.is_file():
            missing.append(str(path.relative_to(root)))
            continue
        out[split[dicom]].append(Entry(path.name, path, labels.get(study, ()), subject, None, row["ViewPosition"]))
    if missing:
        raise DataError(f"{mpath} names {len(missing)} frontal image(s) not under {root / 'files'} (first: "
                        f"{missing[0]})", fix="download the missing JPEGs (files/p10 … p19) from PhysioNet")
    for key, entries in out.items():
        if not entries:
            raise DataError(f"{mpath}: no frontal (PA/AP) image in the official {key.replace('_val', '')} split",
                            fix=_HINT)
    return out


# -- fixture -------------------------------------------------------------------------------------------------------
META_HEADER = ("dicom_id,subject_id,study_id,PerformedProcedureStepDescription,ViewPosition,Rows,Columns,StudyDate,"
               "StudyTime,ProcedureCodeSequence_CodeMeaning,ViewCodeSequence_CodeMeaning,"
               "PatientOrientationCodeSequence_CodeMeaning")


def _gz(path: Path, lines: list[str]) -> None:
    buf = io.BytesIO()
    with gzip.GzipFile(fileobj=buf, mode="wb", mtime=0) as g:
        g.write(("\n".join(lines) + "\n").encode())
    path.write_bytes(buf.getvalue())


def fixture(out_dir: Path, seed: int = 0, n_patients: int = 180, size: int = 128) -> Path:
    """The PhysioNet layout in miniature (see the module docstring); returns the root."""
    import numpy as np
    from PIL import Image

    from .nih import draw_cxr

    rng = np.random.default_rng(seed)
    root = Path(out_dir)
    root.mkdir(parents=True, exist_ok=True)
    meta, splits, chex = [META_HEADER], ["dicom_id,study_id,subject_id,split"], \
        [",".join(("subject_id", "study_id", *LABELS))]
    study = 50000000 + int(rng.integers(1000))
    for i in range(n_patients):
        subject = str(10000000 + i * 50000 + int(rng.integers(1000)))  # p10 … p19
        split = "test" if i % 5 == 0 else "validate" if i % 5 == 1 and i % 2 else "train"
        for _ in range(int(rng.integers(1, 3))):
            study += int(rng.integers(1, 5000))
            u = rng.random()
            pos = set() if u < 0.12 else set(rng.choice(list(PATTERNS), size=int(rng.choice([1, 2], p=[.6, .4])),
                                                        replace=False).tolist())
            values = []
            for lab in LABELS:
                if lab in pos:
                    values.append("1.0")
                elif lab == "No Finding":
                    values.append("" if pos else "1.0")
                else:
                    values.append(str(rng.choice(["", "", "", "0.0", "-1.0"])))
            chex.append(",".join((subject, str(study), *values)))
            views = ["PA" if rng.random() < 0.6 else "AP"] + (["LATERAL"] if rng.random() < 0.3 else [])
            for view in views:
                dicom = "-".join(f"{int(x):08x}" for x in rng.integers(0, 2 ** 32, 5))
                path = image_path(root, subject, str(study), dicom)
                path.parent.mkdir(parents=True, exist_ok=True)
                pats = tuple(PATTERNS[p] for p in sorted(pos))
                img = draw_cxr(pats, rng, size) if view != "LATERAL" else draw_cxr((), rng, size)[:, ::-1].T.copy()
                Image.fromarray(img).save(path, quality=85)
                meaning = {"PA": "postero-anterior", "AP": "antero-posterior"}.get(view, "lateral")
                meta.append(f"{dicom},{subject},{study},CHEST ({view}),{view},{size},{size},21800506,213014.531,"
                            f"CHEST ({view}),{meaning},Erect")
                splits.append(f"{dicom},{study},{subject},{split}")
    _gz(root / CSVS["metadata"], meta)
    _gz(root / CSVS["split"], splits)
    _gz(root / CSVS["chexpert"], chex)
    return root
