"""``imagefolder``: a researcher's own classification images, one folder per class — the layout most labs already
have, and what torchvision and Keras call an image folder.

Layout::

    <root>/<class name>/<image>     any file medrun reads (datasets/imageio.py): PNG/JPEG/TIFF 8- or 16-bit or
                                    float, a DICOM file, NIfTI; class names are the folder names, sorted

Hidden files and folders are skipped; a file of another kind (notes, spreadsheets) is skipped with a line saying
so, an empty class folder is a DataWarning, fewer than two classes a DataError.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from pydantic import BaseModel, Field, field_validator

from medrun.errors import DataError

from . import DatasetInfo
from .imageio import READABLE, Intensity, suffix, write_dicom_slice
from .images import warn_empty

DATASETS = [
    DatasetInfo("imagefolder", "Your own classification images, one folder per class",
                "<root>/<class>/<image> (PNG, JPEG, TIFF 8/16-bit or float, DICOM, NIfTI)",
                "your own data: put each class's images in a folder named after the class; point at the folder "
                "holding the class folders", "medrun.datasets.imagefolder:fixture", ("classification",)),
]

_HINT = "point at the folder holding one sub-folder per class (e.g. data/normal/, data/tumour/), or try --fixture"


@dataclass(frozen=True)
class Sample:
    path: Path
    label: int


class Fields(BaseModel):
    """The fields own images add to a pipeline's dataset section: ``class Data(imagefolder.Fields, DatasetSection)``.
    Declared once here so that every classification pipeline reads own images with the same options."""

    intensity: Intensity | None = Field(None, description="how stored values become 0–255 (window, percentile or "
                                        "scale; datasets/imageio.py); default: 8-bit as is, 16-bit /257, float and "
                                        "DICOM min–max per image")
    classes: list[str] | None = Field(None, min_length=2, description="imagefolder: the class folders to use, in "
                                      "label order (default: every class folder, sorted by name)")

    @field_validator("classes")
    @classmethod
    def _distinct(cls, v):
        if v is not None and len(set(v)) < len(v):
            raise ValueError("dataset.classes names a folder twice")
        return v


def check_layout(root: Path, classes: list[str] | None = None) -> None:
    """Cheap: the folder exists and holds at least two class folders (and every folder ``classes`` names)."""
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"image folder not found at {root}", fix=_HINT)
    _class_dirs(root, classes)


def check_root(m, other) -> None:
    """A config's data-root check for a pipeline with own images: ``check_layout`` for ``imagefolder``, else
    ``other(root)``, the public dataset's own check; nothing when the folder does not exist (the runner says so)."""
    root = Path(m.dataset.root or "data")
    if root.exists() and m.dataset.name == "imagefolder":
        check_layout(root, m.dataset.classes)
    elif root.exists():
        other(root)


def _class_dirs(root: Path, names: list[str] | None = None) -> list[Path]:
    found = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if names is not None:
        missing = [n for n in names if n not in {p.name for p in found}]  # a plain name of a class folder
        if missing:
            raise DataError(f"{root} has no class folder {', '.join(map(repr, missing))} (dataset.classes)",
                            fix=f"its class folders: {', '.join(p.name for p in found) or 'none'}")
        found = [root / n for n in names]
    if len(found) < 2:
        raise DataError(f"{root} has {len(found)} class folder(s); a classifier needs at least 2", fix=_HINT)
    return found


def read(root: Path, log=None, only: list[str] | None = None) -> tuple[list[Sample], list[str]]:
    """(samples, class names): every readable file of each class folder (those ``only`` names, in its order; by
    default all, sorted)."""
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"image folder not found at {root}", fix=_HINT)
    samples, classes, skipped = [], [], []
    for label, folder in enumerate(_class_dirs(root, only)):
        classes.append(folder.name)
        files = sorted(p for p in folder.iterdir() if p.is_file() and not p.name.startswith("."))
        keep = [p for p in files if suffix(p) in READABLE]
        skipped += [p for p in files if suffix(p) not in READABLE]
        if not keep:
            warn_empty(folder)
        samples += [Sample(p, label) for p in keep]
    if skipped and log is not None:
        shown = ", ".join(p.relative_to(root).as_posix() for p in skipped[:5])
        log(f"imagefolder: skipped {len(skipped)} file(s) that are not images ({shown}"
            f"{' …' if len(skipped) > 5 else ''})")
    if not samples:
        raise DataError(f"no images in the class folders of {root}", fix=_HINT)
    return samples, classes


def fixture(out: Path, seed: int = 0, n: int = 36, size: int = 48) -> Path:
    """Three classes of 'scans' in the formats clinics export — 16-bit PNG, float32 TIFF and DICOM files — whose class
    is the position of a bright blob (left, centre, right) and its brightness (dim, medium, bright: a network
    that pools globally, as the CAM networks do, cannot see where a blob lies, only how bright it is). Values
    are 12-bit (0–4095) in every format, as a 12-bit scanner writes them, so only an explicit ``intensity:
    {window: [0, 4095]}`` gives them one scale (by default a 16-bit PNG is read as 0–65535 and stays dark)."""
    import numpy as np
    import tifffile
    from PIL import Image

    rng = np.random.default_rng(seed + 11)
    root = Path(out) / "own-images"
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    for label, name in enumerate(("left", "centre", "right")):
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(n // 3):
            cx = size * (0.25 + 0.25 * label) + rng.normal(0, 2)
            cy = size * 0.5 + rng.normal(0, 4)
            img = 800 + 150 * rng.standard_normal((size, size))
            img += (1500, 2500, 3500)[label] * np.exp(-((xx - cx) ** 2 + (yy - cy) ** 2) / (2 * (size / 10) ** 2))
            img = np.clip(img, 0, 4095)
            stem = root / name / f"{name}_{i:03d}"
            kind = i % 3
            if kind == 0:
                Image.fromarray(img.astype(np.uint16)).save(f"{stem}.png")
            elif kind == 1:
                tifffile.imwrite(f"{stem}.tif", img.astype(np.float32))
            else:
                write_dicom_slice(f"{stem}.dcm", img.astype(np.uint16))
    (root / "left" / "README.txt").write_text("not an image: skipped with a line saying so\n")
    return root
