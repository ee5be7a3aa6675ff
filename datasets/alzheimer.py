"""The three Kaggle MRI-slice datasets of the ad-lite card, and their merged 3-class set.

Layouts (as unpacked from Kaggle):
- ``ad``: ``Alzheimer_s Dataset/{train,test}/{MildDemented,ModerateDemented,NonDemented,VeryMildDemented}/*.jpg``
  (tourist55/alzheimers-dataset-4-class-of-images). train and test are merged, as the authors' code does.
- ``adni``: ``Axial/{AD,CI,CN}/*`` (katalniraj/adni-extracted-axial).
- ``oasis``: ``Data/{Mild Dementia,Moderate Dementia,Non Demented,Very mild Dementia}/*.jpg`` (ninadaithal/imagesoasis).
  Non Demented and Very mild are randomly undersampled (``random.seed(50)``) as the authors' code does.
- ``merged``: ``ad`` with VeryMild+Mild → CI, Moderate → AD, Non → CN, plus ``adni``.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path

from medrun.errors import DataError

from . import DatasetInfo
from .images import list_class_images, require_class_folders

AD_CLASSES = ["MildDemented", "ModerateDemented", "NonDemented", "VeryMildDemented"]
ADNI_CLASSES = ["AD", "CI", "CN"]
OASIS_CLASSES = ["Mild Dementia", "Moderate Dementia", "Non Demented", "Very mild Dementia"]
AD_TO_MERGED = {"MildDemented": "CI", "VeryMildDemented": "CI", "ModerateDemented": "AD", "NonDemented": "CN"}

# Severity rank per class: the fixture's ventricle radius grows with it.
_SEVERITY = {
    "NonDemented": 0, "VeryMildDemented": 1, "MildDemented": 2, "ModerateDemented": 3,
    "CN": 0, "CI": 1.5, "AD": 3,
    "Non Demented": 0, "Very mild Dementia": 1, "Mild Dementia": 2, "Moderate Dementia": 3,
}

DATASETS = [
    DatasetInfo("ad", "AD-Dataset (4 classes, Kaggle)", "Alzheimer_s Dataset/{train,test}/<class>/*.jpg",
                "Kaggle tourist55/alzheimers-dataset-4-class-of-images; point at the 'Alzheimer_s Dataset' folder",
                "medrun.datasets.alzheimer:fixture_ad", ("classification", "mri")),
    DatasetInfo("adni", "ADNI-Extracted-Axial (3 classes, Kaggle)", "Axial/{AD,CI,CN}/*",
                "Kaggle katalniraj/adni-extracted-axial; point at the 'Axial' folder",
                "medrun.datasets.alzheimer:fixture_adni", ("classification", "mri")),
    DatasetInfo("oasis", "OASIS MRI slices (4 classes, Kaggle)", "Data/<class>/*.jpg",
                "Kaggle ninadaithal/imagesoasis; point at the 'Data' folder",
                "medrun.datasets.alzheimer:fixture_oasis", ("classification", "mri")),
    DatasetInfo("merged", "AD-Dataset + ADNI-Axial merged (3 classes)", "<root>/{Alzheimer_s Dataset,Axial}",
                "a folder holding both Kaggle folders side by side", "medrun.datasets.alzheimer:fixture_merged",
                ("classification", "mri")),
]


@dataclass(frozen=True)
class Sample:
    path: Path
    label: int


def _hint(name: str) -> str:
    info = {d.name: d for d in DATASETS}[name]
    return f"download {info.source} and pass --data-dir, or try --fixture for a generated miniature"


def check_layout(name: str, root: Path) -> None:
    """Cheap folder checks (no image is opened), run before the data is fingerprinted."""
    root = Path(root)
    if name == "ad":
        _check_ad(root)
    elif name == "adni":
        require_class_folders(root, ADNI_CLASSES, what="ADNI-Extracted-Axial", hint=_hint("adni"))
    elif name == "oasis":
        require_class_folders(root, OASIS_CLASSES, what="OASIS", hint=_hint("oasis"))


def _check_ad(root: Path) -> None:
    if not root.is_dir():
        raise DataError(f"AD-Dataset not found at {root}", fix=_hint("ad"))
    if not all((root / s).is_dir() for s in ("train", "test")):
        inner = root / "Alzheimer_s Dataset"
        fix = f"use {inner} instead" if inner.is_dir() else _hint("ad")
        raise DataError(f"{root} does not have the AD-Dataset layout (train/ and test/ folders)", fix=fix)
    for split in ("train", "test"):
        require_class_folders(root / split, AD_CLASSES, what="AD-Dataset", hint=_hint("ad"))


def read_ad(root: Path) -> tuple[list[Sample], list[str]]:
    root = Path(root)
    _check_ad(root)
    samples = []
    for split in ("train", "test"):
        for label, cls in enumerate(AD_CLASSES):
            samples += [Sample(p, label) for p in list_class_images(root / split / cls)]
    return _nonempty(samples, root), list(AD_CLASSES)


def read_adni(root: Path) -> tuple[list[Sample], list[str]]:
    root = Path(root)
    require_class_folders(root, ADNI_CLASSES, what="ADNI-Extracted-Axial", hint=_hint("adni"))
    samples = [Sample(p, label) for label, cls in enumerate(ADNI_CLASSES) for p in list_class_images(root / cls)]
    return _nonempty(samples, root), list(ADNI_CLASSES)


def read_oasis(root: Path, undersample: dict[str, int] | None = None, seed: int = 50) -> tuple[list[Sample], list[str]]:
    """Undersampling follows the authors' code: ``random.seed(50)`` then a random subset per capped class."""
    root = Path(root)
    require_class_folders(root, OASIS_CLASSES, what="OASIS", hint=_hint("oasis"))
    unknown = set(undersample or {}) - set(OASIS_CLASSES)
    if unknown:
        raise DataError(f"undersample names unknown OASIS class(es): {', '.join(sorted(unknown))}",
                        fix=f"use {', '.join(OASIS_CLASSES)}")
    rng = random.Random(seed)
    samples = []
    for label, cls in enumerate(OASIS_CLASSES):
        files = list_class_images(root / cls)
        cap = (undersample or {}).get(cls)
        if cap is not None and len(files) > cap:
            files = sorted(rng.sample(files, cap))
        samples += [Sample(p, label) for p in files]
    return _nonempty(samples, root), list(OASIS_CLASSES)


def read_merged(ad_root: Path, adni_root: Path) -> tuple[list[Sample], list[str]]:
    ad, _ = read_ad(ad_root)
    adni, _ = read_adni(adni_root)
    index = {c: i for i, c in enumerate(ADNI_CLASSES)}
    mapped = [Sample(s.path, index[AD_TO_MERGED[AD_CLASSES[s.label]]]) for s in ad]
    return mapped + adni, list(ADNI_CLASSES)


def _nonempty(samples: list[Sample], root: Path) -> list[Sample]:
    if not samples:
        raise DataError(f"no images found under {root}", fix="check that the class folders hold .jpg/.png files")
    return samples


# -- fixtures ------------------------------------------------------------------------------------------------
def _slice(severity: float, rng, size: int = 64):
    """A grayscale 'axial slice': bright ellipse brain, dark ventricles whose size grows with severity."""
    import numpy as np

    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    cy, cx = size / 2 + rng.normal(0, 2), size / 2 + rng.normal(0, 2)
    brain = ((yy - cy) / (size * 0.42)) ** 2 + ((xx - cx) / (size * 0.36)) ** 2 <= 1
    r = size * (0.06 + 0.045 * severity) * rng.uniform(0.9, 1.1)
    vent = ((yy - cy) / (r * 1.3)) ** 2 + ((xx - cx) / r) ** 2 <= 1
    img = np.where(brain, 170.0, 0.0) - np.where(vent, 140.0, 0.0) + rng.normal(0, 12, (size, size))
    return np.clip(img, 0, 255).astype(np.uint8)


def _write_class_folders(folder: Path, counts: dict[str, int], rng, name) -> None:
    from PIL import Image

    for cls, n in counts.items():
        (folder / cls).mkdir(parents=True, exist_ok=True)
        for i in range(n):
            Image.fromarray(_slice(_SEVERITY[cls], rng)).save(folder / cls / name(cls, i), quality=95)


def fixture_ad(out: Path, seed: int = 0) -> Path:
    import numpy as np

    rng = np.random.default_rng(seed)
    root = Path(out) / "Alzheimer_s Dataset"
    counts = {"MildDemented": 40, "ModerateDemented": 20, "NonDemented": 60, "VeryMildDemented": 50}
    for split, frac in (("train", 0.8), ("test", 0.2)):
        _write_class_folders(
            root / split,
            {c: max(1, round(n * frac)) for c, n in counts.items()},
            rng,
            lambda c, i, s=split: f"{s}_{c.lower()}_{i:03d}.jpg" if s == "test" else f"{c.lower()}_{i:03d}.jpg",
        )
    return root


def fixture_adni(out: Path, seed: int = 0) -> Path:
    import numpy as np

    rng = np.random.default_rng(seed)
    root = Path(out) / "Axial"
    _write_class_folders(root, {"AD": 20, "CI": 40, "CN": 30}, rng, lambda c, i: f"{c}_axial_{i:04d}.png")
    return root


def fixture_oasis(out: Path, seed: int = 0) -> Path:
    """Non Demented and Very mild are over-full so the manifest's undersampling caps apply, as on the real set."""
    import numpy as np

    rng = np.random.default_rng(seed)
    root = Path(out) / "Data"
    counts = {"Mild Dementia": 40, "Moderate Dementia": 20, "Non Demented": 70, "Very mild Dementia": 55}
    _write_class_folders(root, counts, rng, lambda c, i: f"OAS1_{i:04d}_MR1_mpr-{1 + i % 4}_{100 + i % 60}.jpg")
    return root


def fixture_merged(out: Path, seed: int = 0) -> Path:
    fixture_ad(out, seed)
    fixture_adni(out, seed + 1)
    return Path(out)
