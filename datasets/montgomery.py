"""Montgomery County chest X-ray set (NLM), lung segmentation.

Layout (as unpacked from the NLM archive ``NLM-MontgomeryCXRSet.zip``)::

    MontgomerySet/
        CXR_png/MCUCXR_0001_0.png ...            138 grayscale PNGs (4020×4892 or 4892×4020)
        ManualMask/leftMask/MCUCXR_0001_0.png    binary masks, same name and size
        ManualMask/rightMask/MCUCXR_0001_0.png
        ClinicalReadings/MCUCXR_0001_0.txt       (not read)

The lung mask of a case is leftMask OR rightMask. The last digit of the name is the label (0 normal, 1 TB).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from medrun.errors import DataError

from . import DatasetInfo
from .images import to_8bit

DATASETS = [
    DatasetInfo(
        "montgomery",
        "Montgomery County chest X-rays with lung masks (NLM)",
        "MontgomerySet/{CXR_png,ManualMask/leftMask,ManualMask/rightMask}/MCUCXR_*.png",
        "NLM (lhncbc.nlm.nih.gov, 'Tuberculosis Chest X-ray Image Data Sets'); point at the 'MontgomerySet' folder",
        "medrun.datasets.montgomery:fixture",
        ("segmentation", "xray"),
    ),
]

_HINT = "point at the MontgomerySet folder (it holds CXR_png/ and ManualMask/), or try --fixture"


@dataclass(frozen=True)
class Case:
    id: str  # file stem, e.g. MCUCXR_0001_0
    image: Path
    masks: tuple[Path, Path]  # left, right
    tb: int  # 0 normal, 1 tuberculosis (last digit of the name)


def check_layout(root: Path) -> None:
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"Montgomery set not found at {root}", fix=_HINT)
    need = [root / "CXR_png", root / "ManualMask" / "leftMask", root / "ManualMask" / "rightMask"]
    missing = [str(p.relative_to(root)) for p in need if not p.is_dir()]
    if missing:
        inner = root / "MontgomerySet"
        raise DataError(f"{root} does not have the Montgomery layout: missing {', '.join(missing)}",
                        fix=f"use {inner} instead" if inner.is_dir() else _HINT)


def read(root: Path) -> list[Case]:
    """Every case with both masks; a missing mask file is an error naming it."""
    root = Path(root)
    check_layout(root)
    cases = []
    for img in sorted((root / "CXR_png").glob("*.png")):
        masks = (root / "ManualMask" / "leftMask" / img.name, root / "ManualMask" / "rightMask" / img.name)
        for m in masks:
            if not m.is_file():
                raise DataError(f"mask missing for {img}: {m}", fix="restore the mask file or remove the image")
        cases.append(Case(img.stem, img, masks, int(img.stem[-1]) if img.stem[-1] in "01" else 0))
    if not cases:
        raise DataError(f"no PNG images in {root / 'CXR_png'}", fix=_HINT)
    return cases


def load(case: Case, size: int | None = None):
    """(image float32 H×W in [0, 1], mask uint8 H×W in {0, 1}), resized to size×size when given.

    The mask is checked against the image: same size, values 0 and 255 (or 0/1) only.
    """
    import numpy as np
    from PIL import Image, UnidentifiedImageError

    def _open(p: Path, scale: bool = False):
        try:
            with Image.open(p) as im:
                return (to_8bit(im, p) if scale else im).convert("L")
        except (UnidentifiedImageError, OSError) as e:
            raise DataError(f"cannot read image {p}: {e}", fix="re-extract the file from the archive") from None

    image = _open(case.image, scale=True)
    mask = np.zeros((image.height, image.width), dtype=bool)
    for p in case.masks:
        m = _open(p)
        if m.size != image.size:
            raise DataError(f"mask {p} is {m.size[0]}×{m.size[1]} but its image is {image.size[0]}×{image.size[1]}",
                            fix="masks must have their image's size")
        arr = np.asarray(m)
        if not set(np.unique(arr).tolist()) <= {0, 1, 255}:
            raise DataError(f"mask {p} has values other than 0 and 255", fix="masks must be binary PNGs")
        mask |= arr > 0
    if size is not None:
        image = image.resize((size, size), Image.BILINEAR)
        mask = np.asarray(Image.fromarray(mask.astype(np.uint8) * 255).resize((size, size), Image.NEAREST)) > 0
    return np.asarray(image, dtype=np.float32) / 255.0, mask.astype(np.uint8)


def synthetic_cxr(rng, size: int = 128):
    """A grayscale 'chest X-ray': two dark elliptical lungs on a brighter body, rib-like stripes, noise.
    Returns (image uint8, left mask bool, right mask bool)."""
    import numpy as np

    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    body = ((yy - size / 2) / (size * 0.48)) ** 2 + ((xx - size / 2) / (size * 0.44)) ** 2 <= 1
    masks = []
    for side in (-1, 1):  # image left is the patient's right
        cy = size * 0.5 + rng.normal(0, size * 0.02)
        cx = size * 0.5 + side * size * rng.uniform(0.18, 0.22)
        ry, rx = size * rng.uniform(0.26, 0.32), size * rng.uniform(0.12, 0.15)
        masks.append(((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1)
    lungs = masks[0] | masks[1]
    ribs = 12 * np.sin(yy / size * 2 * np.pi * 7 + rng.uniform(0, 6.28))
    img = np.where(body, 190.0, 30.0) - np.where(lungs, 110.0, 0.0) + ribs * body + rng.normal(0, 10, (size, size))
    return np.clip(img, 0, 255).astype(np.uint8), masks[1], masks[0]


def fixture(out: Path, seed: int = 0, n: int = 24, size: int = 128) -> Path:
    """``n`` synthetic cases in the Montgomery layout (names MCUCXR_0001_0.png …, every third one 'TB')."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(seed)
    root = Path(out) / "MontgomerySet"
    for sub in ("CXR_png", "ManualMask/leftMask", "ManualMask/rightMask"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    for i in range(n):
        name = f"MCUCXR_{i + 1:04d}_{int(i % 3 == 2)}.png"
        img, left, right = synthetic_cxr(rng, size)
        Image.fromarray(img).save(root / "CXR_png" / name)
        Image.fromarray(left.astype(np.uint8) * 255).save(root / "ManualMask" / "leftMask" / name)
        Image.fromarray(right.astype(np.uint8) * 255).save(root / "ManualMask" / "rightMask" / name)
    return root
