"""ISIC 2020 (SIIM-ISIC melanoma classification), benign vs malignant dermoscopy, in its official or Kaggle layout.

Official layout (as unpacked from the ISIC 2020 challenge archives)::

    <root>/
        ISIC_2020_Training_JPEG/train/ISIC_0015719.jpg ...      33,126 JPEGs of varying size
        ISIC_2020_Training_GroundTruth.csv                      image_name, patient_id, sex, age_approx,
                                                                anatom_site_general_challenge, diagnosis,
                                                                benign_malignant, target

Kaggle layout (``siim-isic-melanoma-classification``)::

    <root>/jpeg/train/ISIC_0015719.jpg ...   <root>/train.csv  (same columns)

Labels come from ``target`` (1 = malignant, 584 images; 0 = benign). A CSV row whose image is missing is a
``DataError`` naming the file. There is no official test split with labels: ``split`` makes the card's 80/20 split
grouped by ``patient_id`` and stratified by ``target`` (sklearn ``StratifiedGroupKFold``, 5 folds, the first fold is
the test part).

The fixture writes the official layout, 60 benign + 60 malignant 64×64 RGB JPEGs (quality 95) over 60 patients: a
brown disc on a skin-tone background; benign discs are smooth, malignant discs carry a random-phase stripe/checker
texture of amplitude about 0.15 (the card: the class signal is texture, not shape).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from medrun.errors import DataError

from . import DatasetInfo

DATASETS = [
    DatasetInfo(
        "isic2020",
        "ISIC 2020 (SIIM-ISIC melanoma) dermoscopy, benign vs malignant",
        "ISIC_2020_Training_JPEG/train/ISIC_*.jpg + ISIC_2020_Training_GroundTruth.csv "
        "(or Kaggle jpeg/train/ + train.csv)",
        "ISIC archive / Kaggle siim-isic-melanoma-classification; point at the folder holding "
        "ISIC_2020_Training_JPEG/ and ISIC_2020_Training_GroundTruth.csv",
        "medrun.datasets.isic2020:fixture",
        ("classification", "dermoscopy"),
    ),
]

CLASSES = ["benign", "malignant"]  # label 0, 1 (B, M domains of the card)
COLUMNS = ("image_name", "patient_id", "sex", "age_approx", "anatom_site_general_challenge", "diagnosis",
           "benign_malignant", "target")
_HINT = ("point at the folder holding ISIC_2020_Training_JPEG/train/ and ISIC_2020_Training_GroundTruth.csv "
         "(or the Kaggle jpeg/train/ and train.csv); or try --fixture")


@dataclass(frozen=True)
class Sample:
    path: Path
    label: int  # 1 malignant, 0 benign
    patient: str = ""


def layout(root: Path) -> tuple[Path, Path]:
    """(image folder, ground-truth CSV) of the official or the Kaggle layout; a DataError otherwise."""
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"ISIC 2020 folder not found: {root}", fix=_HINT)
    for images, csv in ((root / "ISIC_2020_Training_JPEG" / "train", root / "ISIC_2020_Training_GroundTruth.csv"),
                        (root / "jpeg" / "train", root / "train.csv")):
        if images.is_dir() or csv.is_file():
            if not images.is_dir():
                raise DataError(f"{root} has {csv.name} but no {images.relative_to(root)}/ folder",
                                fix="unpack the training JPEGs next to the CSV")
            if not csv.is_file():
                raise DataError(f"{root} has {images.relative_to(root)}/ but no {csv.name}",
                                fix=f"put the ground-truth CSV at {csv}")
            return images, csv
    inner = [p for p in sorted(root.iterdir()) if p.is_dir() and (p / "ISIC_2020_Training_JPEG").is_dir()]
    if inner:
        raise DataError(f"{root} is one level above the ISIC 2020 folder", fix=f"use {inner[0]} instead")
    found = ", ".join(sorted(p.name for p in root.iterdir())[:5]) or "nothing"
    raise DataError(f"{root} does not have the ISIC 2020 layout (found: {found})", fix=_HINT)


def read(root: Path) -> list[Sample]:
    """Every labelled image of the ground-truth CSV."""
    import pandas as pd

    images, csv = layout(root)
    try:
        df = pd.read_csv(csv)
    except Exception as e:  # noqa: BLE001 (any unreadable CSV is the same problem to the user)
        raise DataError(f"cannot read {csv}: {type(e).__name__}", fix="restore the ground-truth CSV") from None
    missing = [c for c in ("image_name", "patient_id", "target") if c not in df.columns]
    if missing:
        raise DataError(f"{csv} lacks column(s) {', '.join(missing)} (has: {', '.join(map(str, df.columns[:8]))})",
                        fix="use the ISIC 2020 ground-truth CSV (image_name, patient_id, …, target)")
    samples = []
    for name, patient, target in zip(df["image_name"], df["patient_id"], df["target"], strict=True):
        path = images / f"{name}.jpg"
        if not path.is_file():
            raise DataError(f"image {path.name} listed in {csv.name} is missing from {images}",
                            fix="restore the file or drop its row from the CSV")
        if target not in (0, 1):
            raise DataError(f"{csv.name}: target of {name} is {target!r}, not 0 or 1", fix="fix the row")
        samples.append(Sample(path, int(target), str(patient)))
    if not samples:
        raise DataError(f"{csv} lists no images", fix=_HINT)
    return samples


def split(samples: list[Sample], seed: int = 0, folds: int = 5) -> tuple[list[Sample], list[Sample]]:
    """(train, test): a 1/folds test part grouped by patient and stratified by target (StratifiedGroupKFold)."""
    import numpy as np
    from sklearn.model_selection import StratifiedGroupKFold

    y = np.array([s.label for s in samples])
    groups = np.array([s.patient for s in samples])
    cv = StratifiedGroupKFold(n_splits=folds, shuffle=True, random_state=seed)
    tr, te = next(cv.split(np.zeros(len(y)), y, groups))
    return [samples[i] for i in sorted(tr)], [samples[i] for i in sorted(te)]


def texture(rng, size: int, amplitude: float = 0.15):
    """A random-phase stripe or checker pattern in [−amplitude, amplitude] (size × size)."""
    import numpy as np

    yy, xx = np.mgrid[0:size, 0:size].astype(float)
    period = rng.uniform(5.0, 8.0)
    theta = rng.uniform(0, np.pi)
    phase = rng.uniform(0, 2 * np.pi, 2)
    u = np.cos(theta) * xx + np.sin(theta) * yy
    v = -np.sin(theta) * xx + np.cos(theta) * yy
    stripes = np.sin(2 * np.pi * u / period + phase[0])
    if rng.random() < 0.5:
        stripes = np.sign(stripes * np.sin(2 * np.pi * v / period + phase[1]))
    return amplitude * stripes


def _lesion(rng, size: int, malignant: bool):
    import numpy as np

    yy, xx = np.mgrid[0:size, 0:size].astype(float)
    skin = np.array([0.93, 0.76, 0.64]) + rng.normal(0, 0.03, 3)
    img = np.ones((size, size, 3)) * skin + rng.normal(0, 0.01, (size, size, 1))
    cy, cx = rng.uniform(0.35, 0.65, 2) * size
    r = rng.uniform(0.18, 0.3) * size
    disc = np.clip((r - np.hypot(yy - cy, xx - cx)) / 2.0, 0, 1)  # soft edge
    brown = np.array([0.45, 0.28, 0.18]) + rng.normal(0, 0.04, 3)
    lesion = np.ones((size, size, 3)) * brown
    if malignant:
        lesion = lesion + texture(rng, size)[..., None]
    img = img * (1 - disc[..., None]) + lesion * disc[..., None]
    return np.clip(img, 0, 1)


def fixture(out_dir: Path, seed: int = 0, per_class: int = 60, size: int = 64) -> Path:
    """Write the miniature in the official layout; returns the root."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(seed)
    root = Path(out_dir)
    images = root / "ISIC_2020_Training_JPEG" / "train"
    images.mkdir(parents=True, exist_ok=True)
    labels = rng.permutation([0] * per_class + [1] * per_class)
    sites = ["torso", "lower extremity", "upper extremity", "head/neck"]
    rows = [",".join(COLUMNS)]
    for i, y in enumerate(labels):
        name = f"ISIC_{1000000 + 37 * i:07d}"
        img = _lesion(rng, size, bool(y))
        Image.fromarray((img * 255).round().astype(np.uint8)).save(images / f"{name}.jpg", quality=95)
        diagnosis = "melanoma" if y else "nevus"
        rows.append(f"{name},IP_{i // 2:07d},{'male' if i % 3 else 'female'},{35 + 5 * (i % 8)}.0,"
                    f"{sites[i % 4]},{diagnosis},{CLASSES[y]},{y}")
    (root / "ISIC_2020_Training_GroundTruth.csv").write_text("\n".join(rows) + "\n")
    return root
