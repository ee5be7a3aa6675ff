"""Chest X-ray lung masks: the Kaggle collection "Chest X-ray masks and labels" (Montgomery + Shenzhen, 704 masks).

Layout (as unpacked; the archive's top folder is ``Lung Segmentation``)::

    Lung Segmentation/
        CXR_png/MCUCXR_0001_0.png  CHNCXR_0001_0.png ...     800 grey chest X-rays (Montgomery + Shenzhen)
        masks/MCUCXR_0001_0.png                             Montgomery masks: the image's name
        masks/CHNCXR_0001_0_mask.png                        Shenzhen masks: ``<name>_mask.png``
        ClinicalReadings/, test/                            (not read)

A mask is binary (0/255) and has its image's size (both lungs in one file). Images without a mask are left out
(800 images, 704 masks); the reader says how many. The last digit of the name is the TB label (0/1).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from medrun.errors import DataError

from . import DatasetInfo
from .images import to_8bit

DATASETS = [
    DatasetInfo("cxr", "Chest X-ray lung masks (Montgomery + Shenzhen, Kaggle 'Chest X-ray masks and labels')",
                "CXR_png/<name>.png + masks/<name>.png or masks/<name>_mask.png",
                "Kaggle nikhilpandey360/chest-xray-masks-and-labels; point at the folder holding CXR_png/ and masks/ "
                "(the archive's 'Lung Segmentation')",
                "medrun.datasets.cxr_lung:fixture", ("segmentation", "xray")),
]

_HINT = "point at the folder that holds CXR_png/ and masks/ (Kaggle's 'Lung Segmentation'), or try --fixture"


@dataclass(frozen=True)
class Case:
    id: str  # image stem, e.g. CHNCXR_0001_0
    image: Path
    mask: Path


def check_layout(root: Path) -> None:
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"chest X-ray mask folder not found: {root}", fix=_HINT)
    missing = [p for p in ("CXR_png", "masks") if not (root / p).is_dir()]
    if missing:
        inner = [p for p in sorted(root.iterdir()) if p.is_dir() and (p / "CXR_png").is_dir()]
        raise DataError(f"{root} does not have the CXR masks layout: missing {', '.join(m + '/' for m in missing)}",
                        fix=f"use {inner[0]} instead" if inner else _HINT)


def read(root: Path, log=None) -> list[Case]:
    """Every image of ``CXR_png/`` that has a mask (``<name>.png`` or ``<name>_mask.png`` in ``masks/``)."""
    root = Path(root)
    check_layout(root)
    cases, skipped = [], 0
    images = sorted(p for p in (root / "CXR_png").glob("*.png") if not p.name.startswith("."))
    for img in images:
        hit = next((m for m in (root / "masks" / img.name, root / "masks" / f"{img.stem}_mask.png") if m.is_file()),
                   None)
        if hit is None:
            skipped += 1
        else:
            cases.append(Case(img.stem, img, hit))
    if not cases:
        raise DataError(f"no image in {root / 'CXR_png'} has a mask in {root / 'masks'}", fix=_HINT)
    if skipped and log:
        log(f"cxr: {skipped} of {len(images)} images have no lung mask and are left out")
    return cases


def load(case: Case, size: int | None = None):
    """(image uint8 H×W, mask uint8 H×W in {0, 1}), resized to size×size when given (bilinear / nearest). The
    mask must have the image's size and hold only 0 and 255 (or 0/1)."""
    import numpy as np
    from PIL import Image, UnidentifiedImageError

    def _open(p: Path, scale: bool = False):
        try:
            with Image.open(p) as im:
                return (to_8bit(im, p) if scale else im).convert("L")
        except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
            raise DataError(f"cannot read {p}: {e.__class__.__name__}: {e}", fix="replace or delete the file") from None

    image, mask = _open(case.image, scale=True), _open(case.mask)
    if mask.size != image.size:
        raise DataError(f"mask {case.mask} is {mask.size[0]}×{mask.size[1]} but its image is "
                        f"{image.size[0]}×{image.size[1]}", fix="a mask must have its image's size; re-export it")
    arr = np.asarray(mask)
    values = set(np.unique(arr).tolist())
    if not values <= {0, 255} and not values <= {0, 1}:
        raise DataError(f"mask {case.mask} has values other than 0 and 255 (e.g. {sorted(values - {0, 1, 255})[:5]})",
                        fix="masks must be binary PNGs (0 background, 255 lung)")
    if size is not None:
        image = image.resize((size, size), Image.BILINEAR)
        arr = np.asarray(Image.fromarray(arr).resize((size, size), Image.NEAREST))
    return np.asarray(image, dtype=np.uint8), (arr > 0).astype(np.uint8)


def fixture(out: Path, seed: int = 0, n: int = 24, size: int = 96) -> Path:
    """``n`` synthetic chest X-rays in the Kaggle layout: half Montgomery-named (mask ``<name>.png``), half
    Shenzhen-named (mask ``<name>_mask.png``), plus a 25th image without a mask (left out by the reader)."""
    import numpy as np
    from PIL import Image

    from .montgomery import synthetic_cxr

    rng = np.random.default_rng(seed)
    root = Path(out) / "Lung Segmentation"
    (root / "CXR_png").mkdir(parents=True, exist_ok=True)
    (root / "masks").mkdir(parents=True, exist_ok=True)
    for i in range(n + 1):
        img, left, right = synthetic_cxr(rng, size)
        if i % 2 == 0:
            name, mask_name = f"MCUCXR_{i // 2 + 1:04d}_{int(i % 3 == 0)}", f"MCUCXR_{i // 2 + 1:04d}_{int(i % 3 == 0)}"
        else:
            name = f"CHNCXR_{i // 2 + 1:04d}_{int(i % 3 == 0)}"
            mask_name = f"{name}_mask"
        Image.fromarray(img).save(root / "CXR_png" / f"{name}.png")
        if i < n:
            Image.fromarray((left | right).astype(np.uint8) * 255).save(root / "masks" / f"{mask_name}.png")
    return root
