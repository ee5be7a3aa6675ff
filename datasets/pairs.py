"""A generic folder of image/mask PNG pairs: the layout for sets without a public one (unet-lrp's private NDT
XCT slices of carbon-fibre-reinforced polymer, pores as foreground).

Layout::

    <root>/
        images/<name>.png     grayscale (or RGB) images
        masks/<name>.png      binary masks (0 and 255, or 0 and 1), same name and size

Every image needs its mask.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from medrun.errors import DataError

from . import DatasetInfo
from .images import to_8bit

DATASETS = [
    DatasetInfo("pairs", "A folder of image/mask PNG pairs (e.g. the private NDT pore slices of the unet-lrp paper)",
                "<root>/{images,masks}/<name>.png", "your own data: put images in images/ and masks of the same "
                "name in masks/; point at the folder holding both", "medrun.datasets.pairs:fixture",
                ("segmentation",)),
]

_HINT = "point at the folder that holds images/ and masks/ (same file names), or try --fixture"


@dataclass(frozen=True)
class Case:
    id: str
    image: Path
    mask: Path


def check_layout(root: Path) -> None:
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"image/mask folder not found at {root}", fix=_HINT)
    missing = [p for p in ("images", "masks") if not (root / p).is_dir()]
    if missing:
        raise DataError(f"{root} does not have the image/mask pair layout: missing {', '.join(missing)}", fix=_HINT)


def read(root: Path) -> list[Case]:
    root = Path(root)
    check_layout(root)
    cases = []
    for img in sorted((root / "images").glob("*.png")):
        mask = root / "masks" / img.name
        if not mask.is_file():
            raise DataError(f"mask missing for {img}: {mask}", fix="add the mask (same file name) or remove the image")
        cases.append(Case(img.stem, img, mask))
    if not cases:
        raise DataError(f"no PNG images in {root / 'images'}", fix=_HINT)
    return cases


def load(case: Case, channels: int = 1):
    """(image float32 H×W (or H×W×3) in [0, 1], mask uint8 H×W in {0, 1}); mask checked against the image."""
    import numpy as np
    from PIL import Image, UnidentifiedImageError

    def _open(p: Path, mode: str, scale: bool = False):
        try:
            with Image.open(p) as im:
                return (to_8bit(im, p) if scale else im).convert(mode)
        except (UnidentifiedImageError, OSError) as e:
            raise DataError(f"cannot read image {p}: {e}", fix="replace the file with a readable PNG") from None

    image, mask = _open(case.image, "L" if channels == 1 else "RGB", scale=True), _open(case.mask, "L")
    if mask.size != image.size:
        raise DataError(f"mask {case.mask} is {mask.size[0]}×{mask.size[1]} but its image is "
                        f"{image.size[0]}×{image.size[1]}", fix="masks must have their image's size")
    arr = np.asarray(mask)
    if not set(np.unique(arr).tolist()) <= {0, 1, 255}:
        raise DataError(f"mask {case.mask} has values other than 0 and 255", fix="masks must be binary PNGs")
    return np.asarray(image, dtype=np.float32) / 255.0, (arr > 0).astype(np.uint8)


def fixture(out: Path, seed: int = 0, n: int = 16, size: int = 96) -> Path:
    """``n`` synthetic 'XCT slices': fibre-like stripes and noise with 3–6 dark elliptical pores (the masks)."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(seed + 2)
    root = Path(out) / "ndt"
    (root / "images").mkdir(parents=True, exist_ok=True)
    (root / "masks").mkdir(parents=True, exist_ok=True)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    for i in range(n):
        angle = rng.uniform(0, np.pi)
        img = 150 + 25 * np.sin((xx * np.cos(angle) + yy * np.sin(angle)) / 2.5) + rng.normal(0, 12, (size, size))
        mask = np.zeros((size, size), bool)
        for _ in range(int(rng.integers(3, 7))):
            cy, cx = rng.uniform(0.1, 0.9, 2) * size
            ry, rx = rng.uniform(3, 7), rng.uniform(2.5, 5)
            mask |= ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1
        img = np.where(mask, 50 + rng.normal(0, 12, (size, size)), img)
        Image.fromarray(np.clip(img, 0, 255).astype(np.uint8)).save(root / "images" / f"slice_{i:04d}.png")
        Image.fromarray(mask.astype(np.uint8) * 255).save(root / "masks" / f"slice_{i:04d}.png")
    return root
