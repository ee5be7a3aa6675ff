"""One way to read a researcher's own image, whatever the clinic exported, and to write a prediction back in the
input's geometry.

Reading goes through MONAI's ``LoadImage`` with an explicit reader per format: PIL for PNG / JPEG / BMP / TIFF
(8- and 16-bit, float), NiBabel for NIfTI, PyDICOM for one DICOM file or a folder holding one DICOM series
(rescale slope and intercept applied; spacing and orientation kept). NRRD and MHA/MHD go through SimpleITK, since
MONAI's reader for them needs the full ITK package. Every image comes back as a :class:`Loaded`: float32 values as
stored (nothing scaled yet), a 4×4 voxel-to-RAS affine (identity for plain 2-D images), and the stored value type.

Turning stored values into the 0–1 range a network sees is a separate, explicit step, :func:`to_unit`, driven by
the manifest's ``intensity:`` section (:class:`Intensity`): a ``window`` (CT), ``percentile`` limits (MR) or a fixed
``scale``; by default the stored type's own range (8-bit /255, 16-bit /65535) or, for signed and float data (a
DICOM file is float once its rescale slope and intercept are applied), the image's own min–max. A window or
scale that would clip values is never silent: a :class:`DataWarning` names the file and the fraction of pixels
clipped.

Conventions: 2-D images, a single-frame DICOM file included, are H×W or H×W×C (row, column); volumes keep the file's
voxel order (i, j, k) with the affine mapping it to RAS millimetres, as NiBabel does. A DICOM series is sorted by
slice position along its normal, not by InstanceNumber (which scanners and anonymisers do not always keep in order).
"""

from __future__ import annotations

import functools
import logging
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from pydantic import BaseModel, ConfigDict, model_validator

from medrun.errors import DataError

from .images import IMAGE_SUFFIXES, DataWarning

if TYPE_CHECKING:
    import numpy as np

VOLUME_SUFFIXES = (".nii", ".nii.gz", ".nrrd", ".mha", ".mhd")
DICOM_SUFFIXES = (".dcm", ".dicom")
READABLE = (*IMAGE_SUFFIXES, *VOLUME_SUFFIXES, *DICOM_SUFFIXES)
_UNSIGNED_RANGE = {"uint8": 255.0, "uint16": 65535.0}
_FIX = "replace or delete the file, or convert it to PNG, TIFF, NIfTI or DICOM"
# MONAI's readers warn about what does not concern a 2-D DICOM slice or a CPU-only machine
for _msg in ("nvImageCodec is not available", "PydicomReader: ImageOrientationPatient",
             "NvImgCodecPydicomReader", "The given NumPy array is not writable"):
    warnings.filterwarnings("ignore", message=_msg)
# MONAI logs the missing GPU codec at WARNING once per process: nothing a user reading DICOM on a CPU can act on
logging.getLogger("monai.data.nvimgcodec_pydicom_plugin").setLevel(logging.ERROR)


@dataclass(frozen=True)
class Loaded:
    array: np.ndarray  # float32, stored values
    affine: np.ndarray  # 4×4 voxel → RAS mm; identity for plain 2-D images
    stored: str  # the stored value type: uint8, uint16, int16, float32 …
    path: Path
    volume: bool  # NIfTI, NRRD/MHA or DICOM: geometry matters when writing a prediction back

    @property
    def spacing(self) -> tuple[float, ...]:
        import numpy as np

        return tuple(float(v) for v in np.linalg.norm(self.affine[:3, :3], axis=0)[: self.array.ndim])


def suffix(path: Path) -> str:
    name = Path(path).name.lower()
    return ".nii.gz" if name.endswith(".nii.gz") else Path(name).suffix


def is_dicom_series(folder: Path) -> bool:
    return Path(folder).is_dir() and any(suffix(p) in DICOM_SUFFIXES for p in Path(folder).iterdir())


def readable(path: Path) -> bool:
    """A file this module reads, or a folder holding a DICOM series."""
    return suffix(path) in READABLE or is_dicom_series(path)


def read(path: Path) -> Loaded:
    """Read one image (a file, or a DICOM series folder); any failure is a DataError naming the file."""
    path = Path(path)
    sfx = suffix(path)
    try:
        if path.is_dir():
            return _read_dicom_series(path)
        if sfx in IMAGE_SUFFIXES:
            return _read_2d(path)
        if sfx in (".nii", ".nii.gz"):
            return _read_monai(path, "nibabel", volume=True)
        if sfx in DICOM_SUFFIXES:
            return _read_dicom_file(path)
        if sfx in (".nrrd", ".mha", ".mhd"):
            return _read_sitk(path)
    except DataError:
        raise
    except Exception as e:  # noqa: BLE001 (readers raise anything from OSError to RuntimeError on a bad file)
        raise DataError(f"cannot read image {path}: {type(e).__name__}: {' '.join(str(e).split())[:200]}",
                        fix=_FIX) from None
    raise DataError(f"{path} is not an image medrun reads (suffix {sfx or 'none'})",
                    fix=f"use one of {', '.join(READABLE)}, or a folder holding one DICOM series")


@functools.cache
def _loader(reader: str):
    """One LoadImage per reader, made once: building it per image was a cost inside every data loop."""
    from monai.data import NibabelReader, PILReader, PydicomReader
    from monai.transforms import LoadImage

    made = {"pil": lambda: PILReader(reverse_indexing=False), "nibabel": NibabelReader, "pydicom": PydicomReader}
    return LoadImage(reader=made[reader](), image_only=True, dtype=None)


def _read_2d(path: Path) -> Loaded:
    import numpy as np
    from PIL import Image

    with Image.open(path) as im:  # the stored type, which MONAI's tensor (int32 for 16-bit) no longer shows
        stored = {"I;16": "uint16", "I;16L": "uint16", "I;16B": "uint16", "I;16N": "uint16", "I": "int32",
                  "F": "float32", "1": "bool"}.get(im.mode, "uint8")
    arr = np.asarray(_loader("pil")(str(path)), dtype=np.float32)
    return Loaded(arr, np.eye(4), stored, path, volume=False)


def _read_monai(path: Path, reader: str, volume: bool) -> Loaded:
    import numpy as np

    img = _loader(reader)(str(path))
    stored = str(img.dtype).replace("torch.", "")
    return Loaded(np.asarray(img, dtype=np.float32), np.asarray(img.affine, dtype=np.float64), stored, path, volume)


def _read_dicom_file(path: Path) -> Loaded:
    """One DICOM file. A single frame comes back as a 2-D image in (row, column) order like a PNG (MONAI's reader
    gives (column, row), which turned every DICOM slice on its side beside PNGs of the same set), with the affine's
    first two columns swapped to match; a multi-frame file stays a volume in MONAI's order."""
    import numpy as np

    img = _read_monai(path, "pydicom", volume=True)
    a = img.array[..., 0] if img.array.ndim == 3 and img.array.shape[-1] == 1 else img.array
    if a.ndim != 2:
        return img
    affine = img.affine.copy()
    affine[:, [0, 1]] = affine[:, [1, 0]]
    return Loaded(np.ascontiguousarray(a.T), affine, img.stored, path, volume=True)


def _read_dicom_series(folder: Path) -> Loaded:
    """PyDICOM through MONAI (which orders slices by InstanceNumber), then re-ordered by position when the numbers
    disagree with where the slices lie."""
    import numpy as np
    import pydicom

    files = sorted(p for p in folder.iterdir() if suffix(p) in DICOM_SUFFIXES)
    heads = [pydicom.dcmread(p, stop_before_pixels=True) for p in files]
    if len({str(getattr(h, "SeriesInstanceUID", "")) for h in heads}) > 1:
        raise DataError(f"{folder} holds more than one DICOM series", fix="put each series in a folder of its own")
    loaded = _read_monai(folder, "pydicom", volume=True)
    if len(heads) < 2 or not all(hasattr(h, "ImagePositionPatient") for h in heads):
        return loaded
    heads.sort(key=lambda h: int(getattr(h, "InstanceNumber", 0)))  # MONAI's order
    row, col = np.asarray(heads[0].ImageOrientationPatient[:3], float), np.asarray(heads[0].ImageOrientationPatient[3:])
    along = np.array([np.dot(np.cross(row, col), np.asarray(h.ImagePositionPatient, float)) for h in heads])
    order = np.argsort(along, kind="stable")
    if np.array_equal(order, np.arange(len(order))) or np.array_equal(order, np.arange(len(order))[::-1]):
        return loaded  # MONAI's affine already follows the slices
    arr = loaded.array[..., order]
    affine = loaded.affine.copy()
    step = (along[order][-1] - along[order][0]) / (len(order) - 1)
    first = np.asarray(heads[order[0]].ImagePositionPatient, float) * np.array([-1, -1, 1])  # LPS → RAS
    normal = np.cross(row, col) * np.array([-1, -1, 1])
    affine[:3, 2], affine[:3, 3] = normal * step, first
    return Loaded(arr, affine, loaded.stored, folder, volume=True)


def _read_sitk(path: Path) -> Loaded:
    import numpy as np
    import SimpleITK as sitk

    img = sitk.ReadImage(str(path))
    arr = sitk.GetArrayFromImage(img)  # (z, y, x)
    arr = arr.transpose(tuple(range(arr.ndim))[::-1]) if img.GetNumberOfComponentsPerPixel() == 1 else arr
    d = img.GetDimension()
    lps = np.eye(4)
    lps[:d, :d] = np.asarray(img.GetDirection(), float).reshape(d, d) * np.asarray(img.GetSpacing(), float)
    lps[:d, 3] = img.GetOrigin()
    affine = np.diag([-1.0, -1.0, 1.0, 1.0]) @ lps
    return Loaded(arr.astype(np.float32), affine, str(arr.dtype), path, volume=True)


class Intensity(BaseModel):
    """The manifest's ``intensity:`` section: how stored values become 0–1. At most one of ``window`` (lo, hi in
    stored units, e.g. Hounsfield), ``percentile`` (p_lo, p_hi of each image) or ``scale`` (a factor, e.g.
    1/65535); none: the stored type's range (8-bit /255, 16-bit /65535), or min–max per image for signed and float
    data."""

    model_config = ConfigDict(extra="forbid")
    window: tuple[float, float] | None = None
    percentile: tuple[float, float] | None = None
    scale: float | None = None

    @model_validator(mode="after")
    def _one(self):
        given = [k for k in ("window", "percentile", "scale") if getattr(self, k) is not None]
        if len(given) > 1:
            raise ValueError(f"intensity takes one of window, percentile, scale; got {', '.join(given)}")
        for k in ("window", "percentile"):
            lo_hi = getattr(self, k)
            if lo_hi is not None and not lo_hi[0] < lo_hi[1]:
                raise ValueError(f"intensity.{k} needs lo < hi, got {list(lo_hi)}")
        if self.percentile is not None and not 0 <= self.percentile[0] < self.percentile[1] <= 100:
            raise ValueError("intensity.percentile must lie within 0..100")
        if self.scale is not None and self.scale <= 0:
            raise ValueError("intensity.scale must be positive")
        return self

    def describe(self) -> str:
        for k in ("window", "percentile", "scale"):
            if getattr(self, k) is not None:
                return f"{k} {getattr(self, k)}"
        return "the stored type's range"


def to_unit(img: Loaded, intensity: Intensity | None = None) -> np.ndarray:
    """Stored values → float32 in 0–1 by ``intensity``; a DataWarning names the file and the fraction of pixels
    clipped when a window or scale cuts values off (percentile limits clip by request and do not warn)."""
    import numpy as np

    spec = intensity or Intensity()
    a = img.array
    if not np.isfinite(a).all():
        raise DataError(f"image {img.path} holds NaN or infinite values", fix="write finite values only")
    if spec.window is not None:
        lo, hi = spec.window
    elif spec.percentile is not None:
        lo, hi = (float(v) for v in np.percentile(a, spec.percentile))
    elif spec.scale is not None:
        lo, hi = 0.0, 1.0 / spec.scale
    elif img.stored in _UNSIGNED_RANGE:
        lo, hi = 0.0, _UNSIGNED_RANGE[img.stored]
    else:
        lo, hi = (float(a.min()), float(a.max())) if a.size else (0.0, 1.0)
    if hi <= lo:
        return np.zeros_like(a, dtype=np.float32)
    if spec.percentile is None:
        clipped = float(np.mean((a < lo) | (a > hi))) if a.size else 0.0
        if clipped > 0:
            warnings.warn(f"{img.path}: {clipped:.1%} of its values lie outside {spec.describe()} "
                          f"({lo:g} to {hi:g}) and are clipped", DataWarning, stacklevel=2)
    return np.clip((a - lo) / (hi - lo), 0.0, 1.0).astype(np.float32)


def encode_like(values: np.ndarray, like: Loaded) -> tuple[str, bytes]:
    """A prediction (a label map or scores) encoded in the input's geometry: ``(".nii.gz", bytes)`` for a volume,
    NIfTI with the input's affine in both qform and sform (a DICOM series too: DICOM in, NIfTI out), or
    ``(".png", bytes)`` for a 2-D image at the input's size (uint8 values, e.g. labels or 0/255 masks). ``values``
    must already have the input's spatial shape; the bytes are the same for the same prediction (no timestamp)."""
    import io

    import numpy as np

    spatial = like.array.shape[:3] if like.volume else like.array.shape[:2]
    if tuple(values.shape[: len(spatial)]) != tuple(spatial):
        raise ValueError(f"prediction shape {values.shape} is not the input's {spatial} ({like.path})")
    if like.volume:
        import gzip

        import nibabel as nib

        data = values.astype(np.uint8 if values.dtype.kind in "bui" and values.max(initial=0) < 256 else
                             np.int16 if values.dtype.kind in "bui" else np.float32)
        img = nib.Nifti1Image(data, like.affine)
        img.set_qform(like.affine, code=1)
        img.set_sform(like.affine, code=1)
        return ".nii.gz", gzip.compress(img.to_bytes(), mtime=0)
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(np.asarray(values, dtype=np.uint8)).save(buf, format="PNG")
    return ".png", buf.getvalue()


def stem(path: Path) -> str:
    """A file's name without its image suffix (``ct.nii.gz`` → ``ct``); a DICOM series folder's own name."""
    path = Path(path)
    sfx = suffix(path) if path.is_file() or suffix(path) in READABLE else ""
    return path.name[: -len(sfx)] if sfx else path.name


def write_like(values: np.ndarray, like: Loaded, out: Path) -> Path:
    """:func:`encode_like` written atomically to ``out`` with the right suffix (outside a run; a stage writes
    through ``ctx.write_like``). Returns the path written."""
    from medrun.artifacts import atomic_write

    sfx, data = encode_like(values, like)
    base = str(out)[: -len(suffix(out))] if suffix(out) else str(out)
    atomic_write(Path(base + sfx), data)
    return Path(base + sfx)


def write_dicom_slice(path: Path, pixels, *, modality: str = "MR", bits_stored: int = 12, slope: float = 1.0,
                      intercept: float = 0.0) -> Path:
    """A minimal single-frame DICOM file of unsigned 16-bit ``pixels`` (H×W), for fixtures and tests: what a
    scanner's export of one slice looks like to the readers here."""
    import numpy as np
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, MRImageStorage, generate_uid

    sop_class = CTImageStorage if modality == "CT" else MRImageStorage
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID = sop_class, generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta, ds.SOPClassUID, ds.SOPInstanceUID = meta, sop_class, meta.MediaStorageSOPInstanceUID
    ds.SeriesInstanceUID = ds.StudyInstanceUID = generate_uid()
    ds.Modality, ds.InstanceNumber = modality, 1
    ds.Rows, ds.Columns = pixels.shape
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, bits_stored, bits_stored - 1, 0
    ds.PixelSpacing, ds.RescaleSlope, ds.RescaleIntercept = [0.8, 0.5], slope, intercept  # row, column spacing
    ds.ImagePositionPatient, ds.ImageOrientationPatient = [0.0, 0.0, 0.0], [1, 0, 0, 0, 1, 0]
    ds.PixelData = np.ascontiguousarray(pixels, dtype=np.uint16).tobytes()
    ds.save_as(path, enforce_file_format=True)
    return Path(path)
