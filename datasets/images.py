"""Shared helpers for image-folder datasets: reading with a clear error, and layout checks."""

from __future__ import annotations

import warnings
from contextlib import contextmanager
from pathlib import Path

from medrun.errors import DataError

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff")
HIGH_DEPTH_MODES = ("I;16", "I;16L", "I;16B", "I;16N", "I", "F")  # PIL modes whose values exceed 0–255


class DataWarning(UserWarning):
    """Something in the data that does not stop a run but that its user should know about (an empty class folder)."""


def list_images(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and not p.name.startswith("."))


def list_class_images(folder: Path, what: str = "class folder") -> list[Path]:
    """``list_images`` of one class's folder, with a DataWarning naming it when it holds no image: the class then
    has no samples (a failed copy, a wrong folder), which used to train silently."""
    files = list_images(folder)
    if not files:
        warn_empty(folder, what)
    return files


def warn_empty(folder: Path, what: str = "class folder") -> None:
    warnings.warn(f"{what} {folder} holds no images: that class has no samples here", DataWarning, stacklevel=3)


def require_class_folders(root: Path, classes: list[str], *, what: str, hint: str) -> None:
    """Raise a DataError that says where we looked, what we expected and how to point at the right folder."""
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"{what} not found at {root}", fix=hint)
    present = sorted(p.name for p in root.iterdir() if p.is_dir())
    missing = [c for c in classes if c not in present]
    if missing:
        inner = [p for p in root.iterdir() if p.is_dir() and all((p / c).is_dir() for c in classes)]
        if inner:
            raise DataError(f"{root} is one level above the {what} folder", fix=f"use {inner[0]} instead")
        found = ", ".join(present[:6]) + (f" and {len(present) - 6} more" if len(present) > 6 else "")
        raise DataError(f"{root} does not have the {what} layout: missing folder(s) {', '.join(missing)}"
                        f" (found: {found or 'nothing'})", fix=hint)


@contextmanager
def open_image(path: Path, decode: bool = True, fix: str = "replace or delete the file, then run again"):
    """``PIL.Image.open`` (and decode, unless only the header is wanted); a failure is a DataError naming the file."""
    from PIL import Image, UnidentifiedImageError

    try:
        im = Image.open(path)
        if decode:
            im.load()
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
        raise DataError(f"cannot read image {path}: {e.__class__.__name__}: {e}", fix=fix) from None
    with im:
        yield im


def to_8bit(im, path: Path | None = None):
    """An 8-bit view of a high-bit-depth image, so that ``convert("L"/"RGB")`` does not clip it: PIL clips every
    value above 255, which left a 16-bit PNG 82 % white. Other modes are returned unchanged.

    Convention: the image's own bit depth, never its content, where the mode has one. ``I;16*`` (16-bit PNG/TIFF)
    and ``I`` holding only 0–65535 are unsigned 16-bit data: value / 257 maps 0–65535 onto 0–255 exactly (a
    12-bit scan stays as dark as its 16-bit container says). ``I`` with values outside 0–65535 and ``F`` (float)
    have no fixed range: they are min-max scaled per image (a constant image becomes 0). Values are rounded; a
    non-finite ``F`` value is a DataError naming the file and its mode.
    """
    import numpy as np
    from PIL import Image

    if im.mode not in HIGH_DEPTH_MODES:
        return im
    arr = np.asarray(im).astype(np.float64)
    if not np.isfinite(arr).all():
        raise DataError(f"image {path or ''} (PIL mode {im.mode}) holds NaN or infinite values",
                        fix="write it as 8- or 16-bit integers")
    lo, hi = (float(arr.min()), float(arr.max())) if arr.size else (0.0, 0.0)
    if im.mode.startswith("I;16") or (im.mode == "I" and lo >= 0 and hi <= 65535):
        scaled = arr / 257.0
    else:
        scaled = (arr - lo) * (255.0 / (hi - lo)) if hi > lo else np.zeros_like(arr)
    return Image.fromarray(np.rint(scaled).astype(np.uint8))  # 2-D uint8: mode L


def read_rgb(path: Path, size: int, intensity=None):
    """HxWx3 uint8 array resized to size×size (bilinear), or a DataError naming the file. 16-bit and float images
    are first brought to 8 bits by ``to_8bit``. With an ``intensity`` (``imageio.Intensity``, the manifest's
    ``dataset.intensity``), and for DICOM and NIfTI files, the file is read by ``imageio`` and scaled by it."""
    import numpy as np
    from PIL import Image

    if intensity is not None or Path(path).suffix.lower() not in IMAGE_SUFFIXES:
        from .imageio import read, to_unit

        img = read(path)
        unit = to_unit(img, intensity)
        unit = unit.squeeze(-1) if unit.ndim == 3 and unit.shape[-1] == 1 else unit
        if unit.ndim != 2 and not (unit.ndim == 3 and unit.shape[-1] in (3, 4) and not img.volume):
            raise DataError(f"{path} is a volume of shape {img.array.shape}, not a 2-D image",
                            fix="give a 2-D image (one slice), or use a pipeline for volumes")
        im = Image.fromarray(np.rint(unit * 255).astype(np.uint8))
        return np.asarray(im.convert("RGB").resize((size, size), Image.BILINEAR), dtype=np.uint8)
    with open_image(path) as im:
        return np.asarray(to_8bit(im, path).convert("RGB").resize((size, size), Image.BILINEAR), dtype=np.uint8)
