"""Chest X-ray pneumonia (Kermany et al. 2018, Mendeley "ZhangLabData" v2, and its Kaggle mirror).

Layout::

    chest_xray/
        train/NORMAL/*.jpeg   train/PNEUMONIA/*.jpeg        1,341 / 3,875 (Mendeley: 1,349 / 3,883, no val/)
        test/NORMAL/*.jpeg    test/PNEUMONIA/*.jpeg         234 / 390
        val/NORMAL/*.jpeg     val/PNEUMONIA/*.jpeg          Kaggle only: 8 + 8 images moved out of train

Grayscale JPEGs of varying size (around 1–2 k px); a few are stored as RGB. Labels come from the folder:
PNEUMONIA = 1 (the card's M domain), NORMAL = 0 (B). The card's split is the official train/test; a Kaggle
``val/`` folder is read back into train, so both layouts give the paper's 5,232 training images. Hidden files
(``.DS_Store``) are skipped.

The fixture writes the same layout (no val/) with 64×64 grayscale JPEGs: 45 + 45 train and 15 + 15 test images of a
gray torso silhouette with two dark lungs; PNEUMONIA images add blotchy high-frequency opacities in the lungs.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from medrun.errors import DataError

from . import DatasetInfo
from .images import list_class_images, require_class_folders

DATASETS = [
    DatasetInfo("chestxray", "Chest X-ray pneumonia vs normal (Kermany et al. 2018)",
                "chest_xray/{train,test[,val]}/{NORMAL,PNEUMONIA}/*.jpeg",
                "Mendeley Data 'Labeled Optical Coherence Tomography (OCT) and Chest X-Ray Images' (ZhangLabData v2) "
                "or Kaggle chest-xray-pneumonia; point at the 'chest_xray' folder",
                "medrun.datasets.chestxray:fixture", ("classification", "xray")),
]

CLASSES = ["NORMAL", "PNEUMONIA"]  # label 0, 1
_HINT = "point at the chest_xray folder (it holds train/ and test/ with NORMAL/ and PNEUMONIA/), or try --fixture"


@dataclass(frozen=True)
class Sample:
    path: Path
    label: int  # 1 PNEUMONIA, 0 NORMAL
    patient: str = ""


def check_layout(root: Path) -> None:
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"chest X-ray folder not found at {root}", fix=_HINT)
    missing = [s for s in ("train", "test") if not (root / s).is_dir()]
    if missing:
        inner = [p for p in (root / "chest_xray", *sorted(root.glob("*/chest_xray"))) if (p / "train").is_dir()]
        raise DataError(f"{root} does not have the chest X-ray layout: missing {', '.join(missing)}/",
                        fix=f"use {inner[0]} instead" if inner else _HINT)
    for split in ("train", "test"):
        require_class_folders(root / split, CLASSES, what=f"chest X-ray {split}", hint=_HINT)


def read(root: Path, split: str) -> list[Sample]:
    """``train`` (with a Kaggle val/ folder folded in) or ``test``."""
    root = Path(root)
    check_layout(root)
    if split not in ("train", "test"):
        raise DataError(f"unknown chest X-ray split '{split}'", fix="use train or test")
    folders = [root / split] + ([root / "val"] if split == "train" and (root / "val").is_dir() else [])
    samples = []
    for folder in folders:
        for label, c in enumerate(CLASSES):
            if (folder / c).is_dir():
                samples += [Sample(p, label, _patient(p.name)) for p in list_class_images(folder / c)]
    if not samples:
        raise DataError(f"no images under {root / split}", fix=_HINT)
    return samples


def _patient(name: str) -> str:
    """person1_bacteria_1.jpeg → person1; IM-0115-0001.jpeg → IM-0115; NORMAL2-IM-1427-0001.jpeg → NORMAL2-IM-1427."""
    stem = name.rsplit(".", 1)[0]
    if stem.startswith("person"):
        return stem.split("_")[0]
    return stem.rsplit("-", 1)[0]


def _xray(rng, size: int, pneumonia: bool):
    import numpy as np
    from scipy.ndimage import gaussian_filter

    yy, xx = np.mgrid[0:size, 0:size].astype(float) / size
    torso = np.clip((0.42 - np.hypot((xx - 0.5) / 0.95, (yy - 0.55) / 1.2)) * 12, 0, 1)
    img = 0.12 + 0.55 * torso
    for cx in (0.33, 0.67):
        lung = np.clip((0.16 - np.hypot((xx - cx) / 0.7, (yy - 0.5) / 1.3)) * 25, 0, 1)
        img = img - 0.35 * lung * torso
        if pneumonia:
            blotch = gaussian_filter(rng.normal(0, 1, (size, size)), 0.8)
            blotch = blotch / (blotch.std() + 1e-8)
            img = img + 0.15 * np.clip(blotch, 0, None) * lung
    img = img + gaussian_filter(rng.normal(0, 0.02, (size, size)), 1.0) + rng.uniform(-0.04, 0.04)
    return np.clip(img, 0, 1)


def fixture(out_dir: Path, seed: int = 0, train_per_class: int = 45, test_per_class: int = 15, size: int = 64) -> Path:
    """Write the miniature (``chest_xray/{train,test}/{NORMAL,PNEUMONIA}``); returns the ``chest_xray`` folder."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(seed)
    root = Path(out_dir) / "chest_xray"
    person = 0
    for split, n in (("train", train_per_class), ("test", test_per_class)):
        for label, c in enumerate(CLASSES):
            folder = root / split / c
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(n):
                img = (_xray(rng, size, bool(label)) * 255).round().astype(np.uint8)
                if label:
                    person += 1
                    name = f"person{person}_{'bacteria' if i % 2 else 'virus'}_{i + 1}.jpeg"
                else:
                    name = f"IM-{1 if split == 'test' else 0}{i:03d}-0001.jpeg"
                Image.fromarray(img).save(folder / name, quality=95)
    return root
