"""ABIDE I functional connectivity, in the two public layouts the asd-transformer card accepts.

``abide`` — the BNT / Com-TF dictionary file (Kan et al. 2022, Bannadabhavi et al. 2023)::

    <root>/
        abide.npy              np.save of a dict: timeseires (N×R×T), corr (N×R×R Pearson), pcorr (N×R×R),
                               label (N, 0/1: which value is ASD depends on the script that wrote the file;
                               default 1, see ``asd_label``), site (N, site names); optional subject (N ids)
        roi_communities.csv    roi,community (R rows, community 0..K−1; Com-TF's 8 Yeo-based groups for CC200)

``abide-pcp`` — the Preprocessed Connectomes Project download (CPAC, Craddock-200)::

    <root>/
        rois_cc200/<SITE>_<SUBID>_rois_cc200.1D     text: one '#' header line, T rows × 200 columns
        Phenotypic_V1_0b_preprocessed1.csv          FILE_ID, SITE_ID, DX_GROUP (1 = autism, 2 = control), …
        roi_communities.csv                         as above

``abide.npy`` is a pickle. It is read with a restricted unpickler that admits numpy arrays, dtypes and scalars
and nothing else, so a file from elsewhere cannot run code. The positive class is ASD (label 1) in both layouts.
Subjects are identified by ``subject`` in the .npy (else by their row index, ``"0000"``, ``"0001"``, …) and by
``FILE_ID`` in the PCP layout.
"""

from __future__ import annotations

import pickle
from dataclasses import dataclass, field
from pathlib import Path

from medrun.errors import DataError

from . import DatasetInfo

DATASETS = [
    DatasetInfo("abide", "ABIDE I functional connectivity, BNT/Com-TF abide.npy dictionary (CC200, 1009 subjects)",
                "abide.npy (dict: timeseires, corr, pcorr, label, site) + roi_communities.csv (roi, community)",
                "BNT's ABIDE download script (github.com/Wayfear/BrainNetworkTransformer, source/dataset/abide.py), "
                "which writes abide.npy; roi_communities.csv from Com-BrainTF; point at the folder holding both",
                "medrun.datasets.abide:fixture", ("connectivity", "fmri", "tabular")),
    DatasetInfo("abide-pcp", "ABIDE I Preprocessed (PCP), CPAC rois_cc200 time series + phenotype CSV",
                "rois_cc200/<SITE>_<SUBID>_rois_cc200.1D + Phenotypic_V1_0b_preprocessed1.csv + roi_communities.csv",
                "preprocessed-connectomes-project.org/abide (CPAC, rois_cc200 derivative) and the phenotype CSV; "
                "roi_communities.csv from Com-BrainTF; point at the folder holding all three",
                "medrun.datasets.abide:fixture_pcp", ("connectivity", "fmri", "tabular")),
]

NPY = "abide.npy"
COMMUNITIES = "roi_communities.csv"
PHENOTYPE = "Phenotypic_V1_0b_preprocessed1.csv"
ROIS = "rois_cc200"
REQUIRED_KEYS = ("corr", "label", "site")
# Com-TF's CC200 community block sizes (communities 0..7): 7 Yeo networks + 1 remaining group
CC200_BLOCKS = (41, 29, 21, 19, 20, 7, 21, 42)
FIXTURE_BLOCKS = (8, 6, 4, 4, 4, 2, 4, 8)


@dataclass
class Connectivity:
    """What the pipeline needs, whichever layout it came from."""

    corr: object  # float32 (N, R, R) Pearson FC
    label: object  # int64 (N,), 1 = ASD, 0 = control
    site: list[str]
    subject: list[str]
    communities: object  # int64 (R,), community of each ROI
    source: str  # the file or folder read
    extra: dict = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.label)


# -- the restricted unpickler ------------------------------------------------------------------------------------
_ALLOWED = {
    ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "scalar"),
    ("numpy.core.numeric", "_frombuffer"), ("numpy._core.numeric", "_frombuffer"),
    ("numpy", "ndarray"), ("numpy", "dtype"), ("_codecs", "encode"),
}


class _NumpyOnly(pickle.Unpickler):
    def find_class(self, module, name):
        if (module, name) in _ALLOWED or (module == "numpy.dtypes" and name.endswith("DType")):
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refusing to load {module}.{name} (only numpy arrays are allowed)")


def load_npy_dict(path: Path) -> dict:
    """``np.load(path, allow_pickle=True).item()`` without trusting the pickle: only numpy objects are built."""
    import numpy as np

    path = Path(path)
    try:
        with open(path, "rb") as f:
            version = np.lib.format.read_magic(f)
            read_header = (
                np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
            )
            shape, _, dtype = read_header(f)
            if dtype.hasobject:
                obj = _NumpyOnly(f).load()
            else:
                raise DataError(f"{path} holds a plain {dtype} array of shape {shape}, not the abide.npy dictionary",
                                fix="use the abide.npy written by BNT's ABIDE script (np.save of a dict)")
    except DataError:
        raise
    except (pickle.UnpicklingError, ValueError, EOFError, OSError, AttributeError, TypeError) as e:
        raise DataError(
            f"cannot read {path}: {type(e).__name__}: {str(e).splitlines()[0][:200] if str(e) else ''}",
            fix="use the abide.npy written by BNT's ABIDE script (np.save of a dict of numpy arrays)",
        ) from None
    if isinstance(obj, np.ndarray) and obj.dtype == object and obj.shape == ():
        obj = obj.item()
    if not isinstance(obj, dict):
        raise DataError(f"{path} holds a {type(obj).__name__}, not a dictionary",
                        fix="use the abide.npy written by BNT's ABIDE script (np.save of a dict)")
    return obj


# -- readers -----------------------------------------------------------------------------------------------------
def check_layout(name: str, root: Path) -> None:
    """Cheap check (no data read) that ``root`` has the layout of dataset ``name``."""
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"{name} folder not found: {root}", fix="pass --data-dir DIR, or use --fixture")
    need = [NPY, COMMUNITIES] if name == "abide" else [ROIS, PHENOTYPE, COMMUNITIES]
    missing = [n for n in need if not (root / n).exists()]
    if missing:
        what = "abide.npy and roi_communities.csv" if name == "abide" else \
            f"{ROIS}/, {PHENOTYPE} and {COMMUNITIES}"
        raise DataError(f"{root} does not have the {name} layout: missing {', '.join(missing)}",
                        fix=f"point at the folder holding {what}")


def read_communities(path: Path, n_rois: int):
    """``roi,community`` rows → int array (R,). Every ROI 0..R−1 exactly once; communities numbered 0..K−1."""
    import numpy as np
    import pandas as pd

    path = Path(path)
    try:
        df = pd.read_csv(path)
    except Exception as e:  # noqa: BLE001 (any unreadable CSV is the same problem to the user)
        raise DataError(f"cannot read {path}: {type(e).__name__}", fix="a CSV with columns roi,community") from None
    if not {"roi", "community"} <= set(df.columns):
        raise DataError(f"{path} has columns {list(df.columns)}, not roi,community",
                        fix="a CSV with columns roi,community (one row per ROI)")
    rois = df["roi"].to_numpy()
    if len(df) != n_rois or sorted(rois.tolist()) != list(range(n_rois)):
        raise DataError(f"{path} lists {len(df)} ROIs but the FC matrices have {n_rois} (every ROI 0..{n_rois - 1} "
                        "exactly once)", fix="one row per ROI of the atlas the connectivity was computed with")
    comm = np.empty(n_rois, dtype=np.int64)
    comm[rois.astype(int)] = df["community"].to_numpy().astype(int)
    k = comm.max() + 1
    if comm.min() < 0 or sorted(set(comm.tolist())) != list(range(k)):
        raise DataError(
            f"{path}: communities must be numbered 0..K−1 with none empty (found {sorted(set(comm.tolist()))})",
            fix="renumber the community column",
        )
    return comm


def read_npy(root: Path, asd_label: int = 1) -> Connectivity:
    """The BNT/Com-TF ``abide.npy`` dictionary and ``roi_communities.csv``; every array must have N entries.
    ``asd_label``: the value of ``label`` that means ASD (default 1; scripts that store DX_GROUP − 1, as BrainGB's,
    have ASD = 0: check the file's counts, ABIDE I has 516 ASD and 493 controls). Returned labels: 1 = ASD."""
    import numpy as np

    root = Path(root)
    check_layout("abide", root)
    path = root / NPY
    d = load_npy_dict(path)
    missing = [k for k in REQUIRED_KEYS if k not in d]
    if missing:
        raise DataError(f"{path} lacks key(s) {', '.join(missing)} (has {', '.join(map(str, d))})",
                        fix="the dict needs corr (N×R×R), label (N) and site (N); timeseires is optional")
    arrays = {
        k: np.asarray(v) for k, v in d.items() if k in ("timeseires", "corr", "pcorr", "label", "site", "subject")
    }
    lengths = {k: (a.shape[0] if a.ndim else 0) for k, a in arrays.items()}
    if len(set(lengths.values())) != 1:
        raise DataError(f"{path}: arrays have different lengths ("
                        + ", ".join(f"{k} {n}" for k, n in lengths.items()) + ")",
                        fix="every array in the dict needs one entry per subject; regenerate the file")
    corr = arrays["corr"]
    if corr.ndim != 3 or corr.shape[1] != corr.shape[2]:
        raise DataError(
            f"{path}: corr has shape {corr.shape}, not N×R×R", fix="corr holds one square FC matrix per subject"
        )
    label = arrays["label"]
    if label.ndim != 1 or not set(np.unique(label).tolist()) <= {0, 1}:
        raise DataError(f"{path}: label must be 0/1 per subject (found {np.unique(label)[:5].tolist()})",
                        fix="label 1 = ASD, 0 = control, as BNT writes it")
    n = len(label)
    subject = [str(s) for s in arrays["subject"]] if "subject" in arrays else [f"{i:04d}" for i in range(n)]
    _unique_subjects(subject, path)
    comm = read_communities(root / COMMUNITIES, corr.shape[1])
    asd = (label == asd_label).astype(np.int64)
    return Connectivity(np.nan_to_num(corr.astype(np.float32)), asd,
                        [str(s).strip() for s in arrays["site"]], subject, comm, str(path))


def _unique_subjects(subject: list[str], where) -> None:
    from collections import Counter

    dup = [s for s, c in Counter(subject).items() if c > 1]
    if dup:
        raise DataError(f"{where}: subject {dup[0]} appears {Counter(subject)[dup[0]]} times",
                        fix="each subject may appear once; remove the duplicate")


def read_1d(path: Path):
    """One PCP ``*_rois_cc200.1D`` file: '#' header line, T rows × R columns → float64 (T, R)."""
    import numpy as np

    try:
        ts = np.loadtxt(path, comments="#", ndmin=2)
    except Exception as e:  # noqa: BLE001
        raise DataError(f"cannot read {path}: {type(e).__name__}: {str(e).splitlines()[0][:120]}",
                        fix="a PCP .1D file: a '#' header line, then T rows of whitespace-separated numbers") from None
    if ts.shape[0] < 3:
        raise DataError(f"{path} has {ts.shape[0]} time points", fix="re-download the subject's rois_cc200 file")
    return ts


def pearson(ts):
    """(T, R) time series → (R, R) Pearson FC; a constant ROI gives zeros (not NaN), diagonal 1."""
    import numpy as np

    x = ts - ts.mean(0)
    sd = np.sqrt((x * x).sum(0))
    ok = sd > 0
    x[:, ok] /= sd[ok]
    c = x.T @ x
    np.fill_diagonal(c, 1.0)
    return c


def read_pcp(root: Path) -> Connectivity:
    """PCP ``rois_cc200`` folder + phenotype CSV: every phenotype row with a ``.1D`` file; FC computed here."""
    import numpy as np
    import pandas as pd

    root = Path(root)
    check_layout("abide-pcp", root)
    csv = root / PHENOTYPE
    try:
        ph = pd.read_csv(csv, dtype={"FILE_ID": str, "SITE_ID": str})
    except Exception as e:  # noqa: BLE001
        raise DataError(f"cannot read {csv}: {type(e).__name__}", fix="the ABIDE phenotype CSV") from None
    need = {"FILE_ID", "SITE_ID", "DX_GROUP"}
    if not need <= set(ph.columns):
        raise DataError(f"{csv} lacks column(s) {', '.join(sorted(need - set(ph.columns)))}",
                        fix="use Phenotypic_V1_0b_preprocessed1.csv from PCP (FILE_ID, SITE_ID, DX_GROUP)")
    ph = ph[ph["FILE_ID"].notna() & (ph["FILE_ID"] != "no_filename")]
    _unique_subjects(ph["FILE_ID"].tolist(), csv)
    files = {p.name[: -len("_rois_cc200.1D")]: p for p in (root / ROIS).glob("*_rois_cc200.1D")}
    rows = [r for r in ph.itertuples(index=False) if r.FILE_ID in files]
    if not rows:
        raise DataError(f"no FILE_ID of {csv} has a file in {root / ROIS}",
                        fix="files are named <FILE_ID>_rois_cc200.1D, e.g. Pitt_0050003_rois_cc200.1D")
    corrs, labels, sites, subjects = [], [], [], []
    n_rois = None
    for r in rows:
        path = files[r.FILE_ID]
        ts = read_1d(path)
        if n_rois is None:
            n_rois = ts.shape[1]
        elif ts.shape[1] != n_rois:
            raise DataError(f"{path} has {ts.shape[1]} ROI columns, others have {n_rois}",
                            fix="all files must come from the same atlas (rois_cc200)")
        try:
            dx = int(float(r.DX_GROUP))
        except (TypeError, ValueError):
            dx = None
        if dx not in (1, 2):
            raise DataError(f"{csv}: subject {r.FILE_ID} has DX_GROUP {r.DX_GROUP!r}", fix="1 = autism, 2 = control")
        corrs.append(pearson(ts).astype(np.float32))
        labels.append(1 if dx == 1 else 0)
        sites.append(str(r.SITE_ID))
        subjects.append(str(r.FILE_ID))
    comm = read_communities(root / COMMUNITIES, n_rois)
    return Connectivity(np.stack(corrs), np.array(labels, dtype=np.int64), sites, subjects, comm, str(root),
                        extra={"files_without_phenotype": sorted(set(files) - {r.FILE_ID for r in rows})})


def read(name: str, root: Path, asd_label: int = 1) -> Connectivity:
    return read_npy(root, asd_label) if name == "abide" else read_pcp(root)


def read_splits(path: Path, subjects: list[str]) -> dict[str, list[str]]:
    """A user's split file ``subject,split`` (split: train, val or test) → {split: [subjects]}. A subject in two
    folds, an unknown subject or split name is an error naming it."""
    import pandas as pd

    path = Path(path)
    if not path.is_file():
        raise DataError(f"split file not found: {path}", fix="a CSV with columns subject,split (train/val/test)")
    df = pd.read_csv(path, dtype=str)
    if not {"subject", "split"} <= set(df.columns):
        raise DataError(f"{path} has columns {list(df.columns)}, not subject,split",
                        fix="a CSV with columns subject,split (train/val/test)")
    known, seen, out = set(subjects), {}, {"train": [], "val": [], "test": []}
    for s, fold in zip(df["subject"].str.strip(), df["split"].str.strip(), strict=True):
        if fold not in out:
            raise DataError(f"{path}: subject {s} has split '{fold}'", fix="split is one of train, val, test")
        if s not in known:
            raise DataError(f"{path}: subject {s} is not in the dataset", fix="use the dataset's subject ids "
                            "(FILE_ID for PCP; the subject key or the row index 0000, 0001, … for abide.npy)")
        if s in seen:
            raise DataError(f"{path}: subject {s} is in two folds ({seen[s]} and {fold})",
                            fix="each subject belongs to exactly one of train, val, test")
        seen[s] = fold
        out[fold].append(s)
    if not out["train"] or not out["test"]:
        raise DataError(f"{path}: train and test need at least one subject each", fix="assign subjects to both")
    return out


# -- fixtures ----------------------------------------------------------------------------------------------------
FIXTURE_SITES = ("PITT", "NYU", "UM_1")


def _simulate(seed: int, n: int = 60, blocks=FIXTURE_BLOCKS, t: int = 100, signal: float = 1.25):
    """Time series with community-shared latent signals plus noise. ASD subjects have the latent amplitude of
    community 2 lowered by ``signal``·50 % (1.0 is the card's halving; the default 1.25 leaves 0.375, because at
    0.5 the best single feature reaches AUROC ≈ 0.95 but the transformer on 42 training subjects does not learn it
    reliably in a smoke run), which lowers that block's FC. Each site adds its own noise scale and a global signal
    (an FC offset), for ComBat to remove."""
    import numpy as np

    rng = np.random.default_rng(seed)
    comm = np.repeat(np.arange(len(blocks)), blocks)
    r = len(comm)
    label = np.array([1] * (n // 2) + [0] * (n - n // 2))
    rng.shuffle(label)
    site = np.array([FIXTURE_SITES[i % len(FIXTURE_SITES)] for i in range(n)])
    noise_scale = {s: 0.8 + 0.4 * i for i, s in enumerate(FIXTURE_SITES)}
    global_amp = {s: 0.2 + 0.35 * i for i, s in enumerate(FIXTURE_SITES)}
    ts = np.empty((n, r, t), dtype=np.float32)
    for i in range(n):
        latent = rng.standard_normal((len(blocks), t))
        amp = np.ones(len(blocks))
        if label[i] == 1:
            amp[2] = 1.0 - 0.5 * signal
        g = rng.standard_normal(t) * global_amp[site[i]]
        x = (amp[comm, None] * latent[comm] + g[None]
             + noise_scale[site[i]] * rng.standard_normal((r, t)))
        ts[i] = x.astype(np.float32)
    corr = np.stack([pearson(x.T.astype(np.float64)) for x in ts]).astype(np.float32)
    return ts, corr, label, site, comm


def _write_communities(path: Path, comm) -> None:
    path.write_text("roi,community\n" + "".join(f"{i},{c}\n" for i, c in enumerate(comm)))


def fixture(out_dir: Path, seed: int = 0) -> Path:
    """60 subjects (30 ASD / 30 control, shuffled), 40 ROIs in 8 communities (8/6/4/4/4/2/4/8), T = 100, 3 sites,
    written as BNT's abide.npy dictionary (with its ``timeseires`` spelling and a ``pcorr``) + roi_communities.csv."""
    import numpy as np

    root = Path(out_dir) / "abide"
    root.mkdir(parents=True, exist_ok=True)
    ts, corr, label, site, comm = _simulate(seed)
    pcorr = []
    for c in corr:
        p = np.linalg.pinv(c.astype(np.float64))
        d = np.sqrt(np.abs(np.diag(p)))
        pc = -p / np.outer(d, d)
        np.fill_diagonal(pc, 1.0)
        pcorr.append(pc.astype(np.float32))
    np.save(root / NPY, {"timeseires": ts, "label": label.astype(np.float64), "corr": corr,
                         "pcorr": np.stack(pcorr), "site": site}, allow_pickle=True)
    _write_communities(root / COMMUNITIES, comm)
    return root


def fixture_pcp(out_dir: Path, seed: int = 0) -> Path:
    """The same simulated subjects in the PCP layout: ``rois_cc200/<SITE>_<SUBID>_rois_cc200.1D`` (a '#' header
    line, T rows × 40 columns), the phenotype CSV (with a ``no_filename`` row, as the real one has) and
    roi_communities.csv."""
    root = Path(out_dir) / "abide-pcp"
    (root / ROIS).mkdir(parents=True, exist_ok=True)
    ts, _, label, site, comm = _simulate(seed)
    lines = ["SUB_ID,X,subject,SITE_ID,FILE_ID,DX_GROUP,DSM_IV_TR,AGE_AT_SCAN,SEX"]
    for i, (x, y, s) in enumerate(zip(ts, label, site, strict=True)):
        sub = f"{50000 + i:07d}"
        site_name = {"PITT": "Pitt", "NYU": "NYU", "UM_1": "UM_1"}[s]
        file_id = f"{site_name}_{sub}"
        header = "\t".join(f"#{j + 1:04d}" for j in range(x.shape[0]))
        body = "\n".join("\t".join(f"{v:.6f}" for v in row) for row in x.T)
        (root / ROIS / f"{file_id}_rois_cc200.1D").write_text(header + "\n" + body + "\n")
        lines.append(f"{int(sub)},{i},{int(sub)},{s},{file_id},{1 if y == 1 else 2},{1 if y == 1 else 0},"
                     f"{12 + i % 20},{1 + i % 2}")
    lines.append("50999,99,50999,PITT,no_filename,2,0,30,1")
    (root / PHENOTYPE).write_text("\n".join(lines) + "\n")
    _write_communities(root / COMMUNITIES, comm)
    return root
