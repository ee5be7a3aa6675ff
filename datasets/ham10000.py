"""HAM10000 (Tschandl et al. 2018): 10,015 dermoscopic images of pigmented skin lesions in 7 diagnostic classes,
with the lesion masks released later by the same authors (``HAM10000_segmentations_lesion_tschandl``).

Layout (the Harvard Dataverse archives unpacked side by side; Kaggle's ``kmader/skin-cancer-mnist-ham10000`` has
the same names, plus lower-case copies of the image folders, which are read once)::

    <root>/
        HAM10000_images_part_1/ISIC_0024306.jpg ...        JPEGs, 600×450
        HAM10000_images_part_2/ISIC_0029306.jpg ...
        HAM10000_metadata.csv                              lesion_id, image_id, dx, dx_type, age, sex, localization
        HAM10000_segmentations_lesion_tschandl/ISIC_0024306_segmentation.png     masks, 0 and 255

Dataverse serves the metadata as ``HAM10000_metadata.tab`` (tab-separated) unless the original format is asked
for; either is read. ``dx`` is one of ``CLASSES`` (label = its index). Several images can show one lesion
(``lesion_id``): ``HamCase.lesion`` carries it, for folds that keep a lesion's images together.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

from medrun.errors import DataError

from . import DatasetInfo
from .ultrasound import Case

DATASETS = [
    DatasetInfo("ham10000", "HAM10000 dermoscopy: lesion masks and 7 diagnostic classes",
                "HAM10000_images_part_{1,2}/ISIC_N.jpg, HAM10000_metadata.csv (or .tab), "
                "HAM10000_segmentations_lesion_tschandl/ISIC_N_segmentation.png",
                "Harvard Dataverse doi:10.7910/DVN/DBW86T (images, metadata, segmentations) or Kaggle "
                "kmader/skin-cancer-mnist-ham10000 plus the segmentation archive; point at the folder holding them",
                "medrun.datasets.ham10000:fixture", ("segmentation", "classification", "dermoscopy")),
]

CLASSES = ("akiec", "bcc", "bkl", "df", "mel", "nv", "vasc")  # label 0…6, the metadata's dx codes
MASKS = "HAM10000_segmentations_lesion_tschandl"
_HINT = ("point at the folder holding HAM10000_images_part_1/, HAM10000_images_part_2/, HAM10000_metadata.csv and "
         f"{MASKS}/, or try --fixture")


@dataclass(frozen=True)
class HamCase(Case):
    lesion: str = ""  # lesion_id: images of one lesion share it


def _metadata(root: Path) -> Path:
    for name in ("HAM10000_metadata.csv", "HAM10000_metadata.tab", "HAM10000_metadata"):
        if (root / name).is_file():
            return root / name
    raise DataError(f"{root} has no HAM10000_metadata.csv (or .tab)", fix=_HINT)


def check_layout(root: Path) -> None:
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"HAM10000 folder not found at {root}", fix=_HINT)
    _metadata(root)
    if not (root / MASKS).is_dir():
        raise DataError(f"{root} has no {MASKS}/ folder (the lesion masks, a separate Dataverse archive)", fix=_HINT)
    if not _image_dirs(root):
        raise DataError(f"{root} has no HAM10000_images_part_*/ folder", fix=_HINT)


def _image_dirs(root: Path) -> list[Path]:
    return sorted(p for p in root.iterdir() if p.is_dir() and p.name.lower().startswith("ham10000_images_part_"))


def read(root: Path) -> list[HamCase]:
    """One case per metadata row, in the metadata's order: its image (first found across the image folders), its
    mask and its class. A row whose image or mask is missing, or an unknown dx, is an error naming it."""
    root = Path(root)
    check_layout(root)
    images: dict[str, Path] = {}
    for folder in _image_dirs(root):
        for p in folder.iterdir():
            if p.suffix.lower() in (".jpg", ".jpeg") and not p.name.startswith("."):
                images.setdefault(p.stem, p)
    meta = _metadata(root)
    with open(meta, newline="", encoding="utf-8-sig") as f:
        head = f.readline()
        f.seek(0)
        rows = list(csv.DictReader(f, delimiter="\t" if "\t" in head else ","))
    if not rows or not {"image_id", "dx", "lesion_id"} <= set(rows[0]):
        raise DataError(f"{meta} lacks the columns lesion_id, image_id and dx", fix="restore it from the archive")
    cases = []
    for line, r in enumerate(rows, start=2):
        image_id, dx = r["image_id"].strip().strip('"'), r["dx"].strip().strip('"').lower()
        if dx not in CLASSES:
            raise DataError(f"{meta} line {line}: dx '{dx}' is not one of {', '.join(CLASSES)}",
                            fix="fix the row or restore the metadata from the archive")
        if image_id not in images:
            raise DataError(f"{meta} line {line}: image {image_id}.jpg is in no HAM10000_images_part_* folder",
                            fix="unpack both image archives into the root, or remove the row")
        mask = root / MASKS / f"{image_id}_segmentation.png"
        if not mask.is_file():
            raise DataError(f"no mask {mask} for {images[image_id]}", fix=f"unpack the whole {MASKS} archive")
        cases.append(HamCase(image_id, images[image_id], (mask,), CLASSES.index(dx), r["lesion_id"].strip()))
    return cases


def load(case: Case, size: int | None = None):
    """(image float32 H×W×3 in [0, 1], mask uint8 H×W in {0, 1}), resized to size×size when given (bilinear /
    nearest); the mask is checked as ISIC 2018's (same size as its image, values 0 and 255 only)."""
    import numpy as np

    from . import isic2018

    image, mask = isic2018.load(isic2018.Case(case.id, case.image, case.masks[0]), size)
    return image.astype(np.float32) / 255.0, mask


# -- fixture ----------------------------------------------------------------------------------------------------
_LESION_RGB = ((150, 60, 60), (200, 120, 150), (130, 100, 70), (170, 130, 90), (40, 25, 20), (100, 60, 35),
               (160, 20, 40))  # per class: the lesion's colour, so a short run can tell the classes apart


def fixture(out: Path, seed: int = 0, per_class: int = 4, size: int = 64) -> Path:
    """``per_class`` images of each of the 7 classes in the Dataverse layout: JPEGs split over the two image
    folders, masks 0/255 PNGs, a metadata CSV with the real columns; the first two images of ``nv`` share one
    lesion_id, as the real data's repeated images of a lesion."""
    import numpy as np
    from PIL import Image

    from .isic2018 import synthetic_lesion

    rng = np.random.default_rng(seed)
    root = Path(out) / "HAM10000"
    parts = [root / "HAM10000_images_part_1", root / "HAM10000_images_part_2"]
    for d in (*parts, root / MASKS):
        d.mkdir(parents=True, exist_ok=True)
    rows = ["lesion_id,image_id,dx,dx_type,age,sex,localization"]
    n = 0
    for i in range(per_class):
        for k, dx in enumerate(CLASSES):
            img, mask = synthetic_lesion(rng, size)
            tint = np.array(_LESION_RGB[k], np.float32) * rng.uniform(0.9, 1.1)
            img = np.where(mask[..., None], 0.3 * img + 0.7 * tint, img).clip(0, 255).astype(np.uint8)
            image_id = f"ISIC_{24306 + n:07d}"
            lesion = "HAM_0000000" if dx == "nv" and i < 2 else f"HAM_{1000 + n:07d}"
            Image.fromarray(img).save(parts[n % 2] / f"{image_id}.jpg", quality=92)
            Image.fromarray(mask.astype(np.uint8) * 255).save(root / MASKS / f"{image_id}_segmentation.png")
            rows.append(f"{lesion},{image_id},{dx},histo,{int(rng.integers(20, 80))}.0,"
                        f"{'male' if n % 2 else 'female'},back")
            n += 1
    (root / "HAM10000_metadata.csv").write_text("\n".join(rows) + "\n")
    return root
