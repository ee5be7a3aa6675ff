"""Pediatric B-ALL bone-marrow flow cytometry for MRD detection (day 15; flowrepository.org): Vie (Vienna, LSR II),
Bln (Berlin, Navios) and Bue (Buenos Aires, FACSCanto II), as the mrd-flow card and the official code read them.

Layout (one folder per dataset; every sample is an events table and a labels table with one row per event)::

    <root>/
        <sample>.pkl + <sample>_labels.pkl      the official "preloaded" format: pandas DataFrames, events × marker
                                                columns and events × gate columns (0/1)
        <sample>.csv + <sample>_labels.csv      the same tables as CSV (header row: marker / gate names)
        <sample>.fcs + <sample>_labels.csv|pkl  FCS 2.0/3.x as cytometers write them (read with flowio); each
                                                channel is named by its $PnS (stain) or else $PnN (detector)
        data_splits/train.txt, eval.txt, test.txt   optional: one sample per line (a name, or a path whose stem
                                                is the name, as in the official split lists)

Marker names are normalised (``CD45-PerCP`` and ``CD45 KrO`` → ``CD45``, ``SYTO 41`` → ``SY41``, ``FSC A`` →
``FSC-A``, ``Time`` → ``TIME``); markers a sample lacks are filled with 0 (panels differ between labs). An FCS
channel must be one of the manifest's markers after normalisation or be named in ``dataset.channels`` (mapped to a
marker, or ``null`` to ignore it): a channel nobody mapped is an error, not silently dropped. Events are kept where
any of the filter gates (``Intact``) is set; the label is 1 where any blast gate (``blast34``, ``blastother``,
``blast``) is set.

Pickles are data from users: they are read with a restricted unpickler that builds pandas DataFrames / Series /
indexes and NumPy arrays and nothing else, so a pickle that would call anything else is refused before anything
in it runs.
"""

from __future__ import annotations

import pickle
import re
from dataclasses import dataclass, field
from pathlib import Path

from medrun.errors import DataError

from . import DatasetInfo

_SOURCE = ("flowrepository.org (the paper's public B-ALL MRD data sets; the paper gives no accession ids): convert "
           "each sample to <sample>.pkl + <sample>_labels.pkl (or CSV / FCS + labels) in one folder")
DATASETS = [
    DatasetInfo("vie", "Vie: 519 pediatric B-ALL MRD samples, Vienna (LSR II), B7 and ReALB panels",
                "<sample>.pkl + <sample>_labels.pkl (or .csv pairs, or .fcs + _labels.csv); "
                "data_splits/{train,eval,test}.txt",
                _SOURCE, "medrun.datasets.flow_mrd:fixture_vie", ("cytometry", "point-set")),
    DatasetInfo("bln", "Bln: 72 pediatric B-ALL MRD samples, Berlin (Navios), test only",
                "<sample>.csv + <sample>_labels.csv (or .pkl pairs, or .fcs + _labels.csv)",
                _SOURCE, "medrun.datasets.flow_mrd:fixture_bln", ("cytometry", "point-set")),
    DatasetInfo("bue", "Bue: 65 pediatric B-ALL MRD samples, Buenos Aires (FACSCanto II), test only",
                "<sample>.fcs + <sample>_labels.csv (or .pkl / .csv pairs)",
                _SOURCE, "medrun.datasets.flow_mrd:fixture_bue", ("cytometry", "point-set")),
]

MARKERS = ("TIME", "FSC-A", "FSC-W", "SSC-A", "CD20", "CD10", "CD45", "CD34", "CD19", "CD38", "SY41")
EVENT_SUFFIXES = (".pkl", ".csv", ".fcs")
LABEL_SUFFIXES = ("_labels.pkl", "_labels.csv")
SPLIT_FILES = {"train": "train.txt", "val": "eval.txt", "test": "test.txt"}


@dataclass(frozen=True)
class SampleFiles:
    name: str
    events: Path
    labels: Path | None


@dataclass
class ReadOptions:
    markers: tuple[str, ...] = MARKERS
    filter_gates: tuple[str, ...] = ("Intact",)
    blast_gates: tuple[str, ...] = ("blast34", "blastother", "blast")
    channels: dict = field(default_factory=dict)  # FCS channel (raw or normalised name) → marker, or None: ignore
    scale: str = "none"  # none | minmax | arcsinh
    cofactor: float = 150.0
    clean_spillover: float | None = None
    spillover_range: tuple[float, float] = (0.0, 4.5)


@dataclass
class FlowSample:
    name: str
    events: object  # float32 (n, len(markers)), after gating, marker selection and scaling
    labels: object  # uint8 (n,) 1 = blast; None when the sample has no labels file
    files: list[str]
    n_raw: int = 0
    missing: list[str] = field(default_factory=list)  # markers the sample lacks (filled with 0)

    def __len__(self) -> int:
        return len(self.events)


# -- the restricted unpickler -------------------------------------------------------------------------------------
_ALLOWED = {
    ("numpy", "ndarray"), ("numpy", "dtype"), ("_codecs", "encode"), ("builtins", "slice"),
    ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "scalar"),
    ("numpy.core.numeric", "_frombuffer"), ("numpy._core.numeric", "_frombuffer"),
    ("pandas", "DataFrame"), ("pandas", "Series"), ("pandas", "Index"), ("pandas", "RangeIndex"),
    ("pandas", "StringDtype"), ("pandas.arrays", "StringArray"),
    ("pandas.core.frame", "DataFrame"), ("pandas.core.series", "Series"),
    ("pandas.core.indexes.base", "Index"), ("pandas.core.indexes.base", "_new_Index"),
    ("pandas.core.indexes.range", "RangeIndex"), ("pandas.core.indexes.multi", "MultiIndex"),
    ("pandas.core.internals.managers", "BlockManager"), ("pandas.core.internals.managers", "SingleBlockManager"),
    ("pandas._libs.internals", "_unpickle_block"), ("pandas._libs.arrays", "__pyx_unpickle_NDArrayBacked"),
    ("pandas.core.arrays.string_", "StringArray"), ("pandas.core.arrays.string_", "StringDtype"),
    ("pandas.core.arrays.numpy_", "NumpyExtensionArray"),
}


def _restricted_unpickler(f):
    from pandas.compat.pickle_compat import Unpickler, _class_locations_map

    class DataOnly(Unpickler):
        def find_class(self, module, name):
            module, name = _class_locations_map.get((module, name), (module, name))  # pandas' renames of old pickles
            if (module, name) in _ALLOWED or (module == "numpy.dtypes" and name.endswith("DType")):
                return super().find_class(module, name)
            raise pickle.UnpicklingError(f"refusing to load {module}.{name} (only pandas tables and numpy arrays)")

    return DataOnly(f)


def load_pickle(path: Path):
    """A DataFrame, Series or ndarray from a pickle, built by the restricted unpickler; anything else is refused
    (DataError) without being executed."""
    import numpy as np
    import pandas as pd

    path = Path(path)
    try:
        with open(path, "rb") as f:
            obj = _restricted_unpickler(f).load()
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, ImportError, IndexError,
            KeyError, OSError) as e:
        msg = str(e).splitlines()[0][:200] if str(e) else type(e).__name__
        raise DataError(f"{path}: not a readable pickle of a table ({msg})",
                        fix="write it with DataFrame.to_pickle (pandas tables and numpy arrays only)") from None
    if not isinstance(obj, (pd.DataFrame, pd.Series, np.ndarray)):
        raise DataError(f"{path} holds a {type(obj).__name__}, not a DataFrame or an array",
                        fix="write the sample's events / labels with DataFrame.to_pickle")
    return obj


# -- names --------------------------------------------------------------------------------------------------------
def normalise_marker(name: str) -> str:
    """``CD45-PerCP`` → ``CD45``, ``SYTO 41`` → ``SY41``, ``FSC A`` → ``FSC-A``, ``Time`` → ``TIME``; else as is."""
    s = str(name).strip()
    u = s.upper()
    if u == "TIME":
        return "TIME"
    if m := re.fullmatch(r"(FSC|SSC)[-_ ]?([AHW])", u):
        return f"{m[1]}-{m[2]}"
    if m := re.match(r"(CD\d+[A-Z]?)(?![0-9])(?:$|[-_ /.(])", u):
        return m[1]
    if re.match(r"SY(TO)?[-_ ]?41(?![0-9])", u):
        return "SY41"
    return s


# -- finding samples and splits -----------------------------------------------------------------------------------
def _is_events(p: Path) -> bool:
    n = p.name.lower()
    return (p.is_file() and not p.name.startswith(".") and n.endswith(EVENT_SUFFIXES)
            and not n.endswith(LABEL_SUFFIXES))


def check_layout(name: str, root: Path) -> None:
    """Cheap check (no data read): the folder exists and holds at least one sample file."""
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"{name} folder not found: {root}", fix="pass --data-dir DIR, or use --fixture")
    if not any(_is_events(p) for p in root.iterdir()):
        raise DataError(f"{root} does not have the {name} layout: no <sample>.pkl, .csv or .fcs files in it",
                        fix="point at the folder holding <sample>.pkl + <sample>_labels.pkl pairs (or CSV / FCS)")


def list_samples(root: Path, *, labels_required: bool = True) -> list[SampleFiles]:
    """Every sample in ``root`` (sorted by name) with its labels file."""
    root = Path(root)
    check_layout(root.name, root)
    out = []
    for p in sorted(root.iterdir()):
        if not _is_events(p):
            continue
        name = p.name[: -len(p.suffix)]
        labels = next((root / f"{name}{s}" for s in LABEL_SUFFIXES if (root / f"{name}{s}").is_file()), None)
        if labels is None and labels_required:
            raise DataError(f"{p} has no labels file", fix=f"add {name}_labels.pkl or {name}_labels.csv beside it")
        out.append(SampleFiles(name, p, labels))
    names = [s.name for s in out]
    if len(set(names)) != len(names):
        dup = sorted({n for n in names if names.count(n) > 1})[0]
        raise DataError(f"{root}: sample '{dup}' exists in two formats", fix="keep one of its .pkl / .csv / .fcs files")
    return out


def _stem(line: str) -> str:
    name = Path(line.strip()).name
    for s in (".pkl", ".csv", ".fcs", ".xml", ".analysis"):
        if name.lower().endswith(s):
            return name[: -len(s)]
    return name


def read_splits(folder: Path, names: list[str]) -> dict[str, list[str]] | None:
    """``{train, val, test: [sample names]}`` from ``train.txt``, ``eval.txt``, ``test.txt`` (missing files: empty
    splits); None when the folder does not exist. Unknown or repeated samples are errors naming the list."""
    folder = Path(folder)
    if not folder.is_dir():
        return None
    known, seen, out = set(names), {}, {}
    for split, fname in SPLIT_FILES.items():
        path = folder / fname
        items = [_stem(x) for x in path.read_text().splitlines() if x.strip()] if path.is_file() else []
        for it in items:
            if it not in known:
                raise DataError(f"{path} lists sample '{it}', which is not in the data folder",
                                fix="remove it from the list or add its files")
            if it in seen:
                raise DataError(f"sample '{it}' is in both {seen[it]} and {path}", fix="keep it in one split list")
            seen[it] = path
        out[split] = items
    return out


# -- reading one sample -------------------------------------------------------------------------------------------
def _table(path: Path):
    import pandas as pd

    if path.suffix.lower() == ".pkl":
        obj = load_pickle(path)
        return obj.to_frame() if isinstance(obj, pd.Series) else obj
    try:
        return pd.read_csv(path)
    except Exception as e:  # noqa: BLE001 (any unreadable CSV is the same problem to the user)
        raise DataError(f"cannot read {path}: {type(e).__name__}: {str(e).splitlines()[0][:200] if str(e) else ''}",
                        fix="a CSV with a header row of marker / gate names") from None


def _fcs(path: Path, opt: ReadOptions):
    """An FCS file's events as a DataFrame with one column per mapped marker (flowio; values as stored, after the
    file's own gain / log-decade scaling, as cytometry software shows them)."""
    import numpy as np
    import pandas as pd

    try:
        import flowio
    except ImportError:
        from medrun.errors import EnvError

        raise EnvError("reading FCS files needs flowio", fix="pip install flowio") from None
    try:
        fd = flowio.FlowData(str(path))
        data = fd.as_array(preprocess=True)
    except Exception as e:  # noqa: BLE001 (flowio raises many types for a damaged file)
        msg = str(e).splitlines()[0][:200] if str(e) else ""
        raise DataError(f"cannot read FCS file {path}: {type(e).__name__}: {msg}",
                        fix="export the sample again from the cytometer software (FCS 2.0/3.0/3.1)") from None
    cols = {}
    for i, (pnn, pns) in enumerate(zip(fd.pnn_labels, fd.pns_labels, strict=True)):
        raw = str(pns).strip() if isinstance(pns, str) and pns.strip() else str(pnn)
        marker = _map_channel(path, raw, str(pnn), opt)
        if marker is not None and marker not in cols:
            cols[marker] = np.asarray(data[:, i], dtype=np.float64)
    return pd.DataFrame(cols)


def _map_channel(path: Path, raw: str, pnn: str, opt: ReadOptions) -> str | None:
    for key in (raw, pnn, normalise_marker(raw)):
        if key in opt.channels:
            return opt.channels[key]
    norm = normalise_marker(raw)
    if norm in opt.markers:
        return norm
    raise DataError(f"{path}: channel '{raw}' ({pnn}) is not mapped to a marker of the manifest",
                    fix=f"map it with -o 'dataset.channels.{norm}=<marker>' or ignore it with "
                        f"-o 'dataset.channels.{norm}=null'")


def _events_frame(files: SampleFiles, opt: ReadOptions):
    import numpy as np
    import pandas as pd

    suffix = files.events.suffix.lower()
    df = _fcs(files.events, opt) if suffix == ".fcs" else _table(files.events)
    if isinstance(df, np.ndarray):
        if df.ndim != 2 or df.shape[1] != len(opt.markers):
            raise DataError(f"{files.events} holds an array of shape {df.shape}, not events × {len(opt.markers)} "
                            "markers", fix="store the events as a DataFrame with marker names as columns")
        df = pd.DataFrame(df, columns=list(opt.markers))
    df = df.rename(columns=lambda c: normalise_marker(c) if suffix != ".fcs" else c)
    return df.loc[:, ~df.columns.duplicated()]


def _labels(files: SampleFiles, n: int, opt: ReadOptions):
    """(keep mask from the filter gates, blast labels) of the sample's n events."""
    import numpy as np
    import pandas as pd

    lab = _table(files.labels)
    if isinstance(lab, np.ndarray):
        lab = pd.DataFrame({"blast": lab.ravel()}) if lab.ndim == 1 or lab.shape[1] == 1 else pd.DataFrame(lab)
    if len(lab) != n:
        raise DataError(f"{files.labels} has {len(lab)} rows but {files.events} has {n} events",
                        fix="the labels table needs one row per event, in the same order")
    cols = [str(c) for c in lab.columns]
    lab.columns = cols
    if opt.filter_gates and any(g in cols for g in opt.filter_gates):
        keep = (lab[[g for g in opt.filter_gates if g in cols]].to_numpy() > 0).any(1)
    elif opt.filter_gates and not (len(cols) == 1 and cols[0] == "blast"):  # a bare blast vector: nothing to gate
        raise DataError(f"{files.labels} has none of the filter gates {list(opt.filter_gates)} (columns: "
                        f"{', '.join(cols[:12])})", fix="set -o dataset.filter_gates=[...] to its gate, or [] for none")
    else:
        keep = np.ones(n, bool)
    blast_cols = [g for g in opt.blast_gates if g in cols]
    y = (lab[blast_cols].to_numpy() > 0).any(1) if blast_cols else np.zeros(n, bool)
    return keep, y.astype(np.uint8)


def load(files: SampleFiles, opt: ReadOptions | None = None) -> FlowSample:
    """One sample: read, gate, select and order the markers (missing ones 0), scale, clean spillover."""
    import numpy as np

    opt = opt or ReadOptions()
    df = _events_frame(files, opt)
    n = len(df)
    if files.labels is not None:
        keep, y = _labels(files, n, opt)
    else:
        keep, y = np.ones(n, bool), None
    missing = [m for m in opt.markers if m not in df.columns]
    if len(missing) == len(opt.markers):
        raise DataError(f"{files.events} has none of the markers {', '.join(opt.markers)} (columns: "
                        f"{', '.join(map(str, list(df.columns)[:12]))})", fix="name its columns by marker (e.g. CD45)")
    try:
        x = df.reindex(columns=list(opt.markers), fill_value=0).to_numpy(dtype=np.float32)[keep]
    except (ValueError, TypeError) as e:
        raise DataError(f"{files.events}: marker values are not numbers ({e})",
                        fix="store numeric marker values") from None
    if not np.isfinite(x).all():
        raise DataError(f"{files.events} holds NaN or infinite values", fix="remove or fill them before training")
    present = np.array([m not in missing for m in opt.markers])
    if opt.scale == "arcsinh":
        x[:, present] = np.arcsinh(x[:, present] / opt.cofactor)
    elif opt.scale == "minmax" and len(x):
        lo, hi = x.min(0), x.max(0)
        x[:, present] = ((x - lo) / np.where(hi > lo, hi - lo, 1))[:, present]
    y = None if y is None else y[keep]
    if opt.clean_spillover is not None:
        lo, hi = opt.spillover_range
        thr = (hi - lo) * opt.clean_spillover
        ok = ~((x < lo + thr) | (x > hi - thr))[:, present].any(1)
        x, y = x[ok], (None if y is None else y[ok])
    if not len(x):
        raise DataError(f"{files.events}: no events left after gating ({list(opt.filter_gates)})",
                        fix="check the labels' filter gate columns or -o dataset.filter_gates=[]")
    read = [str(files.events)] + ([str(files.labels)] if files.labels else [])
    return FlowSample(files.name, np.ascontiguousarray(x), y, read, n, missing)


# -- fixtures: a miniature in the same layout ---------------------------------------------------------------------
# unit-scale population means for FSC-A, FSC-W, SSC-A, CD20, CD10, CD45, CD34, CD19, CD38, SY41 and their weights
_POPS = {
    "granulocytes": ((.55, .45, .75, .10, .35, .60, .10, .10, .30, .60), .42),
    "monocytes": ((.60, .50, .50, .10, .10, .75, .10, .10, .45, .60), .10),
    "lymphocytes": ((.35, .40, .15, .45, .10, .90, .10, .35, .30, .55), .25),
    "b_precursors": ((.35, .40, .15, .25, .55, .55, .30, .70, .70, .60), .11),
    "debris": ((.10, .20, .10, .10, .10, .15, .10, .10, .10, .15), .12),
}
_BLAST_SHIFT = (0, 0, 0, -.10, .25, -.25, .35, 0, 0, 0)  # from the B-precursors: CD10↑, CD45↓, CD34↑
SCALE = 4.5  # stored values span about 0–4.5, the range the official code's spillover cleaning assumes


def simulate(rng, n: int, blast_frac: float, lab_shift=None):
    """One sample: (events float32 (n, 11) in MARKERS order on the 0–4.5 scale, intact (n,) bool, blast (n,)
    bool, blast34 (n,) bool)."""
    import numpy as np

    n_blast = int(round(blast_frac * n))
    names = list(_POPS)
    w = np.array([_POPS[k][1] for k in names])
    pop = rng.choice(len(names), size=n - n_blast, p=w / w.sum())
    means = np.array([_POPS[k][0] for k in names])
    blast_mean = np.array(_POPS["b_precursors"][0]) + np.array(_BLAST_SHIFT)
    mu = np.concatenate([means[pop], np.repeat(blast_mean[None], n_blast, 0)])
    x = mu + rng.normal(0, 0.04, mu.shape)
    x += rng.uniform(-0.15, 0.15, (1, 10))  # per-sample shift of every marker: context beats a fixed boundary
    if lab_shift is not None:
        x += lab_shift
    perm = rng.permutation(n)
    x = x[perm]
    blast = np.concatenate([np.zeros(n - n_blast, bool), np.ones(n_blast, bool)])[perm]
    debris = np.concatenate([pop == names.index("debris"), np.zeros(n_blast, bool)])[perm]
    intact = ~(debris & (rng.random(n) < 0.5))
    blast34 = blast & (x[:, 6] > blast_mean[6] + 0.0)
    t = np.sort(rng.random(n))[:, None]
    events = np.concatenate([t, x], 1) * SCALE
    return events.astype(np.float32), intact, blast, blast34


def _write_pair(root: Path, name: str, events, intact, blast, blast34, fmt: str, extra_cd58: bool, rng) -> None:
    import numpy as np
    import pandas as pd

    df = pd.DataFrame(events, columns=list(MARKERS))
    if extra_cd58:  # the ReALB / Bln / Bue panels also stain CD58 (not a feature of the model)
        df.insert(4, "CD58", (rng.normal(0.4, 0.1, len(df)) * SCALE).astype(np.float32))
    if fmt == "pkl-split":  # official gates: blast34 / blastother
        lab = pd.DataFrame({"Intact": intact.astype(np.uint8), "blast34": blast34.astype(np.uint8),
                            "blastother": (blast & ~blast34).astype(np.uint8)})
    else:
        lab = pd.DataFrame({"Intact": intact.astype(np.uint8), "blast": blast.astype(np.uint8)})
    if fmt.startswith("pkl"):
        df.to_pickle(root / f"{name}.pkl")
        lab.to_pickle(root / f"{name}_labels.pkl")
    elif fmt == "csv":
        df.to_csv(root / f"{name}.csv", index=False, float_format="%.5f")
        lab.to_csv(root / f"{name}_labels.csv", index=False)
    else:  # fcs: raw linear values (150·sinh of the stored scale), detector + stain names as a FACSCanto writes
        chans = [("Time", None, "TIME"), ("FSC-A", None, "FSC-A"), ("FSC-H", None, None), ("FSC-W", None, "FSC-W"),
                 ("SSC-A", None, "SSC-A"), ("FITC-A", "CD58 FITC", "CD58"), ("PE-A", "CD10 PE", "CD10"),
                 ("PerCP-Cy5-5-A", "CD34 PerCP-Cy5.5", "CD34"), ("PE-Cy7-A", "CD19 PE-Cy7", "CD19"),
                 ("APC-A", "CD38 APC", "CD38"), ("APC-H7-A", "CD20 APC-A750", "CD20"), ("V500-A", "CD45 KrO", "CD45"),
                 ("V450-A", "SYTO 41", "SY41")]
        cols = [df[c].to_numpy() if c else df["FSC-A"].to_numpy() * 0.9 for _, _, c in chans]
        raw = 150.0 * np.sinh(np.stack(cols, 1).astype(np.float64))
        write_fcs(root / f"{name}.fcs", raw.astype(np.float32), [c[0] for c in chans], [c[1] for c in chans])
        lab.to_csv(root / f"{name}_labels.csv", index=False)


def write_fcs(path: Path, data, pnn: list[str], pns: list[str | None]) -> Path:
    """An FCS 3.1 file (list mode, float32) with detector ($PnN) and stain ($PnS) names, written by flowio."""
    import flowio
    import numpy as np

    data = np.ascontiguousarray(data, dtype=np.float32)
    with open(path, "wb") as f:
        flowio.create_fcs(f, data.ravel().tolist(), list(pnn), opt_channel_names=list(pns),
                          metadata_dict={"CYT": "medrun fixture"})
    return Path(path)


def _fixture(out_dir: Path, seed: int, name: str, n_samples: int, fmt: str, lab_shift, splits: bool) -> Path:
    import numpy as np

    root = Path(out_dir) / name
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed + {"vie": 0, "bln": 101, "bue": 202}[name])
    names = []
    for i in range(n_samples):
        frac = 0.0 if (splits and i == 0) else rng.uniform(0.01, 0.07)  # one blast-free sample (train), MRD 1–7 %
        events, intact, blast, b34 = simulate(rng, 4000, frac, lab_shift)
        sample = f"{name.upper()}_{2016 + i % 4}_{i:03d}"
        kind = fmt if fmt != "pkl" else ("pkl-split" if i % 2 else "pkl")
        _write_pair(root, sample, events, intact, blast, b34, kind, extra_cd58=(fmt != "pkl" or i % 2 == 1), rng=rng)
        names.append(sample)
    if splits:
        (root / "data_splits").mkdir(exist_ok=True)
        parts = {"train.txt": names[:8], "eval.txt": names[8:12], "test.txt": names[12:]}
        for fname, items in parts.items():  # the official lists name files by path
            (root / "data_splits" / fname).write_text("".join(f"/data/preloaded/{s}.pkl\n" for s in items))
    return root


def fixture_vie(out_dir: Path, seed: int = 0) -> Path:
    """16 samples × 4,000 events as pickled DataFrame pairs (B7 samples without CD58, ReALB samples with it and
    blast34 / blastother gates), MRD 0–7 %, plus data_splits/ (8 train, 4 eval, 4 test)."""
    return _fixture(out_dir, seed, "vie", 16, "pkl", None, True)


def fixture_bln(out_dir: Path, seed: int = 0) -> Path:
    """6 test samples as CSV pairs, with another instrument's offsets (Navios)."""
    import numpy as np

    return _fixture(out_dir, seed, "bln", 6, "csv", np.array([.04, .03, .05, .03, .03, .03, .03, .03, .03, .03]), False)


def fixture_bue(out_dir: Path, seed: int = 0) -> Path:
    """6 test samples as FCS 3.1 files (raw linear values, detector and stain names) + _labels.csv."""
    import numpy as np

    shift = np.array([-.03, -.02, -.04, .02, .02, -.02, .02, .02, .02, 0])
    return _fixture(out_dir, seed, "bue", 6, "fcs", shift, False)
