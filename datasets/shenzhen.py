"""Shenzhen No.3 Hospital chest X-ray set (NLM) with third-party lung masks.

Layout: the NLM archive ``ChinaSet_AllFiles.zip`` gives ``ChinaSet_AllFiles/CXR_png/CHNCXR_0001_0.png`` … (662
grayscale PNGs, about 3000×3000; last digit 0 normal, 1 TB). NLM ships no lung masks for it; the widely used
third-party release (Stirenko et al. 2018, 566 masks) names them ``CHNCXR_0001_0_mask.png``. Put them in a ``mask/``
folder beside ``CXR_png/``::

    ChinaSet_AllFiles/
        CXR_png/CHNCXR_0001_0.png ...
        mask/CHNCXR_0001_0_mask.png ...      (``CHNCXR_0001_0.png`` is accepted too)

Images without a mask are left out (the release covers 566 of the 662); the reader says how many.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from medrun.errors import DataError

from . import DatasetInfo
from .images import to_8bit

DATASETS = [
    DatasetInfo("shenzhen", "Shenzhen chest X-rays (NLM) with third-party lung masks",
                "ChinaSet_AllFiles/{CXR_png/CHNCXR_*.png,mask/CHNCXR_*_mask.png}",
                "NLM (lhncbc.nlm.nih.gov, 'Tuberculosis Chest X-ray Image Data Sets') for the images; lung masks from "
                "the third-party release (Stirenko et al. 2018) in mask/; point at the 'ChinaSet_AllFiles' folder",
                "medrun.datasets.shenzhen:fixture", ("segmentation", "xray")),
]

_HINT = "point at the folder that holds CXR_png/ and mask/ (the lung masks), or try --fixture"


@dataclass(frozen=True)
class Case:
    id: str  # file stem, e.g. CHNCXR_0001_0
    image: Path
    mask: Path
    tb: int


def check_layout(root: Path) -> None:
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"Shenzhen set not found at {root}", fix=_HINT)
    missing = [p for p in ("CXR_png", "mask") if not (root / p).is_dir()]
    if missing:
        inner = root / "ChinaSet_AllFiles"
        raise DataError(f"{root} does not have the Shenzhen layout: missing {', '.join(missing)}",
                        fix=f"use {inner} instead" if inner.is_dir() else _HINT)


def read(root: Path, log=None) -> list[Case]:
    root = Path(root)
    check_layout(root)
    cases, skipped = [], 0
    for img in sorted((root / "CXR_png").glob("*.png")):
        for name in (f"{img.stem}_mask.png", img.name):
            mask = root / "mask" / name
            if mask.is_file():
                cases.append(Case(img.stem, img, mask, int(img.stem[-1]) if img.stem[-1] in "01" else 0))
                break
        else:
            skipped += 1
    if not cases:
        raise DataError(f"no image in {root / 'CXR_png'} has a mask in {root / 'mask'}", fix=_HINT)
    if skipped and log:
        log(f"shenzhen: {skipped} images have no lung mask and are left out")
    return cases


def load(case: Case):
    """(image float32 H×W in [0, 1], mask uint8 H×W in {0, 1}); the mask must have the image's size."""
    import numpy as np
    from PIL import Image, UnidentifiedImageError

    def _open(p: Path, scale: bool = False):
        try:
            with Image.open(p) as im:
                return (to_8bit(im, p) if scale else im).convert("L")
        except (UnidentifiedImageError, OSError) as e:
            raise DataError(f"cannot read image {p}: {e}", fix="re-extract the file from the archive") from None

    image, mask = _open(case.image, scale=True), _open(case.mask)
    if mask.size != image.size:
        raise DataError(f"mask {case.mask} is {mask.size[0]}×{mask.size[1]} but its image is "
                        f"{image.size[0]}×{image.size[1]}", fix="masks must have their image's size")
    return np.asarray(image, dtype=np.float32) / 255.0, (np.asarray(mask) > 127).astype(np.uint8)


def fixture(out: Path, seed: int = 0, n: int = 20, size: int = 128) -> Path:
    """``n`` synthetic cases in the Shenzhen layout (every fifth without a mask, as in the real release)."""
    import numpy as np
    from PIL import Image

    from .montgomery import synthetic_cxr

    rng = np.random.default_rng(seed + 1)
    root = Path(out) / "ChinaSet_AllFiles"
    (root / "CXR_png").mkdir(parents=True, exist_ok=True)
    (root / "mask").mkdir(parents=True, exist_ok=True)
    for i in range(n):
        stem = f"CHNCXR_{i + 1:04d}_{int(i % 2)}"
        img, left, right = synthetic_cxr(rng, size)
        Image.fromarray(img).save(root / "CXR_png" / f"{stem}.png")
        if i % 5 != 4:
            Image.fromarray((left | right).astype(np.uint8) * 255).save(root / "mask" / f"{stem}_mask.png")
    return root
