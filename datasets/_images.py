"""Shared helpers for image-folder datasets: reading with a clear error, and layout checks."""

from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path

from medrun.errors import DataError

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff")


def list_images(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and not p.name.startswith("."))


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
    """``PIL.Image.open`` (and decode, unless only the header is wanted) whose failure is a DataError naming the file."""
    from PIL import Image, UnidentifiedImageError

    try:
        im = Image.open(path)
        if decode:
            im.load()
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
        raise DataError(f"cannot read image {path}: {e.__class__.__name__}: {e}", fix=fix) from None
    with im:
        yield im


def read_rgb(path: Path, size: int):
    """HxWx3 uint8 array resized to size×size (bilinear), or a DataError naming the file."""
    import numpy as np
    from PIL import Image

    with open_image(path) as im:
        return np.asarray(im.convert("RGB").resize((size, size), Image.BILINEAR), dtype=np.uint8)
