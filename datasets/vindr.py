"""VinDr-CXR (Nguyen et al. 2022; PhysioNet vindr-cxr 1.0.0, credentialed; the Kaggle VinBigData competition's
copy): 18,000 posteroanterior chest X-rays as DICOM, labelled by radiologists. The idqce pipeline's NIH→VinDr
downstream set (Table 2), read with its 14 local pathologies (the VinBigData classes).

Layout (PhysioNet, the card's)::

    <root>/
        train/<image_id>.dicom                15,000 images, each read by 3 of 17 radiologists
        test/<image_id>.dicom                 3,000 images, a consensus of 5 radiologists
        annotations/image_labels_train.csv    image_id, rad_ID, then one 0/1 column per label (22 local findings
                                              and 6 global diagnoses, "No finding" last); 3 rows per image
        annotations/image_labels_test.csv     image_id, then the same label columns; one row per image
        annotations/annotations_{train,test}.csv    boxes (not read)

The Kaggle copy (``vinbigdata-chest-xray-abnormalities-detection``) has only ``train/<image_id>.dicom`` with
``train.csv`` (image_id, class_name, class_id, rad_id, x_min, y_min, x_max, y_max: one row per box per
radiologist, "No finding" rows without a box) and unlabelled ``test/``; it is read too: its labelled train images
are split into a seeded 80 % (training) and 20 % (test), the test list having no labels.

Image-level labels: a label is positive when any radiologist marked it (the card's choice). Split: official
train → training (a seeded 10 % of images held out by the pipeline to pick the probe's epoch), official test →
test. Pixels (:func:`load_gray`): pydicom's pixel array, rescale slope/intercept applied, MONOCHROME1 inverted
(a quirk of part of VinDr), then min–max to 8 bits per image and a bilinear resize.

Checks, each a DataError naming the file and the fix: a missing folder or CSV, a label column outside VinDr's
set, a value other than 0/1 or a Kaggle class_name outside the 14 + "No finding" (line given), a CSV row naming an
image that is not there, a DICOM that pydicom cannot decode.

The fixture (:func:`fixture`) writes the PhysioNet layout: 160 train and 60 test DICOMs (96×96, 16-bit
MONOCHROME2, one in ten MONOCHROME1 stored inverted, explicit VR little endian), train labels by three made-up
radiologists who disagree now and then, the NIH fixture's drawn patterns (Cardiomegaly, Pleural effusion → NIH
Effusion, Nodule/Mass → Nodule, Pneumothorax).
"""

from __future__ import annotations

import csv
from pathlib import Path

from medrun.errors import DataError

from . import DatasetInfo
from .nih import Entry

DATASETS = [
    DatasetInfo("vindr", "VinDr-CXR (18,000 chest X-rays as DICOM, 14 pathologies, multi-label)",
                "train/*.dicom + test/*.dicom + annotations/image_labels_{train,test}.csv (PhysioNet; Kaggle "
                "VinBigData's train/*.dicom + train.csv is read too)",
                "PhysioNet vindr-cxr 1.0.0 (credentialed access), or Kaggle vinbigdata-chest-xray-abnormalities-"
                "detection; point at the folder holding train/", "medrun.datasets.vindr:fixture",
                ("multilabel", "xray", "dicom")),
]

LABELS = ("Aortic enlargement", "Atelectasis", "Calcification", "Cardiomegaly", "Consolidation", "ILD",
          "Infiltration", "Lung Opacity", "Nodule/Mass", "Other lesion", "Pleural effusion", "Pleural thickening",
          "Pneumothorax", "Pulmonary fibrosis")
ALL_COLUMNS = ("Aortic enlargement", "Atelectasis", "Calcification", "Cardiomegaly", "Clavicle fracture",
               "Consolidation", "Edema", "Emphysema", "Enlarged PA", "ILD", "Infiltration", "Lung Opacity",
               "Lung cavity", "Lung cyst", "Mediastinal shift", "Nodule/Mass", "Pleural effusion",
               "Pleural thickening", "Pneumothorax", "Pulmonary fibrosis", "Rib fracture", "Other lesion", "COPD",
               "Lung tumor", "Pneumonia", "Tuberculosis", "Other diseases", "Other disease", "No finding")
NO_FINDING = "No finding"
PATTERNS = {"Cardiomegaly": "Cardiomegaly", "Pleural effusion": "Effusion", "Nodule/Mass": "Nodule",
            "Pneumothorax": "Pneumothorax"}
_HINT = ("point at the VinDr-CXR folder holding train/, test/ and annotations/ (PhysioNet), or Kaggle VinBigData's "
         "train/ + train.csv; or try --fixture")


def _rows(path: Path) -> tuple[list[str], list[tuple[int, dict]]]:
    if not path.is_file():
        raise DataError(f"label CSV not found: {path}", fix=_HINT)
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            reader = csv.DictReader(f)
            header = [(h or "").strip() for h in (reader.fieldnames or [])]
            reader.fieldnames = header
            return header, [(line, {k: (v or "").strip() for k, v in r.items() if isinstance(k, str)})
                            for line, r in enumerate(reader, 2)]
    except (UnicodeDecodeError, csv.Error) as e:
        raise DataError(f"{path}: not a readable CSV ({e})", fix="use the VinDr-CXR file as distributed") from None


def _images(folder: Path) -> dict[str, Path]:
    if not folder.is_dir():
        raise DataError(f"image folder not found: {folder}", fix=_HINT)
    return {p.stem: p for p in folder.iterdir() if p.suffix.lower() in (".dicom", ".dcm")}


def _entries(path: Path, header, rows, files: dict[str, Path], folder: Path) -> list[Entry]:
    if "image_id" not in header:
        raise DataError(f"{path} lacks the image_id column (has {', '.join(header[:4])})",
                        fix="use VinDr-CXR's image_labels_*.csv as distributed")
    cols = [h for h in header if h and h not in ("image_id", "rad_ID", "rad_id")]
    unknown = [c for c in cols if c not in ALL_COLUMNS]
    if unknown:
        raise DataError(f"{path}: column(s) {', '.join(unknown)} not among VinDr-CXR's labels",
                        fix=f"the 14 pathologies read are {', '.join(LABELS)}")
    labels: dict[str, set[str]] = {}
    for line, row in rows:
        image = row.get("image_id", "")
        if not image:
            raise DataError(f"{path}, line {line}: empty image_id", fix="remove the line or name its image")
        pos = labels.setdefault(image, set())
        for c in cols:
            v = row.get(c, "")
            if v not in ("0", "1", "0.0", "1.0"):
                raise DataError(f"{path}, line {line} ({image}): {c} is '{v}', not 0 or 1",
                                fix="label columns hold 0 or 1 (as distributed)")
            if float(v) and c in LABELS:
                pos.add(c)  # any radiologist's finding
    return _check_files(path, labels, files, folder)


def _check_files(path, labels, files, folder) -> list[Entry]:
    missing = [i for i in labels if i not in files]
    if missing:
        raise DataError(f"{path} names {len(missing)} image(s) not in {folder} (first: {missing[0]}.dicom)",
                        fix="restore the missing DICOMs or remove their rows")
    return [Entry(files[i].name, files[i], tuple(lab for lab in LABELS if lab in pos), i)
            for i, pos in sorted(labels.items())]


def _kaggle(root: Path, seed: int) -> dict[str, list[Entry]]:
    path = root / "train.csv"
    header, rows = _rows(path)
    lacking = [c for c in ("image_id", "class_name") if c not in header]
    if lacking:
        raise DataError(f"{path} lacks column(s) {', '.join(lacking)}", fix="use VinBigData's train.csv")
    files = _images(root / "train")
    labels: dict[str, set[str]] = {}
    for line, row in rows:
        image, name = row.get("image_id", ""), row.get("class_name", "")
        if name not in LABELS and name != NO_FINDING:
            raise DataError(f"{path}, line {line} ({image}): class_name '{name}' is not one of the 14 pathologies "
                            f"or '{NO_FINDING}'", fix=f"use {', '.join(LABELS)} or {NO_FINDING}")
        pos = labels.setdefault(image, set())
        if name in LABELS:
            pos.add(name)
    entries = _check_files(path, labels, files, root / "train")
    import numpy as np

    held = set(np.random.default_rng(seed).permutation(len(entries))[:round(0.2 * len(entries))].tolist())
    return {"train_val": [e for i, e in enumerate(entries) if i not in held],
            "test": [e for i, e in enumerate(entries) if i in held]}


def read_split(root: Path, seed: int = 0) -> dict[str, list[Entry]]:
    """``{"train_val": [...], "test": [...]}``: the official train and test images with image-level labels."""
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"VinDr-CXR folder not found at {root}", fix=_HINT)
    ann = root / "annotations"
    if not ann.is_dir() and (root / "train.csv").is_file():
        return _kaggle(root, seed)
    out = {}
    for split, key in (("train", "train_val"), ("test", "test")):
        path = ann / f"image_labels_{split}.csv"
        header, rows = _rows(path)
        out[key] = _entries(path, header, rows, _images(root / split), root / split)
        if not out[key]:
            raise DataError(f"{path} lists no images", fix=_HINT)
    return out


# -- pixels --------------------------------------------------------------------------------------------------------
def load_gray(path: Path, size: int):
    """(size, size) uint8 of a DICOM: rescale, MONOCHROME1 inverted, min–max to 8 bits, bilinear resize."""
    import numpy as np
    import pydicom
    from PIL import Image

    try:
        ds = pydicom.dcmread(str(path))
        a = ds.pixel_array.astype(np.float64)
    except Exception as e:  # noqa: BLE001 (pydicom raises many types for bad or undecodable files)
        why = str(e).splitlines()[0][:160] if str(e) else ""
        fix = "replace the file, or install a decoder for its transfer syntax (pylibjpeg, gdcm)"
        raise DataError(f"cannot read DICOM {path}: {type(e).__name__}: {why}", fix=fix) from None
    if a.ndim == 3:
        a = a[..., :3].mean(-1) if a.shape[-1] in (3, 4) else a[0]
    a = a * float(getattr(ds, "RescaleSlope", 1) or 1) + float(getattr(ds, "RescaleIntercept", 0) or 0)
    if str(getattr(ds, "PhotometricInterpretation", "")).upper() == "MONOCHROME1":
        a = a.max() - a
    lo, hi = float(a.min()), float(a.max())
    a = (a - lo) * (255.0 / (hi - lo)) if hi > lo else np.zeros_like(a)
    arr = np.rint(a).astype(np.uint8)
    if arr.shape != (size, size):
        arr = np.asarray(Image.fromarray(arr).resize((size, size), Image.BILINEAR))
    return arr


def image_array(paths, size: int, cache: Path | None = None, log=None):
    """(N, size, size) uint8, decoded once into ``cache`` (a ``.npy``) and memory-mapped afterwards."""
    import os

    import numpy as np

    paths = list(paths)
    if cache is not None and Path(cache).is_file():
        try:
            arr = np.load(cache, mmap_mode="r", allow_pickle=False)
            if arr.shape == (len(paths), size, size) and arr.dtype == np.uint8:
                return arr
        except (ValueError, OSError):
            pass
    if log and len(paths) > 2000:
        log(f"decoding {len(paths)} DICOMs at {size}×{size} once")
    arr = np.empty((len(paths), size, size), np.uint8)
    for i, p in enumerate(paths):
        arr[i] = load_gray(p, size)
    if cache is not None:
        cache = Path(cache)
        cache.parent.mkdir(parents=True, exist_ok=True)
        tmp = cache.with_name(f".{cache.name}.{os.getpid()}.tmp")
        try:
            with open(tmp, "wb") as f:
                np.save(f, arr)
            os.replace(tmp, cache)
        except OSError:
            tmp.unlink(missing_ok=True)  # the cache only saves time
    return arr


# -- fixture -------------------------------------------------------------------------------------------------------
def write_dicom(path: Path, img, image_id: str, monochrome1: bool = False) -> None:
    """A 16-bit (12 bits stored) uncompressed DICOM of a uint8 image."""
    import numpy as np
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, SecondaryCaptureImageStorage, generate_uid

    a = img.astype(np.uint16) * 16
    if monochrome1:
        a = 4095 - a
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid(entropy_srcs=[image_id])
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID
    ds.Modality, ds.PatientID = "DX", image_id[:8]
    ds.Rows, ds.Columns = a.shape
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME1" if monochrome1 else "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    ds.PixelData = a.tobytes()
    ds.save_as(str(path), enforce_file_format=True)


def fixture(out_dir: Path, seed: int = 0, n_train: int = 160, n_test: int = 60, size: int = 96) -> Path:
    """The PhysioNet layout in miniature (see the module docstring); returns the root."""
    import numpy as np

    from .nih import draw_cxr

    rng = np.random.default_rng(seed)
    root = Path(out_dir)
    (root / "annotations").mkdir(parents=True, exist_ok=True)
    header = ",".join(c for c in ALL_COLUMNS if c != "Other diseases")
    for split, n in (("train", n_train), ("test", n_test)):
        (root / split).mkdir(parents=True, exist_ok=True)
        lines = [("image_id,rad_ID," if split == "train" else "image_id,") + header]
        for _ in range(n):
            image_id = "".join(f"{int(x):08x}" for x in rng.integers(0, 2 ** 32, 4))
            pos = set() if rng.random() < 0.15 else set(
                rng.choice(list(PATTERNS), size=int(rng.choice([1, 2], p=[.6, .4])), replace=False).tolist())
            write_dicom(root / split / f"{image_id}.dicom", draw_cxr(tuple(PATTERNS[p] for p in sorted(pos)), rng,
                                                                     size), image_id, rng.random() < 0.1)
            rads = [f"R{int(r)}" for r in rng.choice(np.arange(1, 18), 3, replace=False)] if split == "train" \
                else [None]
            for k, rad in enumerate(rads):
                seen = set(pos) if k == 0 or rng.random() < 0.8 else set()  # one radiologist may miss them
                vals = ["1" if (c in seen or (c == NO_FINDING and not seen)) else "0" for c in header.split(",")]
                lines.append(",".join(([image_id, rad] if rad else [image_id]) + vals))
        (root / "annotations" / f"image_labels_{split}.csv").write_text("\n".join(lines) + "\n")
    return root
