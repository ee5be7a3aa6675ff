"""Shared pieces of the 2D breast-ultrasound datasets (BUSI, UDIAT): a case record, loading an image with its
mask(s) under the layout's rules, and the synthetic lesion images their fixtures are drawn from."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from medrun.errors import DataError

from .images import to_8bit

CLASSES = ("benign", "malignant")  # label 0, 1 (malignant is the positive class)


@dataclass(frozen=True)
class Case:
    id: str  # e.g. "benign (12)" or "000012"
    image: Path
    masks: tuple[Path, ...]  # OR-ed together
    label: int  # 0 benign, 1 malignant


def _open_gray(p: Path, scale: bool = False):
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(p) as im:
            return (to_8bit(im, p) if scale else im).convert("L")
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
        raise DataError(f"cannot read image {p}: {e.__class__.__name__}: {e}",
                        fix="replace or delete the file, then run again") from None


def load(case: Case, size: int | None = None):
    """(image float32 H×W in [0, 1], mask uint8 H×W in {0, 1}), resized to size×size when given (bilinear for
    the image, nearest for the mask). Every mask must have its image's size and hold only 0 and 255 (or 0/1);
    several masks of one image are OR-ed."""
    import numpy as np
    from PIL import Image

    image = _open_gray(case.image, scale=True)
    mask = np.zeros((image.height, image.width), dtype=bool)
    for p in case.masks:
        m = _open_gray(p)
        if m.size != image.size:
            raise DataError(
                f"mask {p} is {m.size[0]}×{m.size[1]} but its image {case.image.name} is "
                f"{image.size[0]}×{image.size[1]}",
                fix="a mask must have its image's size; fix or remove the pair",
            )
        arr = np.asarray(m)
        values = set(np.unique(arr).tolist())
        if not values <= {0, 255} and not values <= {0, 1}:
            odd = sorted(values - {0, 1, 255})[:5]
            raise DataError(f"mask {p} has values other than 0 and 255 (e.g. {odd})",
                            fix="masks must be binary PNGs (0 background, 255 lesion); fix or remove the pair")
        mask |= arr > 0
    if size is not None:
        image = image.resize((size, size), Image.BILINEAR)
        mask = np.asarray(Image.fromarray(mask.astype(np.uint8) * 255).resize((size, size), Image.NEAREST)) > 0
    return np.asarray(image, dtype=np.float32) / 255.0, mask.astype(np.uint8)


# -- fixtures -----------------------------------------------------------------------------------------------
def synthetic_lesion(rng, malignant: bool, size: int = 64):
    """A grey-scale 'ultrasound' image: Rayleigh speckle over a brighter tissue band, with a dark (hypoechoic)
    lesion. Benign: a smooth ellipse with a sharp margin. Malignant: a spiculated star polygon with a blurred
    margin and a posterior acoustic shadow beneath it. Returns (image uint8 H×W, lesion mask bool H×W)."""
    import numpy as np
    from scipy import ndimage
    from skimage.draw import polygon

    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    cy, cx = size * rng.uniform(0.4, 0.6), size * rng.uniform(0.35, 0.65)
    if malignant:
        spikes = int(rng.integers(7, 11))
        angles = np.linspace(0, 2 * np.pi, 2 * spikes, endpoint=False) + rng.uniform(0, np.pi)
        r_out, r_in = size * rng.uniform(0.2, 0.26), size * rng.uniform(0.09, 0.12)
        radii = np.where(np.arange(2 * spikes) % 2 == 0, r_out, r_in) * rng.uniform(0.85, 1.15, 2 * spikes)
        rr, cc = polygon(cy + radii * np.sin(angles), cx + radii * np.cos(angles), (size, size))
        mask = np.zeros((size, size), dtype=bool)
        mask[rr, cc] = True
    else:
        ry, rx = size * rng.uniform(0.1, 0.15), size * rng.uniform(0.15, 0.22)
        theta = rng.uniform(-0.3, 0.3)
        dy, dx = yy - cy, xx - cx
        u, v = dx * np.cos(theta) + dy * np.sin(theta), -dx * np.sin(theta) + dy * np.cos(theta)
        mask = (u / rx) ** 2 + (v / ry) ** 2 <= 1
    tissue = 0.55 + 0.25 * np.exp(-((yy - size * 0.3) / (size * 0.25)) ** 2)  # a brighter band near the top
    echo = np.where(mask, 0.12, 1.0).astype(np.float32)
    if malignant:
        echo = ndimage.gaussian_filter(echo, 1.5)  # blurred margin
        cols = mask.any(axis=0)
        below = (yy > cy + size * 0.15) & cols[None, :]
        echo = np.where(below & ~mask, echo * 0.45, echo)  # posterior acoustic shadow
    speckle = rng.rayleigh(1.0, (size, size)) / 1.25
    img = 255 * np.clip(tissue * echo * speckle * 0.85, 0, 1)
    return img.astype(np.uint8), mask
