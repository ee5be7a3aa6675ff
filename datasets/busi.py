"""BUSI: Breast Ultrasound Images (Al-Dhabyani et al. 2020), lesion masks and benign / malignant / normal labels.

Layout (as unpacked from Kaggle ``aryashah2k/breast-ultrasound-images-dataset``)::

    Dataset_BUSI_with_GT/
        benign/benign (1).png  benign (1)_mask.png  [benign (1)_mask_1.png ...]
        malignant/malignant (1).png  malignant (1)_mask.png ...
        normal/normal (1).png  normal (1)_mask.png            (empty masks; not used by ma-dtnet)

Images are 8-bit PNGs (stored as RGB; read as grey). Some images have several masks (``_mask_1``, ``_mask_2``):
they are OR-ed. Labels come from the folder: benign 0, malignant 1.
"""

from __future__ import annotations

import re
from pathlib import Path

from medrun.errors import DataError

from . import DatasetInfo
from .images import warn_empty
from .ultrasound import CLASSES, Case, load, synthetic_lesion  # noqa: F401 (load re-exported)

DATASETS = [
    DatasetInfo("busi", "BUSI breast ultrasound with lesion masks (benign / malignant / normal)",
                "Dataset_BUSI_with_GT/{benign,malignant,normal}/<class> (N).png + <class> (N)_mask[_k].png",
                "Kaggle aryashah2k/breast-ultrasound-images-dataset; point at the 'Dataset_BUSI_with_GT' folder",
                "medrun.datasets.busi:fixture", ("segmentation", "classification", "ultrasound")),
]

_HINT = "point at the Dataset_BUSI_with_GT folder (it holds benign/ and malignant/), or try --fixture"
_MASK = re.compile(r"^(?P<stem>.+)_mask(_\d+)?$")


def _number(stem: str) -> tuple[int, str]:
    m = re.search(r"\((\d+)\)", stem)
    return (int(m.group(1)) if m else 10**9, stem)


def check_layout(root: Path) -> None:
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"BUSI folder not found at {root}", fix=_HINT)
    missing = [c for c in CLASSES if not (root / c).is_dir()]
    if missing:
        inner = [p for p in root.iterdir() if p.is_dir() and all((p / c).is_dir() for c in CLASSES)]
        if inner:
            raise DataError(f"{root} is one level above the BUSI folder", fix=f"use {inner[0]} instead")
        raise DataError(f"{root} does not have the BUSI layout: missing folder(s) {', '.join(missing)}", fix=_HINT)


def read(root: Path, classes=CLASSES) -> list[Case]:
    """Every image of the named class folders with its mask file(s); an image without a mask, or a mask without
    its image, is an error naming the file."""
    root = Path(root)
    check_layout(root)
    cases = []
    for cls in classes:
        if cls not in (*CLASSES, "normal"):
            raise DataError(f"unknown BUSI class folder '{cls}'", fix="use benign, malignant (and normal)")
        folder = root / cls
        if not folder.is_dir():
            raise DataError(f"{folder} not found", fix=_HINT)
        images, masks = {}, {}
        for p in folder.iterdir():
            if p.suffix.lower() != ".png" or p.name.startswith("."):
                continue
            m = _MASK.match(p.stem)
            if m:
                masks.setdefault(m.group("stem"), []).append(p)
            else:
                images[p.stem] = p
        if not images:
            warn_empty(folder)
        for stem in sorted(set(masks) - set(images)):
            raise DataError(
                f"mask {masks[stem][0]} has no image {stem}.png", fix="restore the image or remove the mask"
            )
        for stem in sorted(images, key=_number):
            if stem not in masks:
                raise DataError(f"no mask for {images[stem]} (expected {stem}_mask.png)",
                                fix="restore the mask or remove the image")
            label = CLASSES.index(cls) if cls in CLASSES else -1
            cases.append(Case(stem, images[stem], tuple(sorted(masks[stem], key=lambda q: q.name)), label))
    return cases


def fixture(out: Path, seed: int = 0, n_per_class: int = 12, size: int = 64) -> Path:
    """``n_per_class`` benign and malignant cases (and two normal ones with empty masks) in the BUSI layout.
    Cases 3 and 8 of each class get their lesion split over ``_mask.png`` and ``_mask_1.png``, to exercise the
    merging."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(seed)
    root = Path(out) / "Dataset_BUSI_with_GT"
    for cls in (*CLASSES, "normal"):
        (root / cls).mkdir(parents=True, exist_ok=True)
    for cls in CLASSES:
        for i in range(1, n_per_class + 1):
            img, mask = synthetic_lesion(rng, cls == "malignant", size)
            stem = f"{cls} ({i})"
            Image.fromarray(np.stack([img] * 3, axis=-1)).save(root / cls / f"{stem}.png")  # BUSI PNGs are RGB
            if i in (3, 8):
                left = mask.copy()
                left[:, size // 2:] = False
                parts = [left, mask & ~left]
            else:
                parts = [mask]
            for k, part in enumerate(parts):
                suffix = "_mask" if k == 0 else f"_mask_{k}"
                Image.fromarray(part.astype(np.uint8) * 255).save(root / cls / f"{stem}{suffix}.png")
    for i in (1, 2):
        img = (255 * np.clip(rng.rayleigh(1.0, (size, size)) / 2.5, 0, 1)).astype(np.uint8)
        Image.fromarray(np.stack([img] * 3, axis=-1)).save(root / "normal" / f"normal ({i}).png")
        Image.fromarray(np.zeros((size, size), np.uint8)).save(root / "normal" / f"normal ({i})_mask.png")
    return root
