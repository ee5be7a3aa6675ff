"""Sepsis cohorts for the sepsis-synth card: per-patient tables, either flat (one row per patient) or hourly
timelines that are flattened to one row per patient at a cut-off hour.

``sepsis-csv`` — the layout the card defines for the paper's two (non-public) cohorts, MaDB and SLDB::

    <root>/
        internal.csv        one row per patient: patient_id, the paper's 27 features (Table 1 names), sepsis (0/1);
                            empty cells (or NaN) are missing values. Train/test split and generator seed.
        external.csv        the same columns: the external validation cohort
        feature_map.yaml    optional: `source column: name` lines, for tables that use other column names
        timelines/*.psv     optional: hourly per-patient timelines (ICULOS, SepsisLabel, …) for `prepare`

``physionet2019`` — the public stand-in, PhysioNet/CinC Challenge 2019, as unpacked::

    <root>/                 the folder holding both training sets
        training_setA/p000001.psv …     pipe-separated, one row per ICU hour, 41 columns (HR … ICULOS, SepsisLabel),
        training_setB/p100001.psv …     NaN for not measured

Setting A plays the internal cohort, setting B the external one. 21 of the 27 features have a PhysioNet column
(``PHYSIONET_MAP``); CRP, lymphocytes, sodium, lipase, procalcitonin and ALT do not.

Reading (``read``): a *file* is a flat table (``,``-separated, or ``|`` for ``.psv``); a *folder* is one timeline per
file (``.psv`` or ``.csv``), flattened by ``flatten`` to the last measured value of each feature within the first
``cutoff`` hours (``hour`` ≤ cutoff, the ICULOS column), labelled 1 when any ``sepsis`` (SepsisLabel) entry is 1;
patients labelled within the cut-off are dropped (``drop_early``), as are patients with no row in it. Column names
go through a feature map (``source column → name``; the targets ``hour``, ``sepsis`` and ``patient_id`` name the
hour index, the label and the id). Each problem is a ``DataError`` naming the file and the fix: a feature or label
column that is absent (also when the map names it), a non-numeric value, a label outside {0, 1}, and a cohort whose
patients are all of one class.

Fixtures: ``fixture_csv`` writes the card's miniature (400 internal patients, about 23 % sepsis; 300 external, half
sepsis, every feature mean shifted by 0.3 SD; 27 columns with 10 % missing; sepsis raises lactate, procalcitonin,
CRP, heart rate, respiratory rate and leukocytes by 0.8 SD over correlated noise), a 20-patient timeline folder in
hospital column names and the ``feature_map.yaml`` that maps them. ``fixture_physionet`` writes 240 + 160 patients in
the challenge's exact file format (41 columns, ``NaN``, ICULOS from 1, SepsisLabel set from 6 h before onset, a few
patients labelled within the first 9 h).
"""

from __future__ import annotations

import csv
import math
from dataclasses import dataclass, field
from pathlib import Path

from medrun.errors import DataError

from . import DatasetInfo

DATASETS = [
    DatasetInfo("sepsis-csv", "Sepsis cohorts as flat tables, one row per patient (the sepsis-synth card's layout)",
                "internal.csv + external.csv (patient_id, 27 features, sepsis 0/1); optional feature_map.yaml, "
                "timelines/*.psv",
                "not public (MaDB: University Medical Centre Mannheim, via Schamoni et al. 2022; SLDB: Son Llàtzer "
                "Hospital), or the internal.csv/external.csv that `medrun prepare sepsis-synth` writes from "
                "timelines; point at the folder holding them", "medrun.datasets.sepsis:fixture_csv",
                ("tabular", "icu", "sepsis")),
    DatasetInfo("physionet2019", "PhysioNet/CinC Challenge 2019 sepsis timelines (setA internal, setB external)",
                "training_setA/p*.psv + training_setB/p*.psv (pipe-separated, one row per ICU hour)",
                "PhysioNet, 'Early Prediction of Sepsis from Clinical Data: the PhysioNet/Computing in Cardiology "
                "Challenge 2019' (open access: training_setA and training_setB); point at the folder holding both",
                "medrun.datasets.sepsis:fixture_physionet", ("tabular", "icu", "sepsis", "timelines")),
]

# Table 1 of the paper, in its order and spelling
FEATURES = ("heart_rate", "leukocytes", "temperature", "respiratory_rate", "bilirubin", "blood_urea_nitrogen",
            "creatinine", "diastolic_bp", "fraction_of_inspired_o2", "systolic_bp", "thrombocytes", "lactate",
            "bicarbonate", "c-reactive_protein", "hemoglobin", "lymphocytes", "sodium", "pancreatic_lipase",
            "procalcitonin", "oxygen_saturation", "blood_glucose", "chloride", "calcium", "potassium",
            "alanine_transaminase", "aspartate_transaminase", "age")
SPECIAL = ("hour", "sepsis", "patient_id")  # map targets that are not features
BASE_MAP = {"ICULOS": "hour", "SepsisLabel": "sepsis"}  # PhysioNet's names for the hour index and the label

# The challenge's columns, in file order
PHYSIONET_COLUMNS = ("HR", "O2Sat", "Temp", "SBP", "MAP", "DBP", "Resp", "EtCO2", "BaseExcess", "HCO3", "FiO2", "pH",
                     "PaCO2", "SaO2", "AST", "BUN", "Alkalinephos", "Calcium", "Chloride", "Creatinine",
                     "Bilirubin_direct", "Glucose", "Lactate", "Magnesium", "Phosphate", "Potassium",
                     "Bilirubin_total", "TroponinI", "Hct", "Hgb", "PTT", "WBC", "Fibrinogen", "Platelets", "Age",
                     "Gender", "Unit1", "Unit2", "HospAdmTime", "ICULOS", "SepsisLabel")
# the 21 paper features with a PhysioNet column (the card's list)
PHYSIONET_MAP = {"HR": "heart_rate", "WBC": "leukocytes", "Temp": "temperature", "Resp": "respiratory_rate",
                 "Bilirubin_total": "bilirubin", "BUN": "blood_urea_nitrogen", "Creatinine": "creatinine",
                 "DBP": "diastolic_bp", "FiO2": "fraction_of_inspired_o2", "SBP": "systolic_bp",
                 "Platelets": "thrombocytes", "Lactate": "lactate", "HCO3": "bicarbonate", "Hgb": "hemoglobin",
                 "O2Sat": "oxygen_saturation", "Glucose": "blood_glucose", "Chloride": "chloride",
                 "Calcium": "calcium", "Potassium": "potassium", "AST": "aspartate_transaminase", "Age": "age"}
# the other six under the names a hospital export might use (the fixture's timelines)
HOSPITAL_EXTRA = {"CRP": "c-reactive_protein", "Lymph": "lymphocytes", "Sodium": "sodium",
                  "Lipase": "pancreatic_lipase", "PCT": "procalcitonin", "ALT": "alanine_transaminase"}
# the features a layout provides (the default of dataset.features)
DEFAULT_FEATURES = {"sepsis-csv": FEATURES, "physionet2019": tuple(f for f in FEATURES if f in PHYSIONET_MAP.values())}
BUILTIN_MAPS = {"physionet2019": {**BASE_MAP, **PHYSIONET_MAP}, "sepsis-csv": dict(BASE_MAP)}
LAYOUT = {"sepsis-csv": ("internal.csv", "external.csv"), "physionet2019": ("training_setA", "training_setB")}

_NA = {"", "nan", "na", "n/a", "null", "none"}
_FIX_MAP = ("map it in the feature map (dataset.feature_map), add the column, or leave the feature out "
            "(dataset.features)")


@dataclass
class Table:
    """One cohort, one row per patient: ``x`` (N, F) float64 with NaN where missing, ``y`` (N,) 0/1 (None when
    unlabelled)."""

    source: Path
    ids: list[str]
    x: object  # np.ndarray
    y: object  # np.ndarray | None
    features: list[str]
    dropped_early: list[str] = field(default_factory=list)  # labelled within the cut-off (timelines)
    dropped_empty: list[str] = field(default_factory=list)  # no row within the cut-off (timelines)

    @property
    def n_sepsis(self) -> int:
        return int(self.y.sum()) if self.y is not None else 0


# -- the feature map ---------------------------------------------------------------------------------------------
def read_feature_map(path: Path) -> dict[str, str]:
    """A YAML mapping ``source column: name`` (names: features, or hour / sepsis / patient_id)."""
    import yaml

    path = Path(path)
    if not path.is_file():
        raise DataError(f"feature map not found: {path}",
                        fix="point dataset.feature_map at a YAML file of `source column: feature name` lines")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError) as e:
        raise DataError(f"{path} is not readable YAML ({str(e).splitlines()[0]})",
                        fix="write one `source column: feature name` line per column") from None
    if not isinstance(data, dict) or not data or not all(
            isinstance(k, (str, int)) and isinstance(v, str) and v.strip() for k, v in data.items()):
        raise DataError(f"{path}: expected a mapping of source column names to feature names",
                        fix="write one `source column: feature name` line per column, e.g. `HR: heart_rate`")
    return {str(k): v.strip() for k, v in data.items()}


def effective_map(dataset: str, user_map: dict[str, str] | None = None) -> dict[str, str]:
    return {**BUILTIN_MAPS.get(dataset, BASE_MAP), **(user_map or {})}


def _sources(fmap: dict[str, str], target: str) -> list[str]:
    return [s for s, t in fmap.items() if t == target and s != target]


def resolve(columns, wanted, fmap: dict[str, str], file: Path, map_name: str | None = None) -> dict[str, str]:
    """{name: source column} for each wanted name: the column of that name, or the one the map renames to it."""
    cols = set(columns)
    out = {}
    for name in wanted:
        found = [c for c in (name, *_sources(fmap, name)) if c in cols]
        if not found:
            via = _sources(fmap, name)
            names = ", ".join(repr(s) for s in via)
            how = f" (nor {names}, which {map_name or 'the feature map'} maps to it)" if via else ""
            what = "label" if name == "sepsis" else "hour" if name == "hour" else "feature"
            raise DataError(f"{file}: no column for {what} '{name}'{how}",
                            fix=_FIX_MAP if what == "feature" else f"add the {what} column or map its name to "
                                                                   f"'{name}' in the feature map")
        if len(found) > 1:
            raise DataError(f"{file}: columns {' and '.join(repr(f) for f in found)} both give '{name}'",
                            fix="drop one of them, or fix the feature map")
        out[name] = found[0]
    return out


def _renamed(columns, fmap: dict[str, str]) -> set[str]:
    return {fmap.get(c, c) for c in columns}


def features_in(columns, fmap: dict[str, str]) -> list[str]:
    """The features a table provides: the paper's (Table 1 order) found under their name or a mapped one, then
    other names the map gives."""
    have = _renamed(columns, fmap)
    extra = [t for t in dict.fromkeys(fmap.values()) if t not in FEATURES and t not in SPECIAL and t in have]
    return [f for f in FEATURES if f in have] + extra


# -- headers (cheap checks) -----------------------------------------------------------------------------------
def _sep(path: Path) -> str:
    return "|" if path.suffix.lower() == ".psv" else ","


def timeline_files(folder: Path) -> list[Path]:
    return sorted(p for p in Path(folder).iterdir()
                  if p.is_file() and not p.name.startswith(".") and p.suffix.lower() in (".psv", ".csv"))


def header(path: Path) -> list[str]:
    """The column names of a flat table, or of the first timeline of a folder."""
    path = Path(path)
    if path.is_dir():
        files = timeline_files(path)
        if not files:
            raise DataError(f"no timelines (.psv or .csv files) in {path}",
                            fix="point at a folder of per-patient timelines, or at a flat CSV")
        path = files[0]
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            row = next(csv.reader(f, delimiter=_sep(path)), None)
    except (OSError, UnicodeDecodeError, csv.Error) as e:
        raise DataError(f"{path} is not a readable table ({e})",
                        fix="write it as UTF-8 CSV (or pipe-separated .psv)") from None
    if not row:
        raise DataError(f"{path} is empty", fix="write a header line and one row per patient (or per hour)")
    return [c.strip() for c in row]


def check(path: Path, fmap: dict[str, str], features: list[str] | None, *, what: str, labelled: bool = True,
          map_name: str | None = None) -> list[str]:
    """Cheap layout check before anything is hashed: the file or folder exists and its header has every feature
    (and the label, and for timelines the hour); a flat table's labels are read too (0/1, both classes). Returns
    the features (``features``, or those the header provides)."""
    path = Path(path)
    if not path.exists():
        raise DataError(f"{what} data not found: {path}",
                        fix=f"set dataset.{what} to a flat CSV or a folder of timelines (relative to dataset.root)")
    cols = header(path)
    feats = list(features) if features else features_in(cols, fmap)
    if not feats:
        raise DataError(f"{path}: none of its columns is a feature ({', '.join(cols[:6])} …)",
                        fix="name the columns as in the paper's Table 1, or give a feature map (dataset.feature_map)")
    ref = timeline_files(path)[0] if path.is_dir() else path
    wanted = [*feats, *(["sepsis"] if labelled else []), *(["hour"] if path.is_dir() else [])]
    got = resolve(cols, wanted, fmap, ref, map_name)
    if labelled and path.is_file():
        with open(path, newline="", encoding="utf-8-sig") as f:
            rows = csv.reader(f, delimiter=_sep(path))
            names = [c.strip() for c in next(rows)]
            j = names.index(got["sepsis"])
            labels = [_label(r[j] if j < len(r) else "", path, got["sepsis"], n) for n, r in enumerate(rows, 2)
                      if any(c.strip() for c in r)]
        require_both(labels, path)
    return feats


def _label(value, path: Path, col: str, line: int) -> int:
    text = str(value).strip()
    try:
        v = float(text)
    except ValueError:
        v = math.nan
    if v not in (0.0, 1.0):
        shown = repr(text) if text else "nothing"
        raise DataError(f"{path}: label column '{col}' holds {shown} on line {line}; labels must be 0 or 1",
                        fix="recode the label to 0 (no sepsis) / 1 (sepsis) and drop unlabelled patients")
    return int(v)


def require_both(labels, path: Path) -> None:
    labels = list(labels)
    classes = set(labels)
    if len(classes) < 2:
        one = next(iter(classes), None)
        raise DataError(f"{path}: all {len(labels)} patients have sepsis = {one}; the split, the generators and the "
                        "AUC need both classes", fix="point at a cohort with sepsis and non-sepsis patients")


# -- reading ----------------------------------------------------------------------------------------------------
def read(path: Path, fmap: dict[str, str], features: list[str] | None, *, what: str = "internal",
         cutoff: float = 9, drop_early: bool = True, labelled: bool = True, map_name: str | None = None) -> Table:
    """A flat table (a file) or a folder of timelines, as one row per patient."""
    path = Path(path)
    feats = check(path, fmap, features, what=what, labelled=labelled and path.is_file(), map_name=map_name)
    if path.is_dir():
        t = flatten(path, fmap, feats, cutoff=cutoff, drop_early=drop_early, labelled=labelled, map_name=map_name)
    else:
        t = read_flat(path, fmap, feats, labelled=labelled, map_name=map_name)
    if not t.ids:
        why = (f" ({len(t.dropped_early)} labelled within the first {cutoff:g} h, {len(t.dropped_empty)} without a "
               "row in them)" if path.is_dir() else "")
        raise DataError(f"no patients in {path}{why}", fix="point at a cohort with patients")
    if labelled:
        require_both(t.y.tolist(), path)
    return t


def _numbers(df, cols: dict[str, str], names: list[str], path: Path, line0: int = 2):
    """The named columns as float64 (NaN where missing); a non-number is a DataError naming file, column, line."""
    import numpy as np

    sub = df[[cols[n] for n in names]]
    try:
        out = sub.to_numpy(dtype=np.float64)  # every column parsed as numbers by read_csv: the fast path
        if not np.isinf(out).any():
            return out
    except (ValueError, TypeError):
        pass
    import pandas as pd

    for name in names:  # find the first bad cell for the message
        col = df[cols[name]]
        text = col.astype(str).str.strip()
        missing = col.isna() | text.str.lower().isin(_NA)
        values = pd.to_numeric(text.where(~missing, "nan"), errors="coerce").to_numpy(dtype=np.float64)
        bad = np.flatnonzero((np.isnan(values) & ~missing.to_numpy()) | np.isinf(values))
        if bad.size:
            i = int(bad[0])
            raise DataError(f"{path}: column '{cols[name]}' holds {text.iloc[i]!r} on line {i + line0}, not a number",
                            fix="write numbers, with an empty cell or NaN for a missing value")
    return sub.to_numpy(dtype=np.float64)


def _labels_of(df, col: str, path: Path):
    import numpy as np

    v = df[col].to_numpy()
    try:
        f = v.astype(np.float64)
        if np.isin(f, (0.0, 1.0)).all():
            return f.astype(np.int64)
    except (ValueError, TypeError):
        pass
    return np.array([_label(x if x == x else "", path, col, n) for n, x in enumerate(v, 2)], dtype=np.int64)


def _read_csv(path: Path, what: str, dtype=None):
    import pandas as pd

    try:
        df = pd.read_csv(path, sep=_sep(path), skip_blank_lines=True, encoding="utf-8-sig", dtype=dtype)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError, ValueError) as e:
        raise DataError(f"{path} is not a readable {what} ({str(e).splitlines()[0]})",
                        fix="write it as UTF-8 CSV (or pipe-separated .psv) with one header line") from None
    df.columns = [str(c).strip() for c in df.columns]
    return df


def read_flat(path: Path, fmap: dict[str, str], features: list[str], *, labelled: bool = True,
              map_name: str | None = None) -> Table:
    path = Path(path)
    idcol = next(iter(_present(header(path), fmap, "patient_id")), None)
    df = _read_csv(path, "table", dtype={idcol: str} if idcol else None)
    cols = resolve(df.columns, [*features, *(["sepsis"] if labelled else [])], fmap, path, map_name)
    x = _numbers(df, cols, features, path)
    y = _labels_of(df, cols["sepsis"], path) if labelled else None
    ids = [str(v).strip() for v in df[idcol]] if idcol else [f"{path.stem}:{n}" for n in range(2, len(df) + 2)]
    if idcol and len(set(ids)) != len(ids):
        dup = next(i for i in ids if ids.count(i) > 1)
        raise DataError(f"{path}: patient '{dup}' has more than one row", fix="keep one row per patient")
    return Table(path, ids, x, y, list(features))


def _present(columns, fmap: dict[str, str], name: str) -> list[str]:
    cols = set(columns)
    return [c for c in (name, *_sources(fmap, name)) if c in cols]


def _read_numeric(path: Path) -> tuple[list[str], object]:
    """A timeline as (columns, float64 array): a plain split-and-float parser, several times faster than pandas on
    files of a few dozen rows (the challenge has 40,336 of them). A cell that is not a number is a DataError."""
    import numpy as np

    try:
        lines = path.read_text(encoding="utf-8-sig").splitlines()
    except (OSError, UnicodeDecodeError) as e:
        raise DataError(f"{path} is not a readable timeline ({e})",
                        fix="write it as UTF-8 text, one row per hour") from None
    sep = _sep(path)
    if not lines or not lines[0].strip():
        raise DataError(f"{path} is empty", fix="write a header line and one row per hour")
    cols = [c.strip() for c in lines[0].split(sep)]
    rows = []
    for n, line in enumerate(lines[1:], 2):
        if not line.strip():
            continue
        cells = line.split(sep)
        if len(cells) != len(cols):
            raise DataError(f"{path}: line {n} has {len(cells)} cells for {len(cols)} columns",
                            fix="write one cell per column on every line")
        try:
            rows.append([float(c) if c.strip().lower() not in _NA else math.nan for c in cells])
        except ValueError:
            j = next(j for j, c in enumerate(cells) if not _is_number(c))
            raise DataError(f"{path}: column '{cols[j]}' holds {cells[j].strip()!r} on line {n}, not a number",
                            fix="write numbers, with an empty cell or NaN for a missing value") from None
    x = np.array(rows, dtype=np.float64).reshape(len(rows), len(cols))
    if np.isinf(x).any():
        i, j = (int(v[0]) for v in np.nonzero(np.isinf(x)))
        raise DataError(f"{path}: column '{cols[j]}' is infinite on line {i + 2}", fix="write finite numbers")
    return cols, x


def _is_number(text: str) -> bool:
    if text.strip().lower() in _NA:
        return True
    try:
        float(text)
    except ValueError:
        return False
    return True


def flatten(folder: Path, fmap: dict[str, str], features: list[str], *, cutoff: float = 9, drop_early: bool = True,
            labelled: bool = True, map_name: str | None = None) -> Table:
    """Timelines → one row per patient: each feature's last measured value with hour ≤ cutoff; label 1 when any
    hour is labelled; patients labelled within the cut-off (``drop_early``) or without a row in it are dropped."""
    import numpy as np

    folder = Path(folder)
    ids, rows, ys, early, empty = [], [], [], [], []
    resolved: dict[tuple, tuple] = {}  # header → column indices (the files of one export share their header)
    wanted = [*features, "hour", *(["sepsis"] if labelled else [])]
    for f in timeline_files(folder):
        cols, x = _read_numeric(f)
        key = tuple(cols)
        if key not in resolved:
            got = resolve(cols, wanted, fmap, f, map_name)
            resolved[key] = ([cols.index(got[n]) for n in features], cols.index(got["hour"]),
                             cols.index(got["sepsis"]) if labelled else None, got)
        fi, hi, li, got = resolved[key]
        hour = x[:, hi]
        if np.isnan(hour).any():
            line = int(np.flatnonzero(np.isnan(hour))[0]) + 2
            raise DataError(f"{f}: hour column '{got['hour']}' is empty on line {line}",
                            fix="give every row its hour since admission")
        inside = hour <= cutoff
        if labelled:
            lab = x[:, li]
            bad = np.flatnonzero(~np.isin(lab, (0.0, 1.0)))
            if bad.size:
                _label("" if np.isnan(lab[bad[0]]) else f"{lab[bad[0]]:g}", f, got["sepsis"], int(bad[0]) + 2)
            if drop_early and (lab[inside] == 1).any():
                early.append(f.stem)
                continue
        if not inside.any():
            empty.append(f.stem)
            continue
        order = np.flatnonzero(inside)[np.argsort(hour[inside], kind="stable")]
        window = x[np.ix_(order, fi)]
        seen = ~np.isnan(window)
        last_row = len(window) - 1 - np.argmax(seen[::-1], axis=0)
        last = np.where(seen.any(0), window[last_row, np.arange(len(fi))], np.nan)
        ids.append(f.stem)
        rows.append(last)
        ys.append(int(lab.max()) if labelled and lab.size else 0)
    x = np.array(rows, dtype=np.float64).reshape(len(rows), len(features))
    return Table(folder, ids, x, np.array(ys, dtype=np.int64) if labelled else None, list(features), early, empty)


# -- fixtures ---------------------------------------------------------------------------------------------------
# plausible ICU means and SDs in the paper's units (the fixture's scale only; nothing is read from them)
_STATS = {"heart_rate": (85, 17), "leukocytes": (11, 4.5), "temperature": (37.0, 0.7), "respiratory_rate": (19, 5),
          "bilirubin": (1.2, 0.9), "blood_urea_nitrogen": (22, 14), "creatinine": (1.3, 0.8), "diastolic_bp": (62, 12),
          "fraction_of_inspired_o2": (0.5, 0.15), "systolic_bp": (122, 22), "thrombocytes": (200, 85),
          "lactate": (2.0, 1.1), "bicarbonate": (24, 4), "c-reactive_protein": (80, 55), "hemoglobin": (10.5, 1.9),
          "lymphocytes": (1.2, 0.6), "sodium": (139, 4), "pancreatic_lipase": (40, 25), "procalcitonin": (1.5, 1.6),
          "oxygen_saturation": (96.5, 2.2), "blood_glucose": (130, 38), "chloride": (105, 5), "calcium": (8.3, 0.7),
          "potassium": (4.1, 0.5), "alanine_transaminase": (40, 30), "aspartate_transaminase": (45, 35),
          "age": (62, 16)}
_DECIMALS = {"heart_rate": 0, "respiratory_rate": 0, "diastolic_bp": 0, "systolic_bp": 0, "thrombocytes": 0,
             "age": 0, "blood_glucose": 0, "sodium": 0, "chloride": 0, "oxygen_saturation": 0, "temperature": 2,
             "fraction_of_inspired_o2": 2}
SIGNAL = ("lactate", "procalcitonin", "c-reactive_protein", "heart_rate", "respiratory_rate", "leukocytes")
_VITALS = ("heart_rate", "temperature", "respiratory_rate", "diastolic_bp", "systolic_bp", "oxygen_saturation")


def _correlation(rng, n: int):
    """A random correlation matrix (low-rank + diagonal): the fixture's correlated noise."""
    import numpy as np

    a = rng.normal(size=(n, 4))
    s = a @ a.T * 0.35 + np.eye(n)
    d = 1 / np.sqrt(np.diag(s))
    return s * d[:, None] * d[None, :]


def _latent(rng, corr, y, shift=None, effect: float = 0.8):
    """Standardised patient values: correlated noise, +effect SD on the signal features for sepsis, + shift."""
    import numpy as np

    z = rng.multivariate_normal(np.zeros(len(FEATURES)), corr, size=len(y))
    sig = [FEATURES.index(f) for f in SIGNAL]
    z[:, sig] += effect * np.asarray(y)[:, None]
    return z + (0 if shift is None else shift)


def _raw(name: str, z):
    """Standardised → the feature's units, kept positive where the quantity is, rounded as a chart would be."""
    import numpy as np

    mean, sd = _STATS[name]
    v = mean + sd * np.asarray(z, dtype=np.float64)
    if name == "age":
        v = np.clip(v, 18, 95)
    elif name == "oxygen_saturation":
        v = np.clip(v, 70, 100)
    elif name == "fraction_of_inspired_o2":
        v = np.clip(v, 0.21, 1.0)
    else:
        v = np.maximum(v, mean * 0.05)
    return np.round(v, _DECIMALS.get(name, 2))


def _fmt(v) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "NaN"
    return f"{v:.10g}"


def _write_flat(path: Path, prefix: str, z, y, rng, missing: float = 0.1) -> None:
    lines = [",".join(["patient_id", *FEATURES, "sepsis"])]
    raw = {f: _raw(f, z[:, j]) for j, f in enumerate(FEATURES)}
    holes = rng.random((len(y), len(FEATURES))) < missing
    for i in range(len(y)):
        cells = ["" if holes[i, j] else _fmt(float(raw[f][i])) for j, f in enumerate(FEATURES)]
        lines.append(",".join([f"{prefix}{i + 1:04d}", *cells, str(int(y[i]))]))
    path.write_text("\n".join(lines) + "\n")


def _labels(rng, n: int, n_pos: int):
    import numpy as np

    y = np.zeros(n, dtype=np.int64)
    y[rng.choice(n, n_pos, replace=False)] = 1
    return y


def fixture_csv(out: Path, seed: int = 0) -> Path:
    """The card's miniature: internal.csv (400, 92 sepsis), external.csv (300, 150 sepsis, means shifted 0.3 SD),
    feature_map.yaml and timelines/ (20 patients, hospital column names)."""
    import numpy as np

    rng = np.random.default_rng(seed)
    root = Path(out)
    root.mkdir(parents=True, exist_ok=True)
    corr = _correlation(rng, len(FEATURES))
    y_int = _labels(rng, 400, 92)
    _write_flat(root / "internal.csv", "MA", _latent(rng, corr, y_int), y_int, rng)
    y_ext = _labels(rng, 300, 150)
    shift = 0.3 * rng.choice([-1.0, 1.0], len(FEATURES))
    _write_flat(root / "external.csv", "SL", _latent(rng, corr, y_ext, shift), y_ext, rng)
    names = {**{v: k for k, v in PHYSIONET_MAP.items()}, **{v: k for k, v in HOSPITAL_EXTRA.items()}}
    (root / "feature_map.yaml").write_text(
        "# hospital export column -> the paper's feature name (Table 1); "
        "ICULOS and SepsisLabel are read as hour and label\n"
        + "".join(f"{names[f]}: {f}\n" for f in FEATURES))
    columns = [names[f] for f in FEATURES] + ["ICULOS", "SepsisLabel"]
    y_tl = _labels(rng, 20, 6)
    _write_timelines(root / "timelines", columns, [names[f] for f in FEATURES], _latent(rng, corr, y_tl), y_tl,
                     rng, first_id=1)
    return root


def _timeline(rng, z, sepsis: int, early: bool):
    """Hourly rows of one patient: {feature: values per hour}, hours, labels (SepsisLabel from onset − 6 h)."""
    import numpy as np

    if sepsis:
        onset = int(rng.integers(8, 15)) if early else int(rng.integers(18, 44))
        length = int(min(48, onset + rng.integers(2, 10)))
    else:
        onset, length = None, int(rng.integers(12, 40))
    hours = np.arange(1, length + 1)
    labels = np.zeros(length, dtype=int) if onset is None else (hours >= onset - 6).astype(int)
    values = {}
    for j, f in enumerate(FEATURES):
        base = z[j]
        if f == "age":
            values[f] = np.full(length, float(_raw(f, [base])[0]))
            continue
        vital = f in _VITALS
        measured = rng.random(length) < (0.85 if vital else 0.12)
        series = _raw(f, base + rng.normal(0, 0.25 if vital else 0.15, length))
        values[f] = np.where(measured, series, np.nan)
    return values, hours, labels


def _write_timelines(folder: Path, columns, feature_columns, z, y, rng, *, first_id: int,
                     physionet: bool = False, early_fraction: float = 0.1) -> None:
    import numpy as np

    folder.mkdir(parents=True, exist_ok=True)
    for i in range(len(y)):
        early = bool(y[i]) and rng.random() < early_fraction
        values, hours, labels = _timeline(rng, z[i], int(y[i]), early)
        cols = {c: values[f] for c, f in zip(feature_columns, FEATURES, strict=True)}
        n = len(hours)
        if physionet:  # the challenge's other columns, mostly empty as in the real files
            cols["MAP"] = np.where(np.isnan(cols["SBP"]), np.nan, np.round((cols["SBP"] + 2 * cols["DBP"]) / 3, 2))
            for c in ("EtCO2", "BaseExcess", "pH", "PaCO2", "SaO2", "Alkalinephos", "Bilirubin_direct", "Magnesium",
                      "Phosphate", "TroponinI", "Hct", "PTT", "Fibrinogen"):
                cols[c] = np.where(rng.random(n) < 0.05, np.round(rng.normal(1, 0.1, n) * _OTHER[c], 2), np.nan)
            unit = int(rng.integers(0, 3))
            cols["Gender"] = np.full(n, float(rng.integers(0, 2)))
            cols["Unit1"] = np.full(n, np.nan if unit == 2 else float(unit == 0))
            cols["Unit2"] = np.full(n, np.nan if unit == 2 else float(unit == 1))
            cols["HospAdmTime"] = np.full(n, -round(float(rng.exponential(12)), 2))
        cols["ICULOS"] = hours.astype(float)
        cols["SepsisLabel"] = labels.astype(float)
        lines = ["|".join(columns)]
        for h in range(n):
            lines.append("|".join(_fmt(float(cols[c][h])) for c in columns))
        (folder / f"p{first_id + i:06d}.psv").write_text("\n".join(lines) + "\n")


_OTHER = {"EtCO2": 33, "BaseExcess": -1, "pH": 7.38, "PaCO2": 41, "SaO2": 92, "Alkalinephos": 100,
          "Bilirubin_direct": 1.5, "Magnesium": 2.0, "Phosphate": 3.5, "TroponinI": 0.5, "Hct": 31, "PTT": 35,
          "Fibrinogen": 290}


def fixture_physionet(out: Path, seed: int = 0) -> Path:
    """training_setA (240 patients, about 25 % sepsis) and training_setB (160, half sepsis, means shifted 0.3 SD)
    in the challenge's format; a tenth of the sepsis patients are labelled within the first 9 h (dropped)."""
    import numpy as np

    rng = np.random.default_rng(seed)
    root = Path(out)
    corr = _correlation(rng, len(FEATURES))
    cols = {v: k for k, v in PHYSIONET_MAP.items()}
    # features without a PhysioNet column still drive the latent values (they are simply not written)
    feature_columns = [cols.get(f, f"_{f}") for f in FEATURES]
    y_a = _labels(rng, 240, 60)
    _write_timelines(root / "training_setA", PHYSIONET_COLUMNS, feature_columns, _latent(rng, corr, y_a, effect=1.0),
                     y_a, rng, first_id=1, physionet=True)
    y_b = _labels(rng, 160, 80)
    shift = 0.3 * rng.choice([-1.0, 1.0], len(FEATURES))
    _write_timelines(root / "training_setB", PHYSIONET_COLUMNS, feature_columns,
                     _latent(rng, corr, y_b, shift, effect=1.0), y_b, rng, first_id=100001, physionet=True)
    return root
