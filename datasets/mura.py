"""MURA v1.1 (Stanford ML Group), musculoskeletal radiographs labelled normal / abnormal per study.

Layout (as unpacked from ``MURA-v1.1.zip``)::

    MURA-v1.1/
        train_image_paths.csv          MURA-v1.1/train/XR_ELBOW/patient00011/study1_negative/image1.png  (no header)
        train_labeled_studies.csv      MURA-v1.1/train/XR_ELBOW/patient00011/study1_negative/,0          (no header)
        valid_image_paths.csv, valid_labeled_studies.csv
        train/XR_ELBOW/patient00011/study1_negative/image1.png ...
        valid/XR_ELBOW/patient11186/study1_positive/image1.png ...
        (seven study types: XR_ELBOW, XR_FINGER, XR_FOREARM, XR_HAND, XR_HUMERUS, XR_SHOULDER, XR_WRIST)

Images are grayscale PNGs of varying size (a few are stored as RGB). The label of an image is its study
folder's suffix: ``positive`` = abnormal = 1, ``negative`` = normal = 0. The official test set is hidden, so
``valid`` is the evaluation split. The CSVs are optional: the reader walks the folders.

The fixture writes the same layout (both CSVs per split, ``XR_ELBOW`` only) with 64×64 grayscale radiograph-like
images: smooth noise, a bright bar ("bone"), and on abnormal images a small bright blob ("lesion") at a random
place. One addition that the public set does not have: ``fixture_lesions.csv`` (path, cy, cx, r in pixels) so a
run can check that saliency maps point at the blob; readers ignore it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from medrun.errors import DataError

from . import DatasetInfo

DATASETS = [
    DatasetInfo(
        "mura",
        "MURA v1.1 musculoskeletal radiographs, normal vs abnormal (Stanford)",
        "MURA-v1.1/{train,valid}/XR_<TYPE>/patientNNNNN/studyK_{positive,negative}/imageM.png (+ *_image_paths.csv)",
        "Stanford ML Group (stanfordmlgroup.github.io/competitions/mura, registration required); point at the "
        "'MURA-v1.1' folder",
        "medrun.datasets.mura:fixture",
        ("classification", "xray"),
    ),
]

CLASSES = ["normal", "abnormal"]
STUDY_TYPES = ("XR_ELBOW", "XR_FINGER", "XR_FOREARM", "XR_HAND", "XR_HUMERUS", "XR_SHOULDER", "XR_WRIST")
LESIONS_CSV = "fixture_lesions.csv"
_HINT = "point at the MURA-v1.1 folder (it holds train/ and valid/), or try --fixture"
_STUDY = re.compile(r"^study\d+_(positive|negative)$")


@dataclass(frozen=True)
class Sample:
    path: Path
    label: int  # 1 abnormal (study folder *_positive), 0 normal
    patient: str
    study: str


def check_layout(root: Path, study_type: str = "XR_ELBOW") -> None:
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"MURA folder not found at {root}", fix=_HINT)
    missing = [s for s in ("train", "valid") if not (root / s).is_dir()]
    if missing:
        inner = root / "MURA-v1.1"
        raise DataError(f"{root} does not have the MURA layout: missing {', '.join(missing)}/",
                        fix=f"use {inner} instead" if inner.is_dir() else _HINT)
    for split in ("train", "valid"):
        if not (root / split / study_type).is_dir():
            found = sorted(p.name for p in (root / split).iterdir() if p.is_dir())
            raise DataError(f"{root / split} has no {study_type} folder (found: {', '.join(found) or 'nothing'})",
                            fix=f"set dataset.study_type to one of {', '.join(found) or ', '.join(STUDY_TYPES)}")


def read(root: Path, split: str, study_type: str = "XR_ELBOW") -> list[Sample]:
    """Every image of ``split`` (train | valid) and ``study_type``, labelled from its study folder's name."""
    root = Path(root)
    check_layout(root, study_type)
    folder = root / split / study_type
    samples = []
    for patient in sorted(p for p in folder.iterdir() if p.is_dir()):
        for study in sorted(p for p in patient.iterdir() if p.is_dir()):
            m = _STUDY.match(study.name)
            if not m:
                raise DataError(f"study folder {study} is not named studyK_positive or studyK_negative",
                                fix="restore the MURA folder names (the label is read from them)")
            for img in sorted(study.iterdir()):
                if img.suffix.lower() == ".png" and not img.name.startswith("."):
                    samples.append(Sample(img, int(m.group(1) == "positive"), patient.name, study.name))
    if not samples:
        raise DataError(f"no PNG images under {folder}", fix=_HINT)
    return samples


def read_lesions(root: Path) -> dict[str, tuple[float, float, float]]:
    """The fixture's blob positions {path relative to root: (cy, cx, r)} in original pixels; {} for real data."""
    import csv

    path = Path(root) / LESIONS_CSV
    if not path.is_file():
        return {}
    with open(path) as f:
        return {r["path"]: (float(r["cy"]), float(r["cx"]), float(r["r"])) for r in csv.DictReader(f)}


def synthetic_radiograph(rng, size: int = 64, abnormal: bool = False):
    """uint8 size×size: smooth noise, a bright oblique bar, and (abnormal) a bright blob; returns (image, blob)."""
    import numpy as np
    from scipy.ndimage import gaussian_filter

    img = 50 + 25 * gaussian_filter(rng.normal(0, 1, (size, size)), size / 12) * (size / 12)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float64)
    angle = rng.uniform(-0.5, 0.5)
    cx0 = size / 2 + rng.normal(0, size * 0.05)
    dist = np.abs((xx - cx0) * np.cos(angle) - (yy - size / 2) * np.sin(angle))
    img += 70 * (dist < size * 0.09)
    blob = None
    if abnormal:
        r = size * rng.uniform(0.08, 0.11)
        cy, cx = rng.uniform(size * 0.2, size * 0.8, 2)
        img += 150 * np.exp(-(((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * (r * 0.8) ** 2)))
        blob = (float(cy), float(cx), float(r))
    img += rng.normal(0, 4, (size, size))
    return np.clip(img, 0, 255).astype(np.uint8), blob


def fixture(out: Path, seed: int = 0, n_train: int = 40, n_valid: int = 16, size: int = 64) -> Path:
    """A miniature MURA-v1.1 (XR_ELBOW only): one study per patient, 1–2 images per study, half abnormal."""
    import csv

    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(seed)
    root = Path(out) / "MURA-v1.1"
    lesions = []
    patient = 0
    for split, n in (("train", n_train), ("valid", n_valid)):
        paths, studies = [], []
        written = 0
        while written < n:
            patient += 1
            abnormal = patient % 2 == 0
            study = (
                root / split / "XR_ELBOW" / f"patient{patient:05d}" / f"study1_{'positive' if abnormal else 'negative'}"
            )
            study.mkdir(parents=True, exist_ok=True)
            studies.append((f"MURA-v1.1/{study.relative_to(root).as_posix()}/", int(abnormal)))
            for k in range(min(1 + int(rng.random() < 0.3), n - written)):
                img, blob = synthetic_radiograph(rng, size, abnormal)
                path = study / f"image{k + 1}.png"
                Image.fromarray(img).save(path)
                rel = path.relative_to(root).as_posix()
                paths.append(f"MURA-v1.1/{rel}")
                if blob:
                    lesions.append(
                        {"path": rel, "cy": round(blob[0], 2), "cx": round(blob[1], 2), "r": round(blob[2], 2)}
                    )
                written += 1
        (root / f"{split}_image_paths.csv").write_text("".join(p + "\n" for p in paths))
        (root / f"{split}_labeled_studies.csv").write_text("".join(f"{s},{y}\n" for s, y in studies))
    with open(root / LESIONS_CSV, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=["path", "cy", "cx", "r"])
        w.writeheader()
        w.writerows(lesions)
    return root
