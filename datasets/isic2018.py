"""ISIC 2018 Task 1 (lesion boundary segmentation), in its official layout or in the UNeXt repository's layout.

Official layout (as unpacked from the ISIC challenge archives)::

    <root>/
        ISIC2018_Task1-2_Training_Input/ISIC_0000000.jpg ...           2,594 dermoscopic JPEGs (varied sizes)
                                        ATTRIBUTION.txt, LICENSE.txt  (not read)
        ISIC2018_Task1_Training_GroundTruth/ISIC_0000000_segmentation.png   binary masks, 0 and 255
        ISIC2018_Task1-2_Validation_Input/ + ISIC2018_Task1_Validation_GroundTruth/    (100, same naming)
        ISIC2018_Task1-2_Test_Input/       + ISIC2018_Task1_Test_GroundTruth/          (1,000, same naming)

``part`` picks Training (default), Validation or Test.

UNeXt repository layout (``jeya-maria-jose/UNeXt-pytorch``, after its preprocessing)::

    inputs/<name>/images/<id>.png      (any image suffix)
    inputs/<name>/masks/0/<id>.png     binary masks, 0 and 255

Pass ``inputs/<name>`` as the root. A mask must have its image's size and hold only the values 0 and 255;
anything else is a ``DataError`` naming the mask file.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from medrun.errors import DataError

from . import DatasetInfo
from .images import to_8bit

DATASETS = [
    DatasetInfo(
        "isic2018",
        "ISIC 2018 Task 1 skin-lesion segmentation (official folders or the UNeXt repo layout)",
        "ISIC2018_Task1-2_Training_Input/ISIC_*.jpg + ISIC2018_Task1_Training_GroundTruth/ISIC_*_segmentation.png"
        " (or inputs/<name>/{images,masks/0}/*.png)",
        "ISIC challenge 2018 (challenge.isic-archive.com/data, Task 1); point at the folder holding the "
        "ISIC2018_Task1* folders",
        "medrun.datasets.isic2018:fixture",
        ("segmentation", "dermoscopy"),
    ),
]

PARTS = ("Training", "Validation", "Test")
LABELS = (0, 255)
_HINT = ("point at the folder that holds ISIC2018_Task1-2_Training_Input/ and ISIC2018_Task1_Training_GroundTruth/, "
         "or at inputs/<name>/ of the UNeXt layout (images/ and masks/0/); or try --fixture")
_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff")


@dataclass(frozen=True)
class Case:
    id: str  # e.g. ISIC_0000000
    image: Path
    mask: Path


def official_dirs(root: Path, part: str = "Training") -> tuple[Path, Path]:
    return root / f"ISIC2018_Task1-2_{part}_Input", root / f"ISIC2018_Task1_{part}_GroundTruth"


def layout(root: Path, part: str = "Training") -> str:
    """'official' or 'unext'; a DataError naming the folder and what is missing otherwise."""
    root = Path(root)
    if part not in PARTS:
        raise DataError(f"unknown ISIC 2018 part '{part}'", fix=f"use one of {', '.join(PARTS)}")
    if not root.is_dir():
        raise DataError(f"ISIC 2018 folder not found: {root}", fix=_HINT)
    images, masks = official_dirs(root, part)
    if images.is_dir() or masks.is_dir():
        missing = [p.name for p in (images, masks) if not p.is_dir()]
        if missing:
            raise DataError(f"{root} has only half of the ISIC 2018 {part} layout: missing {missing[0]}",
                            fix=f"unpack {missing[0]}.zip next to the other folder")
        return "official"
    if (root / "images").is_dir() and (root / "masks" / "0").is_dir():
        return "unext"
    if (root / "images").is_dir():
        raise DataError(
            f"{root} has images/ but no masks/0/ (the UNeXt layout)", fix="put the binary masks in masks/0/"
        )
    inner = [p for p in sorted(root.iterdir()) if p.is_dir() and official_dirs(p, part)[0].is_dir()]
    inner += [p for p in sorted(root.glob("*/")) if (p / "images").is_dir() and (p / "masks" / "0").is_dir()]
    if inner:
        raise DataError(f"{root} is one level above the ISIC 2018 folder", fix=f"use {inner[0]} instead")
    found = ", ".join(sorted(p.name for p in root.iterdir())[:5]) or "nothing"
    raise DataError(f"{root} does not have the ISIC 2018 layout (found: {found})", fix=_HINT)


def _images(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in _SUFFIXES and not p.name.startswith("."))


def read(root: Path, part: str = "Training") -> list[Case]:
    """Every (image, mask) pair of the layout; an image without its mask is an error naming the mask."""
    root = Path(root)
    kind = layout(root, part)
    if kind == "official":
        img_dir, mask_dir = official_dirs(root, part)
        pairs = [(p, mask_dir / f"{p.stem}_segmentation.png") for p in _images(img_dir)]
    else:
        img_dir, mask_dir = root / "images", root / "masks" / "0"
        pairs = []
        for p in _images(img_dir):
            hits = [mask_dir / f"{p.stem}{s}" for s in (".png", p.suffix)]
            pairs.append((p, next((h for h in hits if h.is_file()), hits[0])))
    cases = []
    for img, mask in pairs:
        if not mask.is_file():
            raise DataError(f"mask missing for {img}: {mask}", fix="restore the mask file or remove the image")
        cases.append(Case(img.stem, img, mask))
    if not cases:
        raise DataError(f"no images in {img_dir}", fix=_HINT)
    return cases


def load(case: Case, size: int | None = None):
    """(image uint8 H×W×3, mask uint8 H×W in {0, 1}), each resized to size×size when given (bilinear / nearest).

    The mask is checked against its image first: same size, values 0 and 255 only."""
    import numpy as np
    from PIL import Image, UnidentifiedImageError

    def _open(p: Path, mode: str, scale: bool = False):
        try:
            with Image.open(p) as im:
                return (to_8bit(im, p) if scale else im).convert(mode)
        except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
            raise DataError(f"cannot read {p}: {e.__class__.__name__}: {e}", fix="replace or delete the file") from None

    image, mask = _open(case.image, "RGB", scale=True), _open(case.mask, "L")
    if mask.size != image.size:
        raise DataError(f"mask {case.mask} is {mask.size[0]}×{mask.size[1]} but its image is "
                        f"{image.size[0]}×{image.size[1]}", fix="a mask must have its image's size; re-export it")
    arr = np.asarray(mask)
    bad = sorted(set(np.unique(arr).tolist()) - set(LABELS))
    if bad:
        shown = ", ".join(map(str, bad[:5])) + (" …" if len(bad) > 5 else "")
        raise DataError(f"mask {case.mask} has values other than 0 and 255 ({shown})",
                        fix="masks must be binary PNGs (0 background, 255 lesion); a JPEG-saved mask is not")
    if size is not None:
        image = image.resize((size, size), Image.BILINEAR)
        arr = np.asarray(Image.fromarray(arr).resize((size, size), Image.NEAREST))
    return np.asarray(image, dtype=np.uint8), (arr > 0).astype(np.uint8)


# -- fixture ----------------------------------------------------------------------------------------------------
def synthetic_lesion(rng, size: int = 96):
    """A 'dermoscopic image': skin tone with noise and an irregular, blurred dark-brown blob.
    Returns (image uint8 H×W×3, mask bool H×W); the lesion covers roughly 10–25 % of the image."""
    import numpy as np
    from PIL import Image, ImageFilter

    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    cy, cx = size * rng.uniform(0.38, 0.62, 2)
    ry, rx = size * rng.uniform(0.17, 0.27, 2)
    theta = np.arctan2((yy - cy) / ry, (xx - cx) / rx)
    radius = np.hypot((yy - cy) / ry, (xx - cx) / rx)
    wobble = 1 + sum(rng.uniform(0.03, 0.1) * np.cos(k * theta + rng.uniform(0, 6.28)) for k in (2, 3, 5))
    mask = radius <= wobble
    skin = np.array([224, 172, 140], np.float32) * rng.uniform(0.85, 1.05)
    lesion = np.array([95, 55, 35], np.float32) * rng.uniform(0.8, 1.2)
    soft = np.asarray(Image.fromarray(mask.astype(np.uint8) * 255).filter(ImageFilter.GaussianBlur(1.5)),
                      np.float32)[..., None] / 255
    img = skin * (1 - soft) + lesion * soft + rng.normal(0, 12, (size, size, 3))
    img += 15 * np.sin(xx / size * 6.28 * rng.uniform(0.5, 1.5))[..., None]  # uneven lighting
    return np.clip(img, 0, 255).astype(np.uint8), mask


def fixture(out: Path, seed: int = 0, n: int = 24, size: int = 96, layout: str = "official") -> Path:
    """``n`` synthetic cases in the official Training layout (ISIC_00000NN.jpg + ..._segmentation.png 0/255, with
    the archive's ATTRIBUTION.txt and LICENSE.txt beside the images), or with ``layout="unext"`` in
    ``inputs/isic/{images,masks/0}/`` as PNGs."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(seed)
    out = Path(out)
    if layout == "official":
        root = out / "ISIC2018"
        img_dir, mask_dir = official_dirs(root)
        img_dir.mkdir(parents=True, exist_ok=True)
        mask_dir.mkdir(parents=True, exist_ok=True)
        (img_dir / "ATTRIBUTION.txt").write_text("synthetic fixture written by medrun; no real images\n")
        (img_dir / "LICENSE.txt").write_text("CC-0 (synthetic)\n")
    elif layout == "unext":
        root = out / "inputs" / "isic"
        img_dir, mask_dir = root / "images", root / "masks" / "0"
        img_dir.mkdir(parents=True, exist_ok=True)
        mask_dir.mkdir(parents=True, exist_ok=True)
    else:
        raise ValueError(f"layout must be 'official' or 'unext', got {layout!r}")
    for i in range(n):
        name = f"ISIC_{i:07d}"
        img, mask = synthetic_lesion(rng, size)
        m = Image.fromarray(mask.astype(np.uint8) * 255)
        if layout == "official":
            Image.fromarray(img).save(img_dir / f"{name}.jpg", quality=92)
            m.save(mask_dir / f"{name}_segmentation.png")
        else:
            Image.fromarray(img).save(img_dir / f"{name}.png")
            m.save(mask_dir / f"{name}.png")
    return root
