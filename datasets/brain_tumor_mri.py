"""Kaggle "Brain Tumor Classification (MRI)" (Bhuvaji et al. 2020, DOI 10.34740/KAGGLE/DSV/1183165), the fed-memory
card's data.

Layout (as unpacked from Kaggle sartajbhuvaji/brain-tumor-classification-mri):
``Training/{glioma_tumor,meningioma_tumor,no_tumor,pituitary_tumor}/*.jpg`` and ``Testing/<same four folders>/*.jpg``.
Greyscale MR slices stored as 3-channel JPGs of mixed sizes (mostly 512×512); file names are arbitrary, with spaces and
parentheses (``gg (1).jpg``, ``image(12).jpg``), so every image of a class folder is taken whatever its name or suffix
case. The card merges Training and Testing into one pool (3264 images), so ``read`` returns both with their origin.

A folder beside the four classes (``Training/astrocytoma/``) is a label outside the card's set: a DataError naming it,
not a silently ignored class. The fixture writes 4 classes × (16 Training + 4 Testing) 64×64 grey-as-RGB JPGs with
Kaggle-like names: a noisy "brain" ellipse plus a bright disc whose position encodes the class (glioma top-left,
meningioma top-right, pituitary bottom-centre, no_tumor none), jittered in position and intensity.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from medrun.errors import DataError

from . import DatasetInfo
from .images import list_class_images

CLASSES = ["glioma_tumor", "meningioma_tumor", "no_tumor", "pituitary_tumor"]
SPLITS = ("Training", "Testing")
SOURCE = ("Kaggle sartajbhuvaji/brain-tumor-classification-mri (DOI 10.34740/KAGGLE/DSV/1183165); unzip and point "
          "--data-dir at the folder holding Training/ and Testing/")

DATASETS = [
    DatasetInfo("brain-tumor-mri", "Brain Tumor Classification (MRI), 4 classes, Kaggle",
                "{Training,Testing}/{glioma_tumor,meningioma_tumor,no_tumor,pituitary_tumor}/*.jpg", SOURCE,
                "medrun.datasets.brain_tumor_mri:make_fixture", ("classification", "mri", "federated")),
]


@dataclass(frozen=True)
class Sample:
    path: Path
    label: int
    split: str  # Training | Testing (the card merges them)


def _hint() -> str:
    return f"download {SOURCE}, or try --fixture for a generated miniature"


def check_layout(root: Path) -> None:
    """Cheap folder checks (no image opened): both split folders, the four class folders, nothing else."""
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"Brain Tumor MRI folder not found at {root}", fix=_hint())
    for split in SPLITS:
        folder = root / split
        if not folder.is_dir():
            inner = [p for p in root.iterdir() if p.is_dir() and (p / "Training").is_dir()]
            fix = f"use {inner[0]} instead" if inner else _hint()
            raise DataError(f"{root} has no {split}/ folder (expected Training/ and Testing/ with four class folders)",
                            fix=fix)
        present = sorted(p.name for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))
        unknown = [c for c in present if c not in CLASSES]
        if unknown:
            raise DataError(f"{folder / unknown[0]}: class folder '{unknown[0]}' is not one of the card's classes "
                            f"({', '.join(CLASSES)})",
                            fix="move it out of the dataset folder, or rename it to one of those")
        missing = [c for c in CLASSES if c not in present]
        if missing:
            raise DataError(f"{folder} lacks class folder(s) {', '.join(missing)}", fix=_hint())


def read(root: Path) -> list[Sample]:
    """Every image of Training/ and Testing/ (the card's merged pool), sorted by split, class and name."""
    root = Path(root)
    check_layout(root)
    samples = [Sample(p, label, split) for split in SPLITS for label, cls in enumerate(CLASSES)
               for p in list_class_images(root / split / cls)]
    if not samples:
        raise DataError(f"no images found under {root}", fix="check that the class folders hold .jpg files")
    return samples


# -- fixture -------------------------------------------------------------------------------------------------
_DISC = {"glioma_tumor": (0.32, 0.32), "meningioma_tumor": (0.32, 0.68), "pituitary_tumor": (0.74, 0.5)}


def _slice(cls: str, rng, size: int = 64):
    import numpy as np

    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    cy, cx = size / 2 + rng.normal(0, 1.5), size / 2 + rng.normal(0, 1.5)
    brain = ((yy - cy) / (size * 0.42)) ** 2 + ((xx - cx) / (size * 0.36)) ** 2 <= 1
    img = np.where(brain, 110.0 + rng.normal(0, 10), 0.0) + rng.normal(0, 14, (size, size))
    if cls in _DISC:
        py, px = _DISC[cls]
        dy, dx = py * size + rng.normal(0, 2), px * size + rng.normal(0, 2)
        r = size * rng.uniform(0.09, 0.13)
        img = np.where((yy - dy) ** 2 + (xx - dx) ** 2 <= r * r, rng.uniform(200, 250), img)
    return np.clip(img, 0, 255).astype(np.uint8)


def make_fixture(out: Path, seed: int = 0, per_class: tuple[int, int] = (16, 4)) -> Path:
    """``out`` with Training/ and Testing/ like the Kaggle release (80 images, grey stored as RGB, Kaggle-like
    names)."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(seed)
    root = Path(out)
    for split, n in zip(SPLITS, per_class, strict=True):
        for cls in CLASSES:
            folder = root / split / cls
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(n):
                name = f"gg ({i + 1}).jpg" if i % 2 == 0 else f"image({i + 1}).jpg"
                if cls == "no_tumor" and i == 1:
                    name = f"image({i + 1}).JPG"  # the release mixes suffix case
                grey = _slice(cls, rng)
                Image.fromarray(np.repeat(grey[..., None], 3, axis=2)).save(folder / name, format="JPEG", quality=92)
    return root
