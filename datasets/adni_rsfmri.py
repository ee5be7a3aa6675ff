"""Resting-state fMRI ROI time series as CSV, one file per subject and Dosenbach-2010 network (the ph-mci paper's
layout; ADNI after the user's own preprocessing, or any cohort prepared the same way).

Layout (what the authors' code reads)::

    <root>/<CLASS>/<NET>/<subject>.csv

``CLASS`` is one of HC (or CN), MCI, EMCI, LMCI; ``NET`` one of CB, CO, DMN, FP, OP, SM. A CSV has one row per ROI
of the network, in the network's Dosenbach order (CB 18, CO 32, DMN 34, FP 21, OP 22, SM 33 rows), and one column
per time point, no header. ADNI itself is released (after a data-use application, LONI IDA) as NIfTI/DICOM: users
preprocess it (motion and slice-timing correction, MNI normalisation, nuisance regression) and extract the 5 mm
spheres themselves.

Quirks kept from the authors' code: a CSV with any value exactly 0 is dropped (the code's filter), with a warning
listing it. Rejected with an error naming the file: unreadable or non-numeric CSVs, NaN/inf values, a constant ROI
(its persistence diagram is empty, so every distance to it is meaningless), a wrong number of rows, and a subject
found under two class folders.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from medrun.errors import DataError

from . import DatasetInfo

DATASETS = [
    DatasetInfo("adni-rsfmri", "ADNI rs-fMRI ROI time series (160 Dosenbach ROIs in 6 networks) as per-subject CSVs",
                "<root>/{HC|CN,MCI,EMCI,LMCI}/{CB,CO,DMN,FP,OP,SM}/<subject>.csv (rows: ROIs, columns: time points)",
                "ADNI (LONI IDA, data-use application): preprocess the rs-fMRI yourself and extract the Dosenbach-2010 "
                "5 mm spheres, one CSV per subject and network; point at the folder holding the class folders",
                "medrun.datasets.adni_rsfmri:fixture", ("fmri", "time-series", "classification")),
]

NETWORKS = {"CB": 18, "CO": 32, "DMN": 34, "FP": 21, "OP": 22, "SM": 33}
CLASSES = ("HC", "MCI", "EMCI", "LMCI")
ALIASES = {"HC": ("HC", "CN")}  # folders accepted for a class name
_HINT = ("point at the folder holding the class folders (HC or CN, MCI, EMCI, LMCI), each with network folders, "
         "or try --fixture")


@dataclass(frozen=True)
class Series:
    subject: str
    cls: str  # class name (HC for a CN folder)
    network: str
    path: Path


def class_folder(root: Path, cls: str) -> Path | None:
    for name in ALIASES.get(cls, (cls,)):
        if (Path(root) / name).is_dir():
            return Path(root) / name
    return None


def check_layout(root: Path, classes=None) -> None:
    """Cheap: the root exists and holds at least one (or each named) class folder."""
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"rs-fMRI CSV folder not found at {root}", fix=_HINT)
    want = list(classes) if classes else list(CLASSES)
    present = [c for c in want if class_folder(root, c) is not None]
    if classes and len(present) < len(want):
        missing = [c for c in want if c not in present]
        inner = [p for p in root.iterdir() if p.is_dir() and all(class_folder(p, c) for c in want)]
        if inner:
            raise DataError(f"{root} is one level above the class folders", fix=f"use {inner[0]} instead")
        raise DataError(f"{root} has no class folder(s) {', '.join(missing)}", fix=_HINT)
    if not present:
        raise DataError(f"{root} does not have the rs-fMRI CSV layout: no HC, CN, MCI, EMCI or LMCI folder", fix=_HINT)


def list_series(root: Path, classes, networks) -> list[Series]:
    """Every ``<CLASS>/<NET>/<subject>.csv`` for the named classes and networks, sorted. A subject under two
    class folders is an error (it would be in train and test, or carry two labels)."""
    root = Path(root)
    check_layout(root, classes)
    out, seen = [], {}
    for cls in classes:
        folder = class_folder(root, cls)
        for net in networks:
            if net not in NETWORKS:
                raise DataError(f"unknown network '{net}'", fix=f"use {', '.join(NETWORKS)}")
            d = folder / net
            if not d.is_dir():
                raise DataError(f"{d} not found (network {net} of class {cls})",
                                fix=f"extract network {net} for every subject, or leave it out of dataset.networks")
            files = sorted(p for p in d.iterdir() if p.suffix.lower() == ".csv" and not p.name.startswith("."))
            if not files:
                raise DataError(
                    f"{d} holds no .csv files", fix="one <subject>.csv per subject, rows ROIs, columns time points"
                )
            for p in files:
                other = seen.setdefault(p.stem, cls)
                if other != cls:
                    raise DataError(f"subject {p.stem} is in two class folders, {other} and {cls} ({p})",
                                    fix="keep each subject under one class folder only")
                out.append(Series(p.stem, cls, net, p))
    return out


def read_series(path: Path, network: str | None = None):
    """One CSV → float64 array (ROIs × time points), checked; ``None`` if it holds an exact zero (the authors'
    filter drops such subjects)."""
    import numpy as np
    import pandas as pd

    path = Path(path)
    try:
        df = pd.read_csv(path, header=None)
    except (OSError, ValueError, pd.errors.ParserError) as e:
        raise DataError(f"{path} is not a readable CSV ({type(e).__name__})",
                        fix="one row per ROI, one column per time point, comma-separated, no header") from None
    try:
        x = df.to_numpy(dtype=np.float64)
    except (TypeError, ValueError):
        raise DataError(f"{path} holds non-numeric values (a header row?)",
                        fix="write the time series without a header, numbers only") from None
    if network is not None and x.shape[0] != NETWORKS[network]:
        raise DataError(f"{path} has {x.shape[0]} rows but network {network} has {NETWORKS[network]} ROIs",
                        fix="one row per ROI of the network, in Dosenbach order")
    if x.shape[1] < 4:
        raise DataError(f"{path} has {x.shape[1]} time points", fix="the 3-point sliding window needs at least 4")
    bad = ~np.isfinite(x)
    if bad.any():
        r, c = np.argwhere(bad)[0]
        raise DataError(f"{path} (subject {path.stem}) has {int(bad.sum())} NaN/inf value(s), first at ROI row "
                        f"{r + 1}, time point {c + 1}", fix="re-extract the time series or drop the subject")
    const = np.flatnonzero(np.ptp(x, axis=1) == 0)
    if len(const):
        raise DataError(
            f"{path} (subject {path.stem}) has constant ROI row(s) {', '.join(str(i + 1) for i in const[:5])}",
            fix="a sphere outside the brain mask? re-extract the time series or drop the subject",
        )
    if (x == 0).any():
        return None
    return x


def fixture(out: Path, seed: int = 0, n_per_class: int = 20, length: int = 60) -> Path:
    """The card's miniature: HC and MCI × ``n_per_class`` subjects, network CB only (18 ROIs), T = ``length``.
    HC ROIs are sinusoids of amplitude 1 (first 9) or 3 (last 9), MCI ROIs all amplitude 2, each with a random
    frequency and phase plus N(0, 0.1) noise; so an HC PR matrix has a 2×2 block pattern and an MCI one is nearly
    flat. No value is exactly 0 (the zero filter)."""
    import numpy as np

    rng = np.random.default_rng(seed)
    root = Path(out) / "rsfmri"
    t = np.arange(length)
    n = NETWORKS["CB"]
    for ci, cls in enumerate(("HC", "MCI")):
        d = root / cls / "CB"
        d.mkdir(parents=True, exist_ok=True)
        for s in range(n_per_class):
            amp = np.where(np.arange(n) < n // 2, 1.0, 3.0) if cls == "HC" else np.full(n, 2.0)
            omega = rng.uniform(0.25, 0.45, (n, 1))
            phase = rng.uniform(0, 2 * np.pi, (n, 1))
            x = amp[:, None] * np.sin(omega * t + phase) + rng.normal(0, 0.1, (n, length))
            x = np.round(x, 6)
            x[x == 0] = 1e-6  # never an exact zero once written with 6 decimals
            subject = f"{ci * 100 + 2:03d}_S_{s + 1:04d}"  # ADNI-style subject ids
            np.savetxt(d / f"{subject}.csv", x, delimiter=",", fmt="%.6f")
    return root
