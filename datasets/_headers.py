"""A cheap read of every image file's header before training, so a corrupt file in any split stops the run before
``fit`` instead of after the last epoch (the test split is read only at the end).

What is checked, per file, without decoding whole images where a format allows it:

- PNG: ``PIL.Image.verify()``, which walks every chunk and checks its CRC (a truncated or bit-flipped file fails).
- JPEG: the header, then a decode at 1/8 scale (``Image.draft``): libjpeg still reads every entropy-coded byte, so a
  file cut short fails, at a fraction of a full decode's cost.
- BMP, TIFF: the header, then a full decode (rare here, and their headers say little).
- NIfTI / Analyze (``.nii``, ``.nii.gz``, ``.hdr``/``.img``): nibabel's header load, then the data's length against
  the header (``vox_offset`` + voxels × bytes): the file size, or for ``.nii.gz`` the gzip trailer's ISIZE (the
  uncompressed length modulo 2³²); when the trailer disagrees (a multi-member gzip is legal) the data is read fully.
- DICOM (``.dcm``): ``pydicom.dcmread(stop_before_pixels=True)`` where pydicom is installed; skipped otherwise (no
  reader in medrun reads DICOM today).

``check_headers_once`` runs the check once per data fingerprint: a marker file named by the fingerprint is written
after a clean pass, so an unchanged data set is never checked twice.
"""

from __future__ import annotations

import os
import struct
import tempfile
from collections.abc import Iterable
from pathlib import Path

from medrun.errors import DataError

PIL_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")
NIFTI_SUFFIXES = (".nii", ".nii.gz", ".hdr", ".img")
HEADER_SUFFIXES = (*PIL_SUFFIXES, *NIFTI_SUFFIXES, ".dcm")


def is_image_file(name: str) -> bool:
    return name.lower().endswith(HEADER_SUFFIXES)


def check_image_headers(paths: Iterable[Path]) -> int:
    """Check every file; raise one DataError naming the first bad file (and how many more there are). Returns the
    number of files checked."""
    bad: list[tuple[Path, str]] = []
    n = 0
    for path in paths:
        n += 1
        problem = _problem(Path(path))
        if problem:
            bad.append((Path(path), problem))
    if bad:
        path, problem = bad[0]
        more = f" (and {len(bad) - 1} more: {', '.join(str(p) for p, _ in bad[1:4])})" if len(bad) > 1 else ""
        raise DataError(f"corrupt or unreadable image {path}: {problem}{more}",
                        fix="replace or delete the file(s), then run again; nothing was trained")
    return n


def check_headers_once(fingerprints: dict[str, dict], marker: Path) -> int:
    """``check_image_headers`` over the image files of data fingerprints (``{name: {"root", "files"}}``), unless
    ``marker`` (named by the combined data fingerprint) exists; writes it after a clean pass. The marker only saves
    time: one that cannot be written is skipped. Returns the number of files checked (0 when cached)."""
    marker = Path(marker)
    if marker.exists():
        return 0
    paths = [Path(fp["root"]) / rel for fp in fingerprints.values() for rel in fp["files"] if is_image_file(rel)]
    n = check_image_headers(paths)
    try:
        marker.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{marker.name}.", dir=marker.parent)
        with os.fdopen(fd, "w") as f:
            f.write(f"{n} image files passed the header check\n")
        os.replace(tmp, marker)
    except OSError:
        pass
    return n


def _problem(path: Path) -> str | None:
    """None when the file reads, else what is wrong, in words."""
    name = path.name.lower()
    try:
        if name.endswith(PIL_SUFFIXES):
            return _check_pil(path, name)
        if name.endswith(NIFTI_SUFFIXES):
            return _check_nifti(path, name)
        if name.endswith(".dcm"):
            return _check_dicom(path)
    except Exception as e:  # noqa: BLE001 — every reader failure is the file's problem, reported by name
        return f"{type(e).__name__}: {e}"
    return None


def _check_pil(path: Path, name: str) -> None:
    from PIL import Image, UnidentifiedImageError

    if name.endswith((".tif", ".tiff")):
        try:
            Image.open(path).close()
        except UnidentifiedImageError:  # float32 multi-channel TIFFs (SCARED scene_points) PIL cannot open
            import tifffile

            tifffile.imread(path)
            return
    with Image.open(path) as im:
        if name.endswith(".png"):
            im.verify()
        elif name.endswith((".jpg", ".jpeg")):
            im.draft(im.mode, (max(1, im.width // 8), max(1, im.height // 8)))
            im.load()
        else:
            im.load()


def _check_nifti(path: Path, name: str) -> str | None:
    import nibabel as nib

    if name.endswith((".hdr", ".img")):  # an Analyze/NIfTI pair, checked once through its .hdr
        img_file = path.with_suffix(".img" if path.suffix.islower() else ".IMG")
        if name.endswith(".img") or not img_file.exists():
            return None  # a lone .hdr or .img is some other format (ENVI, a disk image): not ours to judge
        data_file = img_file
    else:
        data_file = path
    img = nib.load(str(path))
    offset = getattr(img.dataobj, "offset", None)  # the array proxy knows where the data starts (vox_offset 0
    offset = img.header.get_data_offset() if offset is None else offset  # in a .nii means 352, the header's end)
    expected = int(offset) + _prod(img.shape) * img.header.get_data_dtype().itemsize
    if name.endswith(".gz"):
        with open(data_file, "rb") as f:
            f.seek(-4, os.SEEK_END)
            isize = struct.unpack("<I", f.read(4))[0]
        if isize != expected % 2**32:
            img.get_fdata(dtype="float32")  # the trailer may belong to one of several gzip members: read it all
        return None
    size = data_file.stat().st_size
    if size < expected:
        return f"holds {size} bytes, its header needs {expected} (the file is cut short)"
    return None


def _check_dicom(path: Path) -> None:
    try:
        import pydicom
    except ImportError:
        return None
    pydicom.dcmread(str(path), stop_before_pixels=True)
    return None


def _prod(shape) -> int:
    out = 1
    for s in shape:
        out *= int(s)
    return out
