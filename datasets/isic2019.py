"""ISIC 2019 (plus other ISIC years) skin-lesion classification, 8 diagnoses, in the challenges' public layout.

ISIC 2019 layout (as unpacked from the challenge archives)::

    <root>/
        ISIC_2019_Training_Input/ISIC_0000000.jpg ...        25,331 dermoscopic JPEGs (varied sizes)
        ISIC_2019_Training_GroundTruth.csv                    image,MEL,NV,BCC,AK,BKL,DF,VASC,SCC,UNK (one-hot floats)
        splits.csv            optional: image,split (train|val|test), e.g. the Cassidy et al. 2022 de-duplication
        concepts.csv          optional: image,streaks,pigment_network,dots_globules,blue_whitish_veil,
                              regression_structures,vascular_structures (1/0, blank = unknown)

More years go beside it as further (images folder, labels CSV) pairs (``dataset.sources``): an ISIC 2020 pair
(``train/`` + ``ISIC_2020_Training_GroundTruth.csv``, free-text ``diagnosis``) is mapped nevus→NV, melanoma→MEL,
seborrheic keratosis / lichenoid keratosis / solar lentigo / lentigo NOS→BKL; other diagnoses are dropped. An image
that occurs in two sources is kept once (the first). Rows labelled UNK are dropped. A one-hot row that does not sum
to one is a DataError naming the CSV, the image and the fix.

The fixture writes the 2019 layout: 8 classes × 12 JPEGs at 64×64 (``ISIC_00000NN.jpg``), all 9 one-hot columns
(UNK = 0), ``splits.csv`` (8/2/2 per class) and ``concepts.csv``. Each class carries planted, known concepts on a
skin-tone background with an elliptical lesion: MEL a dark lesion plus dark corners; NV a reddish hue; BCC a bright
image; DF a central white dot; SCC, BKL, AK and VASC distinct lesion colours. Streaks (radial lines) and dots are
drawn where concepts.csv says so, so the concept classifiers have something to learn.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

from medrun.errors import DataError

from . import DatasetInfo

DATASETS = [
    DatasetInfo(
        "isic2019",
        "ISIC 2019 (+ other years) dermoscopy, 8 diagnoses: NV SCC BKL AK BCC MEL DF VASC",
        "ISIC_2019_Training_Input/ISIC_*.jpg + ISIC_2019_Training_GroundTruth.csv (image,MEL,NV,BCC,AK,BKL,DF,VASC,"
        "SCC,UNK); optional splits.csv, concepts.csv",
        "ISIC challenge 2019 (challenge.isic-archive.com/data, Task 1 training input + ground truth); point at the "
        "folder holding both",
        "medrun.datasets.isic2019:fixture",
        ("classification", "dermoscopy"),
    ),
]

CLASSES = ("NV", "SCC", "BKL", "AK", "BCC", "MEL", "DF", "VASC")  # the paper's order (l. 2795)
CSV_2019 = ("MEL", "NV", "BCC", "AK", "BKL", "DF", "VASC", "SCC", "UNK")
CONCEPTS = ("streaks", "pigment_network", "dots_globules", "blue_whitish_veil", "regression_structures",
            "vascular_structures")
MAP_2020 = {"nevus": "NV", "melanoma": "MEL", "seborrheic keratosis": "BKL", "lichenoid keratosis": "BKL",
            "solar lentigo": "BKL", "lentigo nos": "BKL"}
SOURCE_2019 = ("ISIC_2019_Training_Input", "ISIC_2019_Training_GroundTruth.csv")
_HINT = "point at the folder holding ISIC_2019_Training_Input/ and ISIC_2019_Training_GroundTruth.csv; or try --fixture"
_SUFFIXES = (".jpg", ".jpeg", ".png")


@dataclass(frozen=True)
class Sample:
    id: str  # ISIC_0000000
    path: Path
    label: int  # index into CLASSES


def check_layout(root: Path, sources=(SOURCE_2019,)) -> None:
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"ISIC folder not found: {root}", fix=_HINT)
    for images, labels in sources:
        missing = [n for n in (images, labels) if not (root / n).exists()]
        if missing:
            inner = [p for p in sorted(root.iterdir()) if p.is_dir() and (p / images).is_dir()]
            if inner:
                raise DataError(f"{root} is one level above the ISIC folder", fix=f"use {inner[0]} instead")
            raise DataError(f"{root} lacks {missing[0]} (ISIC layout: {images}/ + {labels})", fix=_HINT)


def _read_csv(path: Path) -> tuple[list[str], list[dict]]:
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            reader = csv.DictReader(f)
            return list(reader.fieldnames or []), list(reader)
    except (OSError, UnicodeDecodeError, csv.Error) as e:
        raise DataError(f"cannot read {path}: {e}", fix="restore the CSV from the challenge archive") from None


def _labels(path: Path) -> dict[str, int]:
    """image id → class index for a 2019-style one-hot CSV or a 2020-style diagnosis CSV (dropped rows left out)."""
    cols, rows = _read_csv(path)
    out: dict[str, int] = {}
    if "diagnosis" in cols:
        key = "image_name" if "image_name" in cols else "image"
        for r in rows:
            cls = MAP_2020.get(str(r.get("diagnosis", "")).strip().lower())
            if cls is not None:
                out[r[key]] = CLASSES.index(cls)
        return out
    need = ["image", *[c for c in CSV_2019 if c != "UNK"]]
    missing = [c for c in need if c not in cols]
    if missing:
        raise DataError(f"{path} lacks column(s) {', '.join(missing)} (has {', '.join(cols[:10])})",
                        fix="use the challenge's ground-truth CSV: image,MEL,NV,BCC,AK,BKL,DF,VASC,SCC[,UNK]")
    onehot = [c for c in CSV_2019 if c in cols]
    for no, r in enumerate(rows, 2):
        try:
            vals = [float(r[c]) for c in onehot]
        except (TypeError, ValueError):
            raise DataError(f"{path}:{no} ({r.get('image')}) has a non-numeric label value",
                            fix="each class column holds 0.0 or 1.0") from None
        if abs(sum(vals) - 1.0) > 1e-6 or any(v not in (0.0, 1.0) for v in vals):
            raise DataError(f"{path}:{no} ({r.get('image')}): the one-hot row sums to {sum(vals):g}, not 1",
                            fix="each row must mark exactly one of " + ",".join(onehot) + " with 1.0; fix or drop it")
        cls = onehot[vals.index(1.0)]
        if cls != "UNK":
            out[r["image"]] = CLASSES.index(cls)
    return out


def read(root: Path, sources=(SOURCE_2019,)) -> list[Sample]:
    """Every labelled image of the given (images folder, labels CSV) pairs under ``root``, de-duplicated by id."""
    root = Path(root)
    check_layout(root, sources)
    samples: dict[str, Sample] = {}
    for images, labels in sources:
        folder = root / images
        files = {p.stem: p for p in folder.iterdir() if p.suffix.lower() in _SUFFIXES and not p.name.startswith(".")}
        for image, label in _labels(root / labels).items():
            if image in samples:
                continue
            if image not in files:
                raise DataError(f"{root / labels} names {image}, which is not in {folder}",
                                fix="restore the image, or remove its row from the CSV")
            samples[image] = Sample(image, files[image], label)
    if not samples:
        raise DataError(f"no labelled images under {root}", fix=_HINT)
    return sorted(samples.values(), key=lambda s: s.id)


def read_splits(path: Path, ids) -> dict[str, str]:
    """``splits.csv`` (image,split) → {image: split}; unknown split names or images outside the data are errors."""
    cols, rows = _read_csv(path)
    if "image" not in cols or "split" not in cols:
        raise DataError(f"{path} needs columns image,split (has {', '.join(cols)})", fix="write image,split rows")
    known = set(ids)
    out = {}
    for no, r in enumerate(rows, 2):
        if r["split"] not in ("train", "val", "test"):
            raise DataError(f"{path}:{no}: split '{r['split']}' is not train, val or test", fix="use those three")
        if r["image"] in known:
            out[r["image"]] = r["split"]
    return out


def read_concepts(path: Path) -> dict[str, list[float | None]]:
    """``concepts.csv`` → {image: [1.0 | 0.0 | None per concept]} (blank = unknown)."""
    cols, rows = _read_csv(path)
    missing = [c for c in ("image", *CONCEPTS) if c not in cols]
    if missing:
        raise DataError(f"{path} lacks column(s) {', '.join(missing)}",
                        fix="concepts.csv holds image," + ",".join(CONCEPTS) + " (1, 0 or blank)")
    out = {}
    for no, r in enumerate(rows, 2):
        vals = []
        for c in CONCEPTS:
            v = (r[c] or "").strip()
            if v not in ("", "0", "1", "0.0", "1.0"):
                raise DataError(f"{path}:{no} ({r['image']}): {c} is '{v}'", fix="use 1, 0 or leave it blank")
            vals.append(None if v == "" else float(v))
        out[r["image"]] = vals
    return out


# -- fixture ----------------------------------------------------------------------------------------------------
LESION_RGB = {"NV": (0.62, 0.30, 0.28), "SCC": (0.75, 0.55, 0.35), "BKL": (0.50, 0.40, 0.20),
              "AK": (0.80, 0.45, 0.50), "BCC": (0.70, 0.55, 0.60), "MEL": (0.12, 0.08, 0.07),
              "DF": (0.55, 0.35, 0.25), "VASC": (0.45, 0.10, 0.35)}


def draw(rng, cls: str, concepts: list[int], size: int = 64):
    """One planted image (H×W×3 float in [0, 1])."""
    import numpy as np

    yy, xx = np.mgrid[0:size, 0:size] / (size - 1) * 2 - 1
    skin = np.array([0.85, 0.65, 0.52]) + rng.normal(0, 0.03, 3)
    img = np.ones((size, size, 3)) * skin + rng.normal(0, 0.02, (size, size, 3))
    cx, cy = rng.uniform(-0.15, 0.15, 2)
    a, b = rng.uniform(0.35, 0.55, 2)
    ang = rng.uniform(0, np.pi)
    u, v = (xx - cx) * np.cos(ang) + (yy - cy) * np.sin(ang), -(xx - cx) * np.sin(ang) + (yy - cy) * np.cos(ang)
    lesion = (u / a) ** 2 + (v / b) ** 2 <= 1
    img[lesion] = np.array(LESION_RGB[cls]) + rng.normal(0, 0.03, 3)
    r = np.sqrt(xx ** 2 + yy ** 2)
    if cls == "MEL":  # dark-corner artefact
        img[r > 1.15] *= 0.15
    if cls == "NV":  # reddish hue over the whole image
        img[..., 0] = img[..., 0] * 0.7 + 0.3
        img[..., 2] *= 0.8
    if cls == "BCC":  # bright image
        img = img * 0.5 + 0.5
    if cls == "DF":  # central white patch
        img[(xx - cx) ** 2 + (yy - cy) ** 2 < 0.02] = 0.97
    theta = np.arctan2(yy - cy, xx - cx)
    if concepts[0]:  # streaks: radial lines at the lesion's rim
        ring = lesion & ((u / a) ** 2 + (v / b) ** 2 > 0.45)
        img[ring & (np.cos(8 * theta) > 0.8)] = (0.05, 0.03, 0.03)
    if concepts[2]:  # dots and globules
        for _ in range(8):
            px, py = rng.integers(size // 4, 3 * size // 4, 2)
            img[max(0, py - 1):py + 2, max(0, px - 1):px + 2] = (0.1, 0.05, 0.05)
    if concepts[3]:  # blue-whitish veil
        img[lesion & (r < 0.3)] = img[lesion & (r < 0.3)] * 0.4 + np.array([0.35, 0.45, 0.65])
    return np.clip(img, 0, 1)


def fixture(out_dir: Path, seed: int = 0, per_class: int = 12, size: int = 64) -> Path:
    """Write the miniature 2019 layout (+ splits.csv, concepts.csv); returns the root."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(seed)
    root = Path(out_dir)
    images = root / SOURCE_2019[0]
    images.mkdir(parents=True, exist_ok=True)
    gt, splits, concepts = [",".join(("image", *CSV_2019))], ["image,split"], [",".join(("image", *CONCEPTS))]
    order = rng.permutation(len(CLASSES) * per_class)
    for n, k in enumerate(order):
        cls, j = CLASSES[k // per_class], k % per_class
        name = f"ISIC_{n:07d}"
        p_streaks = 0.7 if cls == "MEL" else 0.15
        streaks, dots = int(rng.random() < p_streaks), int(rng.random() < 0.4)
        veil = int(cls in ("MEL", "BCC") and rng.random() < 0.5)
        con = [streaks, 0, dots, veil, 0, int(cls == "VASC")]
        Image.fromarray((draw(rng, cls, con, size) * 255).round().astype(np.uint8)).save(images / f"{name}.jpg",
                                                                                         quality=95)
        gt.append(",".join([name, *("1.0" if c == cls else "0.0" for c in CSV_2019)]))
        splits.append(f"{name},{'train' if j < per_class - 4 else 'val' if j < per_class - 2 else 'test'}")
        known = rng.random() > 0.3  # about a third of the images have no concept annotation
        concepts.append(",".join([name, *(str(c) if known else "" for c in con)]))
    (root / SOURCE_2019[1]).write_text("\n".join(gt) + "\n")
    (root / "splits.csv").write_text("\n".join(splits) + "\n")
    (root / "concepts.csv").write_text("\n".join(concepts) + "\n")
    return root
