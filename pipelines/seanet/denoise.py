"""The ``denoise`` stage: low-dose CT slices in, denoised slices out in the same format, HU preserved.

Input (``denoise.input``: a file, folder or glob; default the eval split's LDCT slices): DICOM (``.IMA``/``.dcm``)
or ``.npy`` (units ``denoise.npy_units``, default ``dataset.npy_units``). Each slice is read to HU (stored ·
slope + intercept; below −1024 raised to −1024), normalised, denoised whole by the sliding window, and written to
``denoised/<input folder>/<input name>``:

- DICOM: the input's header with the denoised pixels stored under the input's own RescaleSlope / Intercept
  (stored = round((HU − intercept) / slope), clipped to the stored bits), so a reader gets HU back to within
  half a slope; a new SOP Instance UID per slice and one new Series Instance UID per input series, the series
  description marked "denoised (medrun seanet)", DerivationDescription naming the run; compressed inputs are
  written uncompressed (Explicit VR Little Endian).
- ``.npy``: float32 in the input's units.

``per_case.csv``: each input, its output, mean HU in and out, and the RMS change in HU (inside the eval window).
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np

from medrun.datasets import mayo
from medrun.errors import DataError

SUFFIXES = (".ima", ".dcm", ".npy")


def _inputs(p):
    src = p.m.denoise.input
    if src:
        return p.ctx.predict_inputs(src, SUFFIXES, what="LDCT slices (DICOM .IMA/.dcm or .npy)")
    splits = p.splits()
    return [pair.ldct for pair in p.split_of(splits).pairs]


def _write_dicom(ds, hu: np.ndarray, series_uid: str, run_id: str, arch: str) -> bytes:
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    slope = float(ds.get("RescaleSlope", 1) or 1)
    intercept = float(ds.get("RescaleIntercept", 0) or 0)
    bits = int(ds.get("BitsStored", ds.get("BitsAllocated", 16)))
    signed = int(ds.get("PixelRepresentation", 0)) == 1
    lo, hi = (-(2 ** (bits - 1)), 2 ** (bits - 1) - 1) if signed else (0, 2 ** bits - 1)
    stored = np.clip(np.round((hu.astype(np.float64) - intercept) / slope), lo, hi)
    dtype = np.int16 if signed else np.uint16
    if int(ds.get("BitsAllocated", 16)) != 16:
        raise DataError(f"{ds.filename}: {ds.BitsAllocated}-bit pixels; only 16-bit CT slices can be written back",
                        fix="convert the series to 16-bit DICOM first")
    if ds.file_meta.TransferSyntaxUID.is_compressed:
        ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.PixelData = stored.astype(dtype).tobytes()
    ds.Rows, ds.Columns = hu.shape
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.SeriesInstanceUID = series_uid
    tag = f" denoised (seanet {arch})"
    ds.SeriesDescription = (str(ds.get("SeriesDescription", ""))[:64 - len(tag)] + tag).strip()  # LO: 64 characters
    ds.DerivationDescription = f"denoised by medrun seanet ({arch}), run {run_id[:12]}"
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    return buf.getvalue()


def denoise(p) -> dict:
    from pydicom.uid import generate_uid

    files = _inputs(p)
    units = p.m.denoise.npy_units or p.m.dataset.npy_units
    net = p.predictor.setup(p.trained_model())
    window, arch = p.m.eval.window, p.m.model.arch
    series_uids: dict[str, str] = {}
    rows = []
    for f in map(Path, files):
        if f.suffix.lower() == ".npy":
            hu, ds = mayo.read_npy(f, units), None
        else:
            hu, ds = mayo.read_dicom(f)
        if min(hu.shape) < p.m.train.patch:
            raise DataError(f"{f} is {hu.shape[0]}×{hu.shape[1]}, smaller than the {p.m.train.patch}² patch",
                            fix="denoise whole CT slices")
        out_hu = mayo.denormalise(p.denoise_array(net, mayo.normalise(hu).astype(np.float32)).astype(np.float64))
        rel = f"denoised/{f.parent.name}/{f.name}"
        if ds is None:
            p.ctx.write_npy(rel, (mayo.normalise(out_hu) if units == "normalized" else out_hu).astype(np.float32))
        else:
            key = str(ds.get("SeriesInstanceUID", f.parent))
            series_uids.setdefault(key, generate_uid())
            p.ctx.write_bytes(rel, _write_dicom(ds, out_hu, series_uids[key], p.ctx.run_id, arch))
        a, b = np.clip(hu, *window), np.clip(out_hu, *window)
        rows.append({"file": str(f), "output": rel, "mean_hu_in": float(hu.mean()), "mean_hu_out": float(out_hu.mean()),
                     "rms_change_hu": float(np.sqrt(np.mean((a - b) ** 2)))})
    p.ctx.write_csv("per_case.csv", rows)
    p.ctx.log(f"denoised {len(rows)} slices into {p.ctx.path / 'denoised'}")
    return {"n": len(rows), "mean_rms_change_hu": float(np.mean([r["rms_change_hu"] for r in rows])),
            "mean_abs_shift_hu": float(np.mean([abs(r["mean_hu_out"] - r["mean_hu_in"]) for r in rows]))}
