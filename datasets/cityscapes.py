"""Cityscapes (fine annotations), one foreground class as a binary mask (unet-lrp: pedestrians, labelId 24).

Layout (``leftImg8bit_trainvaltest.zip`` and ``gtFine_trainvaltest.zip`` unpacked into one folder)::

    <root>/
        leftImg8bit/{train,val,test}/<city>/<city>_<seq>_<frame>_leftImg8bit.png     RGB, 2048×1024
        gtFine/{train,val,test}/<city>/<city>_<seq>_<frame>_gtFine_labelIds.png      uint8 label ids
        gtFine/.../*_gtFine_color.png, *_instanceIds.png, *_polygons.json          (not read)

A case's mask is ``labelIds == label`` (24 = person, trainId 11). Test-split labels are withheld by Cityscapes
(all zeros), so only train and val are read.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from medrun.errors import DataError

from . import DatasetInfo
from .images import to_8bit

DATASETS = [
    DatasetInfo("cityscapes", "Cityscapes street scenes, fine labels (one class as a binary mask)",
                "<root>/{leftImg8bit,gtFine}/{train,val}/<city>/<city>_<seq>_<frame>_{leftImg8bit,gtFine_labelIds}.png",
                "cityscapes-dataset.com (registration): leftImg8bit_trainvaltest.zip + gtFine_trainvaltest.zip "
                "unpacked into one folder; point at that folder",
                "medrun.datasets.cityscapes:fixture", ("segmentation", "rgb")),
]

PERSON = 24
_HINT = "point at the folder that holds leftImg8bit/ and gtFine/, or try --fixture"


@dataclass(frozen=True)
class Case:
    id: str  # <city>_<seq>_<frame>
    image: Path
    label: Path  # *_gtFine_labelIds.png
    city: str
    split: str


def check_layout(root: Path) -> None:
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"Cityscapes not found at {root}", fix=_HINT)
    missing = [p for p in ("leftImg8bit", "gtFine") if not (root / p).is_dir()]
    if missing:
        raise DataError(f"{root} does not have the Cityscapes layout: missing {', '.join(missing)}", fix=_HINT)


def read(root: Path, split: str = "train") -> list[Case]:
    """Every image of ``split`` with its labelIds file; a missing label file is an error naming it."""
    root = Path(root)
    check_layout(root)
    folder = root / "leftImg8bit" / split
    if not folder.is_dir():
        raise DataError(f"no {split} split in {root / 'leftImg8bit'}", fix="unpack leftImg8bit_trainvaltest.zip there")
    cases = []
    for img in sorted(folder.glob("*/*_leftImg8bit.png")):
        stem = img.name.removesuffix("_leftImg8bit.png")
        label = root / "gtFine" / split / img.parent.name / f"{stem}_gtFine_labelIds.png"
        if not label.is_file():
            raise DataError(
                f"label missing for {img}: {label}", fix="unpack gtFine_trainvaltest.zip into the same folder"
            )
        cases.append(Case(stem, img, label, img.parent.name, split))
    if not cases:
        raise DataError(f"no *_leftImg8bit.png images under {folder}/<city>/", fix=_HINT)
    return cases


def load(case: Case, label: int = PERSON):
    """(image float32 H×W×3 in [0, 1], mask uint8 H×W in {0, 1}); the label file must match the image's size."""
    import numpy as np
    from PIL import Image, UnidentifiedImageError

    def _open(p: Path, mode: str):
        try:
            with Image.open(p) as im:
                return to_8bit(im, p).convert(mode) if mode else im.copy()
        except (UnidentifiedImageError, OSError) as e:
            raise DataError(f"cannot read image {p}: {e}", fix="re-extract the file from the archive") from None

    image = _open(case.image, "RGB")
    lab = _open(case.label, "")
    if lab.mode not in ("L", "P", "I", "I;16"):
        raise DataError(
            f"{case.label} is a {lab.mode} image, not a label-id map", fix="use the *_gtFine_labelIds.png files"
        )
    if lab.size != image.size:
        raise DataError(f"label {case.label} is {lab.size[0]}×{lab.size[1]} but its image is "
                        f"{image.size[0]}×{image.size[1]}", fix="labels must have their image's size")
    mask = (np.asarray(lab) == label).astype(np.uint8)
    return np.asarray(image, dtype=np.float32) / 255.0, mask


def synthetic_scene(rng, h: int = 64, w: int = 128):
    """An RGB 'street': sky, buildings, road, a car, and 2–4 'persons' (upright red ellipses with a head).
    Returns (image uint8 H×W×3, labelIds uint8 H×W)."""
    import numpy as np

    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    lab = np.full((h, w), 23, np.uint8)  # sky
    lab[yy > h * 0.3] = 11  # building
    lab[yy > h * 0.6] = 7  # road
    colours = {23: (70, 130, 180), 11: (110, 110, 110), 7: (128, 100, 128), 26: (20, 20, 160), 24: (200, 40, 60)}
    cx = rng.uniform(0.1, 0.9) * w
    car = (np.abs(xx - cx) < w * 0.12) & (np.abs(yy - h * 0.72) < h * 0.08)
    lab[car] = 26
    for _ in range(int(rng.integers(2, 5))):
        px, py = rng.uniform(0.08, 0.92) * w, rng.uniform(0.55, 0.65) * h
        ry, rx = h * rng.uniform(0.18, 0.24), w * rng.uniform(0.04, 0.06)
        body = ((yy - py) / ry) ** 2 + ((xx - px) / rx) ** 2 <= 1
        head = ((yy - (py - ry * 1.15)) / (rx * 0.9)) ** 2 + ((xx - px) / (rx * 0.9)) ** 2 <= 1
        lab[body | head] = PERSON
    img = np.zeros((h, w, 3), np.float32)
    for k, c in colours.items():
        img[lab == k] = c
    img += rng.normal(0, 12, img.shape)
    return np.clip(img, 0, 255).astype(np.uint8), lab


def fixture(out: Path, seed: int = 0, n: int = 12, h: int = 64, w: int = 128) -> Path:
    """``n`` synthetic scenes of one city ('aachen') in the train split, plus 2 in val, in the Cityscapes layout."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(seed)
    root = Path(out) / "cityscapes"
    for split, count, city in (("train", n, "aachen"), ("val", 2, "frankfurt")):
        img_dir, lab_dir = root / "leftImg8bit" / split / city, root / "gtFine" / split / city
        img_dir.mkdir(parents=True, exist_ok=True)
        lab_dir.mkdir(parents=True, exist_ok=True)
        for i in range(count):
            stem = f"{city}_{i:06d}_000019"
            img, lab = synthetic_scene(rng, h, w)
            Image.fromarray(img).save(img_dir / f"{stem}_leftImg8bit.png")
            Image.fromarray(lab).save(lab_dir / f"{stem}_gtFine_labelIds.png")
    return root
