"""The 2016 NIH-AAPM-Mayo Clinic Low Dose CT Grand Challenge: paired quarter-dose / full-dose CT slices (seanet card).

Public layout (the challenge release, one folder per patient)::

    <root>/L067/full_3mm/L067_FD_3_1.CT.0004.0001.2015.12.22.18.12.07.5968.80055456.IMA ...   full dose (NDCT)
               quarter_3mm/L067_QD_3_1.CT.0004.0001.2015.12.22.18.12.07.5968.80055713.IMA ... quarter dose (LDCT)
    <root>/L096/ ... L506/          (10 patients, 2378 slice pairs at 3 mm, 512×512)

Files are DICOM (Siemens ``.IMA``; ``.dcm`` is read too), HU = stored · RescaleSlope + RescaleIntercept. A
quarter-dose slice is paired with the full-dose slice of the same InstanceNumber (and, where both carry one, the
same SliceLocation). ``series`` picks ``full_<series>/quarter_<series>`` (``3mm`` by default; ``1mm`` for the
thin-slice release).

Preconverted layout (RED-CNN's / CTformer's ``prep.py``), one flat folder::

    <root>/L067_0_input.npy, L067_0_target.npy, …     float arrays in normalised units (HU + 1024) / 4096

Both layouts give :class:`Pair` s; :func:`load` returns (LDCT, NDCT) in HU. Values below −1024 HU (the scanner's
out-of-field padding, −2000 stored) are raised to −1024 as ``prep.py`` does.

Bad input is a ``DataError`` naming the file and the fix: a patient folder with only one of the two series, a slice
without its partner, a series whose slices disagree on RescaleSlope / RescaleIntercept, an unreadable file, partners
of different sizes.

The fixture (:func:`fixture`) writes patients L067, L096 and L506 with 4 slices each at 128×128 in the DICOM
layout above (Mayo's file names, ``.IMA``, slope 1, intercept −1024, 12 stored bits), simulated by physics:
randomly perturbed Shepp-Logan ellipses in HU → attenuation → ``radon`` → Poisson counts at I0 = 1e6 (full dose)
and 2.5e5 (quarter dose) → −log → filtered back-projection (``iradon``, ramp) → HU. The two doses share the
phantom and differ by their noise, which is the streaky, correlated noise of FBP.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from medrun.errors import DataError

from . import DatasetInfo

DATASETS = [
    DatasetInfo("mayo", "2016 NIH-AAPM-Mayo Low Dose CT Grand Challenge (quarter- vs full-dose CT, 3 mm)",
                "L<nnn>/{quarter_3mm,full_3mm}/*.IMA (DICOM), or <pid>_<idx>_{input,target}.npy "
                "(RED-CNN/CTformer prep)",
                "the AAPM/Mayo Clinic LDCT Grand Challenge data (request access from Mayo Clinic / AAPM; TCIA "
                "'LDCT-and-Projection-data' holds the successor); point at the folder holding L067/ … L506/",
                "medrun.datasets.mayo:fixture", ("denoising", "ct")),
]

NORM_MIN, NORM_MAX = -1024.0, 3072.0  # CTformer / RED-CNN normalisation range: (HU + 1024) / 4096
DICOM_SUFFIXES = (".ima", ".dcm")
PATIENTS = ("L067", "L096", "L109", "L143", "L192", "L286", "L291", "L310", "L333", "L506")
_NPY = re.compile(r"^(?P<pid>.+)_(?P<idx>\d+)_(?P<io>input|target)\.npy$")
_HINT = ("point at the folder holding the patient folders (L067/quarter_3mm/, L067/full_3mm/, …) or at a folder of "
         "<pid>_<idx>_input.npy / _target.npy files; or try --fixture")


@dataclass(frozen=True)
class Pair:
    patient: str
    index: int  # position within the patient, in slice order
    ldct: Path
    ndct: Path
    kind: str  # "dicom" | "npy"
    instance: int | None = None
    location: float | None = None

    @property
    def id(self) -> str:
        return f"{self.patient}_{self.index:04d}"

    @property
    def path(self) -> Path:  # what ``ctx.record_splits`` records
        return self.ldct


def normalise(hu):
    return (hu - NORM_MIN) / (NORM_MAX - NORM_MIN)


def denormalise(x):
    return x * (NORM_MAX - NORM_MIN) + NORM_MIN


def _dicoms(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and not p.name.startswith(".")
                  and p.suffix.lower() in DICOM_SUFFIXES)


def _patient_dirs(root: Path, series: str) -> list[Path]:
    return sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")
                  and ((p / f"quarter_{series}").is_dir() or (p / f"full_{series}").is_dir()))


def layout(root: Path, series: str = "3mm") -> str:
    """'dicom' or 'npy'; a DataError naming the folder and what is missing otherwise."""
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"Mayo LDCT folder not found: {root}", fix=_HINT)
    if _patient_dirs(root, series):
        return "dicom"
    if any(_NPY.match(p.name) for p in root.iterdir()):
        return "npy"
    if (root / f"quarter_{series}").is_dir() or (root / f"full_{series}").is_dir():
        raise DataError(f"{root} is one patient's folder", fix=f"use its parent {root.parent} (it holds every patient)")
    inner = [p for p in sorted(root.iterdir()) if p.is_dir() and _patient_dirs(p, series)]
    if inner:
        raise DataError(f"{root} is one level above the Mayo folder", fix=f"use {inner[0]} instead")
    other = sorted({q.name for p in root.iterdir() if p.is_dir() for q in p.iterdir()
                    if q.is_dir() and q.name.startswith(("quarter_", "full_"))})
    if other:
        raise DataError(f"{root} has {', '.join(other)} but no quarter_{series}/full_{series} series",
                        fix=f"set dataset.series to one of {', '.join(sorted({o.split('_', 1)[1] for o in other}))}")
    found = ", ".join(sorted(p.name for p in root.iterdir())[:5]) or "nothing"
    raise DataError(f"{root} does not have the Mayo LDCT layout (found: {found})", fix=_HINT)


def read(root: Path, series: str = "3mm", patients=None) -> list[Pair]:
    """Every (LDCT, NDCT) slice pair of the layout, patients sorted, slices in order; ``patients`` keeps only those."""
    root = Path(root)
    kind = layout(root, series)
    pairs = _read_dicom(root, series, patients) if kind == "dicom" else _read_npy(root, patients)
    if not pairs:
        wanted = f" for patients {', '.join(patients)}" if patients else ""
        raise DataError(f"no slice pairs in {root}{wanted}", fix=_HINT)
    return pairs


def _header(path: Path) -> dict:
    import pydicom

    try:
        ds = pydicom.dcmread(str(path), stop_before_pixels=True)
    except Exception as e:  # noqa: BLE001 (pydicom raises InvalidDicomError, OSError, EOFError …)
        raise DataError(f"cannot read DICOM {path}: {type(e).__name__}: {str(e).splitlines()[0][:160]}",
                        fix="replace the file or remove it together with its partner") from None
    if "PixelData" not in ds and "Rows" not in ds:
        raise DataError(f"{path} is DICOM without an image", fix="remove it from the series folder")
    loc = ds.get("SliceLocation")
    if loc is None and ds.get("ImagePositionPatient") is not None:
        loc = ds.ImagePositionPatient[2]
    inst = ds.get("InstanceNumber")
    return {"instance": int(inst) if inst is not None else None, "location": float(loc) if loc is not None else None,
            "rescale": (float(ds.get("RescaleSlope", 1) or 1), float(ds.get("RescaleIntercept", 0) or 0))}


def _series(folder: Path) -> dict:
    """{key: (path, header)} of one series, keyed by InstanceNumber (else SliceLocation); rescale checked."""
    files = _dicoms(folder)
    if not files:
        raise DataError(f"no DICOM slices (.IMA/.dcm) in {folder}", fix="restore the series or remove the patient")
    out, first = {}, None
    for f in files:
        h = _header(f)
        if first is None:
            first = (f, h["rescale"])
        elif h["rescale"] != first[1]:
            raise DataError(f"{f} has RescaleSlope/Intercept {h['rescale'][0]:g}/{h['rescale'][1]:g} but "
                            f"{first[0].name} "
                            f"in the same series has {first[1][0]:g}/{first[1][1]:g} (mixed rescale in {folder})",
                            fix="re-export the series with one rescale (slope/intercept) for every slice")
        key = h["instance"] if h["instance"] is not None else round(h["location"] or 0.0, 2)
        if key in out:
            raise DataError(f"{f} and {out[key][0].name} have the same InstanceNumber {key} in {folder}",
                            fix="remove the duplicate slice")
        out[key] = (f, h)
    return out


def _read_dicom(root: Path, series: str, patients) -> list[Pair]:
    pairs = []
    for pdir in _patient_dirs(root, series):
        if patients and pdir.name not in patients:
            continue
        q, f = pdir / f"quarter_{series}", pdir / f"full_{series}"
        for have, missing in ((q, f), (f, q)):
            if not missing.is_dir():
                raise DataError(f"{pdir} has {have.name}/ but no {missing.name}/ (the dose partner of every slice)",
                                fix=f"unpack {pdir.name}'s {missing.name} series next to {have.name}, "
                                    f"or remove {pdir.name}")
        quarter, full = _series(q), _series(f)
        for key, (path, _) in quarter.items():
            if key not in full:
                raise DataError(f"{path} has no full_{series}/ partner (InstanceNumber {key} is not in {f})",
                                fix="restore the full-dose slice, or remove this quarter-dose slice")
        for key, (path, _) in full.items():
            if key not in quarter:
                raise DataError(f"{path} has no quarter_{series}/ partner (InstanceNumber {key} is not in {q})",
                                fix="restore the quarter-dose slice, or remove this full-dose slice")
        rows = []
        for key, (qp, qh) in quarter.items():
            fp, fh = full[key]
            both = qh["location"] is not None and fh["location"] is not None
            if both and abs(qh["location"] - fh["location"]) > 0.01:
                raise DataError(f"{qp} (SliceLocation {qh['location']:g}) and its partner {fp} "
                                f"({fh['location']:g}) are not the same slice",
                                fix="check the two series belong together")
            rows.append((qh["location"] if qh["location"] is not None else float(key), key, qp, fp, qh))
        rows.sort(key=lambda r: (r[0], r[1]))
        pairs += [Pair(pdir.name, i, qp, fp, "dicom", key if isinstance(key, int) else None, h["location"])
                  for i, (_, key, qp, fp, h) in enumerate(rows)]
    return pairs


def _read_npy(root: Path, patients) -> list[Pair]:
    found: dict[tuple[str, int], dict[str, Path]] = {}
    for p in sorted(root.iterdir()):
        m = _NPY.match(p.name)
        if m and not p.name.startswith("."):
            found.setdefault((m["pid"], int(m["idx"])), {})[m["io"]] = p
    pairs = []
    for (pid, idx), io in sorted(found.items()):
        if patients and pid not in patients:
            continue
        for have, missing in (("input", "target"), ("target", "input")):
            if have in io and missing not in io:
                raise DataError(f"{io[have]} has no partner {pid}_{idx}_{missing}.npy in {root}",
                                fix=f"restore {pid}_{idx}_{missing}.npy or remove {io[have].name}")
        pairs.append(Pair(pid, idx, io["input"], io["target"], "npy"))
    return pairs


# -- pixels ---------------------------------------------------------------------------------------------------------
def read_dicom(path: Path):
    """(HU float32 H×W, the pydicom dataset) of one slice; HU below −1024 raised to −1024."""
    import numpy as np
    import pydicom

    try:
        ds = pydicom.dcmread(str(path))
        arr = ds.pixel_array.astype(np.float32)
    except Exception as e:  # noqa: BLE001
        raise DataError(f"cannot read the pixels of DICOM {path}: {type(e).__name__}: {str(e).splitlines()[0][:160]}",
                        fix="replace the file (is it truncated or compressed with a codec pydicom lacks?)") from None
    if arr.ndim != 2:
        raise DataError(f"{path} holds an image of shape {arr.shape}, not one 2D slice",
                        fix="use single-slice DICOM files")
    hu = arr * float(ds.get("RescaleSlope", 1) or 1) + float(ds.get("RescaleIntercept", 0) or 0)
    return np.maximum(hu, NORM_MIN).astype(np.float32), ds


def read_npy(path: Path, units: str = "normalized"):
    """HU float32 of one preconverted slice (``units``: 'normalized' (HU + 1024) / 4096 as prep.py writes, or 'hu')."""
    import numpy as np

    try:
        arr = np.load(path, allow_pickle=False)
    except Exception as e:  # noqa: BLE001
        raise DataError(f"cannot read {path}: {type(e).__name__}: {str(e).splitlines()[0][:160]}",
                        fix="replace the file with a 2D float array (np.save)") from None
    if arr.ndim != 2 or not np.issubdtype(arr.dtype, np.number):
        raise DataError(f"{path} holds a {arr.dtype} array of shape {arr.shape}, not one 2D slice",
                        fix="save one slice per file as a 2D float array")
    if not np.isfinite(arr).all():
        raise DataError(f"{path} holds NaN or infinite values", fix="re-export the slice")
    hu = denormalise(arr.astype(np.float64)) if units == "normalized" else arr.astype(np.float64)
    return np.maximum(hu, NORM_MIN).astype(np.float32)


def load(pair: Pair, units: str = "normalized"):
    """(LDCT, NDCT) in HU, float32 H×W; partners of different shapes are a DataError. ``units``: of .npy pairs."""
    if pair.kind == "dicom":
        ld, nd = read_dicom(pair.ldct)[0], read_dicom(pair.ndct)[0]
    else:
        ld, nd = read_npy(pair.ldct, units), read_npy(pair.ndct, units)
    if ld.shape != nd.shape:
        raise DataError(f"{pair.ldct} is {ld.shape[0]}×{ld.shape[1]} but its partner {pair.ndct} is "
                        f"{nd.shape[0]}×{nd.shape[1]}", fix="the two doses of a slice must have one size")
    return ld, nd


def to_npy_layout(pairs: list[Pair], out: Path) -> Path:
    """Write pairs as RED-CNN/CTformer's preconverted files ``<pid>_<idx>_{input,target}.npy`` (normalised units)."""
    import numpy as np

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    for p in pairs:
        ld, nd = load(p)
        np.save(out / f"{p.patient}_{p.index}_input.npy", normalise(ld).astype(np.float32))
        np.save(out / f"{p.patient}_{p.index}_target.npy", normalise(nd).astype(np.float32))
    return out


# -- fixture: Shepp-Logan phantoms through a CT simulator -------------------------------------------------------------
MU_WATER = 0.02  # 1/mm, about 70 keV
# Shepp-Logan ellipses (centre x, y; semi-axes a, b; angle in degrees), each painted with an HU value
_ELLIPSES = [(0, 0, 0.69, 0.92, 0), (0, -0.0184, 0.6624, 0.874, 0), (0.22, 0, 0.11, 0.31, -18),
             (-0.22, 0, 0.16, 0.41, 18), (0, 0.35, 0.21, 0.25, 0), (0, 0.1, 0.046, 0.046, 0),
             (0, -0.1, 0.046, 0.046, 0),
             (-0.08, -0.605, 0.046, 0.023, 0), (0, -0.606, 0.023, 0.023, 0), (0.06, -0.605, 0.023, 0.046, 0)]


def phantom(rng, size: int = 128, jitter=None):
    """A randomly perturbed Shepp-Logan phantom in HU (air −1000, bone 300, soft tissue around 40, lesions)."""
    import numpy as np
    from scipy import ndimage

    jitter = rng if jitter is None else jitter
    hu = np.full((size, size), -1000.0)
    yy, xx = (np.mgrid[0:size, 0:size] + 0.5) / size * 2 - 1
    yy = -yy
    scale = jitter.uniform(0.82, 0.9)
    values = [300.0, 40.0, -80.0, -60.0, 70.0, *rng.uniform(60, 150, 5)]
    for k, ((x0, y0, a, b, phi), v) in enumerate(zip(_ELLIPSES, values, strict=True)):
        if k >= 2:  # inner structures move a little per patient and per slice
            x0, y0 = x0 + rng.normal(0, 0.02), y0 + rng.normal(0, 0.02)
            a, b, phi = a * rng.uniform(0.85, 1.15), b * rng.uniform(0.85, 1.15), phi + rng.normal(0, 8)
        t = np.deg2rad(phi)
        xr = ((xx / scale - x0) * np.cos(t) + (yy / scale - y0) * np.sin(t)) / a
        yr = (-(xx / scale - x0) * np.sin(t) + (yy / scale - y0) * np.cos(t)) / b
        hu[xr ** 2 + yr ** 2 <= 1] = v
    tissue = hu > -500
    texture = ndimage.gaussian_filter(rng.normal(0, 1, (size, size)), 3)
    hu[tissue] += 12 * texture[tissue] / max(texture.std(), 1e-6)  # a little soft texture
    return hu


def simulate(hu, rng, i0: float, views: int = 64, pixel_mm: float = 3.5):
    """FBP reconstruction (HU) of a phantom scanned with ``i0`` photons per ray (Poisson counts)."""
    import numpy as np
    from skimage.transform import iradon, radon

    mu = MU_WATER * (1 + hu / 1000.0) * pixel_mm  # attenuation per pixel
    theta = np.linspace(0.0, 180.0, views, endpoint=False)
    p = radon(np.clip(mu, 0, None), theta=theta, circle=True)
    counts = rng.poisson(i0 * np.exp(-p))
    p_hat = -np.log(np.maximum(counts, 1) / i0)
    mu_hat = iradon(p_hat, theta=theta, filter_name="ramp", circle=True)
    return 1000.0 * (mu_hat / pixel_mm / MU_WATER - 1.0)


def write_slice(path: Path, hu, *, patient: str, dose: str, instance: int, location: float, series_uid: str,
                study_uid: str, pixel_mm: float, seed: int) -> None:
    """One CT slice as Siemens-style DICOM: uint16 stored values, 12 bits, slope 1, intercept −1024."""
    import numpy as np
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

    stored = np.clip(np.round(hu + 1024.0), 0, 4095).astype(np.uint16)
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = CTImageStorage
    sop = generate_uid(entropy_srcs=[patient, dose, str(instance), str(seed)])
    meta.MediaStorageSOPInstanceUID = sop
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = CTImageStorage, sop
    ds.StudyInstanceUID, ds.SeriesInstanceUID = study_uid, series_uid
    ds.PatientID = ds.PatientName = patient
    ds.Modality, ds.Manufacturer, ds.KVP = "CT", "medrun fixture (simulated)", "120"
    ds.SeriesDescription = f"{'Full' if dose == 'FD' else 'Quarter'} dose 3mm B30f (simulated)"
    ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
    ds.ConvolutionKernel, ds.SliceThickness = "B30f", "3.0"
    ds.InstanceNumber, ds.SliceLocation = instance, f"{location:.1f}"
    ds.ImagePositionPatient = [f"{-pixel_mm * hu.shape[1] / 2:.2f}", f"{-pixel_mm * hu.shape[0] / 2:.2f}",
                               f"{location:.1f}"]
    ds.ImageOrientationPatient = ["1", "0", "0", "0", "1", "0"]
    ds.PixelSpacing = [f"{pixel_mm:.3f}", f"{pixel_mm:.3f}"]
    ds.Rows, ds.Columns = hu.shape
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    ds.RescaleIntercept, ds.RescaleSlope, ds.RescaleType = "-1024", "1", "HU"
    ds.WindowCenter, ds.WindowWidth = "40", "400"
    ds.PixelData = stored.tobytes()
    ds.save_as(str(path), enforce_file_format=True)


def fixture(out: Path, seed: int = 0, patients=("L067", "L096", "L506"), slices: int = 4, size: int = 128,
            i0_full: float = 1e6, i0_quarter: float = 2.5e5) -> Path:
    """The Mayo layout in miniature: ``slices`` simulated slice pairs per patient (see the module docstring)."""
    import numpy as np
    from pydicom.uid import generate_uid

    root = Path(out) / "Mayo_LDCT"
    for pi, pid in enumerate(patients):
        prng = np.random.default_rng([seed, pi])
        study = generate_uid(entropy_srcs=[pid, "study", str(seed)])
        series = {d: generate_uid(entropy_srcs=[pid, d, str(seed)]) for d in ("FD", "QD")}
        for folder in ("full_3mm", "quarter_3mm"):
            (root / pid / folder).mkdir(parents=True, exist_ok=True)
        base = prng.integers(0, 2**31)
        for s in range(slices):
            hu = phantom(np.random.default_rng([seed, pi, s]), size, jitter=np.random.default_rng([seed, pi, base]))
            loc = -100.0 + 3.0 * s
            for d, folder, i0 in (("FD", "full_3mm", i0_full), ("QD", "quarter_3mm", i0_quarter)):
                img = simulate(hu, np.random.default_rng([seed, pi, s, int(i0)]), i0)
                stamp = f"2016.01.{pi + 11:02d}.10.{s:02d}.07.{prng.integers(1000, 9999)}.{prng.integers(10**7, 10**8)}"
                name = f"{pid}_{d}_3_1.CT.0004.{s + 1:04d}.{stamp}.IMA"
                write_slice(root / pid / folder / name, img, patient=pid, dose=d, instance=s + 1, location=loc,
                            series_uid=series[d], study_uid=study, pixel_mm=3.5, seed=seed)
    (root / "README.txt").write_text("Simulated miniature of the Mayo 2016 LDCT challenge layout, written by medrun; "
                                     "no patient data.\n")
    return root
