"""A generic folder of 2-D image/mask pairs: a researcher's own segmentation data, and the layout for sets without a
public one (unet-lrp's private NDT XCT slices of carbon-fibre-reinforced polymer, pores as foreground).

Layout::

    <root>/
        images/<name>.<ext>   any 2-D image medrun reads (datasets/imageio.py): PNG/JPEG/TIFF in 8 or 16 bits or
                              float, or a DICOM file; grey or RGB
        masks/<name>.<ext>    binary masks (0 and 255, or 0 and 1) of the same name (any image suffix) and size

Every image needs its mask. Images are read by ``datasets.imageio`` and scaled to [0, 1] by the manifest's
``dataset.intensity`` (the stored type's range by default), so a 16-bit scan keeps its 65,536 levels.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from medrun.errors import DataError

from . import DatasetInfo
from .imageio import DICOM_SUFFIXES, IMAGE_SUFFIXES, stem, suffix, to_unit
from .imageio import read as read_image

DATASETS = [
    DatasetInfo("pairs", "Your own 2-D image/mask pairs (also the private NDT pore slices of the unet-lrp paper)",
                "<root>/{images,masks}/<name>.<png|tif|jpg|dcm>", "your own data: put images in images/ and masks of "
                "the same name in masks/; point at the folder holding both", "medrun.datasets.pairs:fixture",
                ("segmentation",)),
]

_HINT = "point at the folder that holds images/ and masks/ (same file names), or try --fixture"
IMAGES = (*IMAGE_SUFFIXES, *DICOM_SUFFIXES)


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


def _by_stem(folder: Path) -> dict[str, Path]:
    return {stem(f): f for f in sorted(folder.iterdir()) if not f.name.startswith(".") and suffix(f) in IMAGES}


def read(root: Path) -> list[Case]:
    root = Path(root)
    check_layout(root)
    masks, cases = _by_stem(root / "masks"), []
    for name, img in _by_stem(root / "images").items():
        if name not in masks:
            raise DataError(f"mask missing for {img}: no masks/{name}.*",
                            fix="add the mask (same file name) or remove the image")
        cases.append(Case(name, img, masks[name]))
    if not cases:
        raise DataError(f"no images in {root / 'images'} (looked for {', '.join(IMAGES)})", fix=_HINT)
    return cases


def load_image(path: Path, channels: int = 1, intensity=None):
    """One 2-D image → float32 H×W (grey; RGB by ITU-R 601 luma, as PIL's "L") or H×W×3 in [0, 1]."""
    import numpy as np

    unit = to_unit(read_image(path), intensity)
    unit = unit[..., 0] if unit.ndim == 3 and unit.shape[-1] == 1 else unit[..., :3] if unit.ndim == 3 else unit
    if unit.ndim != 2 and not (unit.ndim == 3 and unit.shape[-1] == 3):
        raise DataError(f"{path} has shape {unit.shape}, not a 2-D image", fix="give one 2-D slice per file")
    if channels == 1:
        return unit if unit.ndim == 2 else (unit @ np.array([0.299, 0.587, 0.114], np.float32)).astype(np.float32)
    return np.repeat(unit[..., None], 3, axis=-1) if unit.ndim == 2 else unit


def load(case: Case, channels: int = 1, intensity=None):
    """(image float32 H×W (or H×W×3) in [0, 1], mask uint8 H×W in {0, 1}); mask checked against the image."""
    import numpy as np

    image = load_image(case.image, channels, intensity)
    arr = read_image(case.mask).array
    arr = arr[..., 0] if arr.ndim == 3 else arr
    if arr.shape != image.shape[:2]:
        raise DataError(f"mask {case.mask} is {arr.shape[1]}×{arr.shape[0]} but its image is "
                        f"{image.shape[1]}×{image.shape[0]}", fix="masks must have their image's size")
    if not set(np.unique(arr).tolist()) <= {0, 1, 255}:
        raise DataError(f"mask {case.mask} has values other than 0 and 255", fix="masks must be binary PNGs")
    return image, (arr > 0).astype(np.uint8)


def to_rgb8(image, size: int | None = None):
    """A [0, 1] image from :func:`load_image` → uint8 H×W×3 (grey repeated), resized to size×size (bilinear) when
    given: the form the 2-D segmenters that read 8-bit RGB datasets (ISIC, BUSI) take."""
    import numpy as np
    from PIL import Image

    rgb = np.rint(np.clip(image, 0, 1) * 255).astype(np.uint8)
    rgb = np.repeat(rgb[..., None], 3, axis=-1) if rgb.ndim == 2 else rgb
    return np.asarray(Image.fromarray(rgb).resize((size, size), Image.BILINEAR)) if size else rgb


def load_rgb8(case: Case, size: int | None = None, intensity=None):
    """(image uint8 size×size×3, mask uint8 size×size in {0, 1}; nearest): :func:`load`, then :func:`to_rgb8`."""
    import numpy as np
    from PIL import Image

    image, mask = load(case, 3, intensity)
    if size:
        mask = np.asarray(Image.fromarray(mask).resize((size, size), Image.NEAREST))
    return to_rgb8(image, size), mask


def fixture(out: Path, seed: int = 0, n: int = 16, size: int = 96) -> Path:
    """``n`` synthetic 'XCT slices': fibre-like stripes and noise with 3–6 dark elliptical pores (the masks), in the
    formats a lab exports: 16-bit PNG (slices 0, 3, …), float TIFF (1, 4, …: attenuation-like values in −1…3) and
    DICOM with 12-bit values (2, 5, …); masks are 8-bit PNG."""
    import numpy as np
    import tifffile
    from PIL import Image

    from .imageio import write_dicom_slice

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
        unit = np.clip(np.where(mask, 50 + rng.normal(0, 12, (size, size)), img), 0, 255) / 255.0
        name = f"slice_{i:04d}"
        if i % 3 == 0:
            Image.fromarray(np.rint(unit * 65535).astype(np.uint16)).save(root / "images" / f"{name}.png")
        elif i % 3 == 1:
            tifffile.imwrite(root / "images" / f"{name}.tif", (unit * 4 - 1).astype(np.float32))
        else:
            write_dicom_slice(root / "images" / f"{name}.dcm", np.rint(unit * 4095))
        Image.fromarray(mask.astype(np.uint8) * 255).save(root / "masks" / f"{name}.png")
    return root
