"""Shared pieces of the surgical-video readers (EndoVis17/18, CholecSeg8k): a frame record, checked image and
mask reading, and the equal-size check. Each dataset module decodes its own label format into one boolean mask
per class name."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from medrun.errors import DataError

from .images import to_8bit


@dataclass(frozen=True)
class Frame:
    id: str  # unique within the dataset, e.g. "video01/video01_00080/frame_80"
    video: str  # the group a split is made of (video or sequence)
    image: Path
    label: Path | None = None  # one label file (CholecSeg8k watershed mask, EndoVis18 colour labels)
    parts: tuple[tuple[str, Path], ...] = field(default_factory=tuple)  # EndoVis17: (class name, binary mask file)


def open_image(path: Path, mode: str, scale: bool = False):
    """A PIL image converted to ``mode``, or a DataError naming the file. ``scale``: an intensity image, whose
    16-bit or float values are brought to 8 bits by ``images.to_8bit`` first (labels are converted as they are)."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            return (to_8bit(im, path) if scale else im).convert(mode)
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
        raise DataError(f"cannot read image {path}: {e.__class__.__name__}: {e}",
                        fix="replace or delete the file (re-extract it from the archive), then run again") from None


def image_size(path: Path) -> tuple[int, int]:
    """(width, height) from the file header, without decoding the pixels."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            return im.size
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
        raise DataError(f"cannot read image {path}: {e.__class__.__name__}: {e}",
                        fix="replace or delete the file (re-extract it from the archive), then run again") from None


def check_same_size(paths, what: str = "frames") -> tuple[int, int]:
    """All images have the first one's size, or a DataError naming the first that differs (the pipeline
    resizes every frame the same way, so a stray size means a foreign or damaged file)."""
    paths = list(paths)
    if not paths:
        raise DataError(f"no {what} to check")
    first = image_size(paths[0])
    for p in paths[1:]:
        s = image_size(p)
        if s != first:
            raise DataError(f"{p} is {s[0]}×{s[1]} but the other {what} are {first[0]}×{first[1]} (first: {paths[0]})",
                            fix=f"images of mixed sizes: remove or resize {p.name} so every frame has one size")
    return first


def check_mask_size(mask_path: Path, mask_size: tuple[int, int], image_path: Path, image_size_: tuple[int, int]):
    if mask_size != image_size_:
        raise DataError(f"mask {mask_path} is {mask_size[0]}×{mask_size[1]} but its frame {image_path.name} is "
                        f"{image_size_[0]}×{image_size_[1]}", fix="masks must have their frame's size")
