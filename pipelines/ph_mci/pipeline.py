"""ph-mci, the method (card: docs/papers/ph-mci.md).

Data: ``<root>/<CLASS>/<NET>/<subject>.csv`` (rows ROIs, columns time points; ``datasets.adni_rsfmri``). A CSV with
an exact zero is dropped (the authors' filter, logged); NaNs, constant ROIs, wrong row counts and a subject under two
class folders are errors naming the file.

Topology (``topo.py``): each ROI's series → sliding-window points in R³ (M = 2, τ = 1; T−3 points as the authors'
code, ``ph.sw_drop_last``) → Vietoris–Rips persistence with gudhi (edge collapse, then expansion to the 3-skeleton;
Z/2; H0–H2) → per network and dimension the PR matrix PR[i, j] = W1(dgm(ROI i), dgm(ROI j)): 1-Wasserstein, L∞
ground metric, matching to the diagonal allowed, infinite bars dropped (persim's semantics), with gudhi's
implementation on POT. Each ROI's diagrams are computed once and reused for all its pairs; only i < j is computed.
Results are cached per subject CSV, content-addressed, under ``$MEDRUN_CACHE/ph-mci/`` (see ``topo.py``), in
parallel over subjects with ``ph.workers`` processes (joblib).

Classifier (``models.prnet``): the PR matrix of ``task.network`` and ``task.dim``, z-scored with its own mean and
sd, → the two-branch network (2-D CNN + linear branch, paper head FC128-64-32 or ``model.head: code``). Adam
lr 1e-3, cross-entropy, batch 64, 100 epochs (the code used 50). One random 80/20 split per model with
``torch.random_split`` and a generator seeded ``train.split_seed`` (6, the code's seed); no validation set.

Evaluation: the paper reports the "peak" test accuracy, the best epoch evaluated on the test split itself. Both are
reported, labelled: ``accuracy`` (last epoch, the honest number) and ``accuracy_peak`` (max over epochs on test,
comparable with Table 1); ``cv`` adds stratified k-fold CV (the card's honest mode).

Choices where the card is silent or the paper is wrong:
- Table 1 is authoritative (Table 2's ADNI DMN 91.1 is Table 1's HC-vs-LMCI value); paper.md quotes Table 1.
- The HC subset for HC vs MCI (50 of 179): ``task.subsample`` per comparison, drawn with numpy's generator seeded
  ``task.subsample_seed`` from the sorted subject ids; the ids used are recorded in ``data.lock.json``.
- ``cv``, ``repeat``, ``grid`` and the networks of ``baseline`` are sweeps (``sweeps.py``): each fold
  (``train.fold`` of ``train.folds``, stratified with ``train.folds_seed``, or ``train.folds_file``), seed (each
  seed is both ``train.split_seed`` and the model seed; the smoke run), Table 1 cell (``task.*``) and baseline network
  (``model.arch: densenet121``; ``proposed`` is the plain train run) is a train run of its own, with its weights,
  reused when complete; the parent writes the table.
- ``analyze`` (``analyze.py``) takes a finished ``topo`` run and its cached features: the Wilcoxon rank-sum test per
  ROI pair (p < ``analyze.alpha``, uncorrected, as the paper), and PS matrices (subject × subject distances) only for
  ``analyze.ps_rois`` (all ROIs would be N² distances each).
- ripser (the authors' PH) is a test-only reference; gudhi's Z/2 Rips diagrams agree with it.
- ``baseline`` (Table 2): a random forest (scikit-learn, ``baseline.rf_trees`` trees) fitted in the stage on the
  flattened upper triangle of the z-scored PR matrix, and MONAI's DenseNet-121 (1 channel, from scratch) on the
  matrix resampled nearest-neighbour to ``model.image_size``² (the code saved 224×224 grayscale renderings; no colour
  map), trained like the proposed network; all on train's split.
- ``train.folds_file`` (``subject,fold`` CSV) fixes the folds; a subject in two folds or in none is a data error.
- No ``extract`` verb (NIfTI → these CSVs with nilearn's Dosenbach spheres): nilearn is not a dependency.
- The per-epoch test accuracy (``accuracy_peak``) is a training callback whose history a resumed run keeps.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from lightning.pytorch.callbacks import Callback

from medrun.datasets import adni_rsfmri as ds
from medrun.errors import DataError, UsageError

from ..report import confusion_axes, markdown_table, paper_data, paper_note
from ..tasks.supervised import Supervised
from . import topo
from .config import CLASSES

# no validation set: the test split is tracked per epoch instead
warnings.filterwarnings("ignore", message=".*`validation_step` but have no `val_dataloader`.*")


@dataclass
class Samples:
    ids: list[str]  # "<CLASS>/<subject>"
    x: np.ndarray  # (N, n, n) z-scored PR matrices, float32
    y: np.ndarray  # (N,) 0 = first class of the comparison, 1 = second
    classes: list[str]
    network: str
    dim: int
    dropped: list[str]


def zscore(m: np.ndarray) -> np.ndarray:
    """Each matrix with its own mean and sd (the authors' code)."""
    m = np.asarray(m, dtype=np.float64)
    sd = m.std(axis=(-2, -1), keepdims=True)
    return ((m - m.mean(axis=(-2, -1), keepdims=True)) / np.where(sd > 0, sd, 1.0)).astype(np.float32)


def random_split(n: int, test_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """``torch.utils.data.random_split`` with fractions [1 − f, f] and a generator seeded ``seed`` (the code)."""
    import torch

    a, b = torch.utils.data.random_split(range(n), [1 - test_fraction, test_fraction],
                                         generator=torch.Generator().manual_seed(seed))
    if not len(a) or not len(b):
        raise DataError(f"{n} subjects give an empty train or test part at train.test_fraction {test_fraction}",
                        fix="add subjects or change train.test_fraction")
    return np.array(sorted(a.indices), dtype=int), np.array(sorted(b.indices), dtype=int)


class PhMci(Supervised):
    val_split = None  # no validation set: the test split is tracked per epoch (TestAccuracy)
    tracker = None

    def build_model(self):
        mm = self.m.model
        if mm.arch == "densenet121":  # Table 2's baseline
            from monai.networks.nets import DenseNet121

            return DenseNet121(spatial_dims=2, in_channels=1, out_channels=2)
        from medrun.models.prnet import PRNet

        return PRNet(ds.NETWORKS[self.m.task.network], 2, head=mm.head, dropout=mm.dropout)

    def inputs(self, x: np.ndarray) -> np.ndarray:
        """The network's input for PR matrices: themselves, or DenseNet-121's image of them."""
        return as_image(x, self.m.model.image_size) if self.m.model.arch == "densenet121" else x

    # -- topology ---------------------------------------------------------------------------------------------
    def cache_dir(self) -> Path:
        return Path(self.ctx.cache_dir) / "ph-mci"  # content-addressed, shared by every run ($MEDRUN_CACHE)

    def root(self) -> Path:
        return self.ctx.data_roots["data"]

    def classes_present(self) -> list[str]:
        return list(self.m.dataset.classes or [c for c in CLASSES if ds.class_folder(self.root(), c)])

    def topology(self, series: list[ds.Series]) -> tuple[dict, dict]:
        items = [topo.Item(f"{s.cls}/{s.network}/{s.subject}", s.path, s.network) for s in series]
        paths, stats = topo.compute(items, topo.Settings.from_manifest(self.m.ph), self.cache_dir(), ds.read_series,
                                    self.m.ph.workers, self.ctx.log)
        self.ctx.run.append_event("topology", **{k: round(v, 3) if isinstance(v, float) else v
                                                 for k, v in stats.items()})
        return paths, stats

    def samples(self, classes: list[str], network: str, dim: int) -> Samples:
        series = self._subsample(ds.list_series(self.root(), classes, [network]), classes)
        paths, _ = self.topology(series)
        ids, mats, ys, dropped = [], [], [], []
        for s in series:
            t = topo.load(paths[f"{s.cls}/{s.network}/{s.subject}"])
            if t.dropped:
                dropped.append(f"{s.cls}/{s.subject}")
                continue
            ids.append(f"{s.cls}/{s.subject}")
            mats.append(t.pr[dim])
            ys.append(classes.index(s.cls))
        if dropped:
            self.ctx.log(f"dropped {len(dropped)} subject(s) with an exact zero in their {network} CSV (the authors' "
                         f"filter): {', '.join(dropped[:5])}{' …' if len(dropped) > 5 else ''}")
        y = np.array(ys, dtype=np.int64)
        for c in range(2):
            if (y == c).sum() < 2:
                raise DataError(f"class {classes[c]} has {(y == c).sum()} usable subject(s) for network {network} "
                                f"under {self.root()}", fix="each class needs subjects to train and test on")
        x = zscore(np.stack(mats)) if mats else np.zeros((0, 1, 1), np.float32)
        return Samples(ids, x, y, list(classes), network, dim, dropped)

    def _subsample(self, series: list[ds.Series], classes: list[str]) -> list[ds.Series]:
        caps = self.m.task.subsample.get("-".join(classes), {})
        if not caps:
            return series
        rng = np.random.default_rng(self.m.task.subsample_seed)
        keep = []
        for c in classes:
            mine = sorted((s for s in series if s.cls == c), key=lambda s: s.subject)
            if c in caps and caps[c] < len(mine):
                pick = sorted(rng.choice(len(mine), caps[c], replace=False).tolist())
                self.ctx.log(f"{'-'.join(classes)}: {caps[c]} of {len(mine)} {c} subjects "
                             f"(seed {self.m.task.subsample_seed})")
                mine = [mine[i] for i in pick]
            keep += mine
        return keep

    # -- splits: the code's random 80/20, or one fold of the k-fold protocol ---------------------------------
    def folds(self, s: Samples) -> list[tuple[np.ndarray, np.ndarray]]:
        t = self.m.train
        if t.folds_file:
            return read_folds(Path(t.folds_file), s.ids)
        from sklearn.model_selection import StratifiedKFold

        return list(StratifiedKFold(t.folds, shuffle=True, random_state=t.folds_seed).split(np.zeros(len(s.y)), s.y))

    def splits(self) -> dict:
        tk, t = self.m.task, self.m.train
        s = self.s = self.samples(tk.classes, tk.network, tk.dim)
        if t.fold is None:
            tr, te = random_split(len(s.y), t.test_fraction, t.split_seed)
            what = f"split seed {t.split_seed}"
        else:
            folds = self.folds(s)
            if t.fold >= len(folds):
                raise UsageError(f"train.fold {t.fold} is not one of the {len(folds)} folds of {t.folds_file}",
                                 fix=f"-o train.fold=0..{len(folds) - 1}")
            tr, te = folds[t.fold]
            what = f"fold {t.fold + 1}/{len(folds)}"
        self.split = {"train": tr, "test": te}
        self.ctx.record_splits({k: [s.ids[i] for i in v] for k, v in self.split.items()})
        self.ctx.log(f"{'-'.join(tk.classes)}, {tk.network} H{tk.dim}, {what}: train {len(tr)} · test {len(te)}")
        return self.split

    # -- the template's hooks -------------------------------------------------------------------------------
    def dataset(self, idx, train: bool):
        import torch
        from torch.utils.data import TensorDataset

        return TensorDataset(torch.from_numpy(self.inputs(self.s.x[idx])), torch.from_numpy(self.s.y[idx]))

    def lit_module(self, net):
        from ..tasks.classification import LitClassifier

        return LitClassifier(net, self.m.train.lr)  # Adam, torch defaults (the code)

    def trainer_kwargs(self) -> dict:
        import torch

        te = self.split["test"]
        self.tracker = TestAccuracy(torch.from_numpy(self.inputs(self.s.x[te])), torch.from_numpy(self.s.y[te]))
        return {"callbacks": [self.tracker]}

    def weights_metadata(self) -> dict:
        tk = self.m.task
        return {"pipeline": "ph-mci", "classes": ",".join(tk.classes), "network": tk.network, "dim": tk.dim,
                "arch": self.m.model.arch}

    def probs(self, net, x: np.ndarray) -> np.ndarray:
        import torch

        if not len(x):
            return np.zeros((0, 2))
        return torch.softmax(self.predictor(net, torch.from_numpy(self.inputs(x))), 1).numpy()

    def evaluate(self, net, idx):
        s = self.s
        metrics, rows = scores(self.probs(net, s.x[idx]), s.y[idx], [s.ids[i] for i in idx], s.classes)
        if self.tracker is not None:  # a train run: the peak over its epochs on this (test) split
            metrics.update(_peak(self.tracker.history))
        metrics["dropped"] = len(s.dropped)
        return metrics, rows

    def figures(self, net, idx, metrics, rows, split):
        s = self.s
        with self.ctx.figure("confusion_matrix", figsize=(4.9, 4.2)) as (_, ax):
            confusion_axes(ax, metrics["confusion_matrix"], s.classes,
                           f"{'-'.join(s.classes)} {s.network} H{s.dim} {split}")

    def summary_line(self, split, metrics):
        return f"{split}: accuracy {metrics['accuracy']:.4f}  AUROC {metrics['auroc']:.4f}  (n = {metrics['n']})"

    def paper_sections(self, metrics: dict, extra=()) -> list[str]:
        tk = self.m.task
        cell = table1(self.ctx.spec, tk.classes, tk.network, tk.dim)
        mine = markdown_table(["", "accuracy"], [["this run, last epoch (`accuracy`)", metrics.get("accuracy")],
                                                 ["this run, peak over epochs on test (`accuracy_peak`)",
                                                  metrics.get("accuracy_peak")],
                                                 ["paper (peak test accuracy)", cell]])
        return [f"## Table 1 (ADNI), {'-'.join(tk.classes)}, {tk.network}, H{tk.dim}\n\n{mine}", *extra,
                table_md(self.ctx.spec, "table1"), paper_note(self.ctx.spec, "comparison")]

    # -- predict: the test split, or a folder of subject CSVs -------------------------------------------------
    def predict_items(self):
        if self.m.predict.input:
            return self.ctx.predict_inputs(self.m.predict.input, (".csv",), what=f"{self.m.task.network} subject CSVs")
        return self.splits()["test"]

    def predict_rows(self, net, items) -> list[dict]:
        tk = self.m.task
        if isinstance(items, np.ndarray):
            ids, x = [self.s.ids[i] for i in items], self.s.x[items]
        else:
            series = [ds.Series(p.stem, "?", tk.network, p) for p in items]
            paths, _ = self.topology(series)
            ids, mats = [], []
            for sr in series:
                t = topo.load(paths[f"?/{tk.network}/{sr.subject}"])
                if t.dropped:
                    self.ctx.log(f"skipped {sr.path}: it holds an exact zero (the authors' filter)")
                    continue
                ids.append(str(sr.path))
                mats.append(t.pr[tk.dim])
            x = zscore(np.stack(mats)) if mats else np.zeros((0, 1, 1), np.float32)
        return [{"subject": i, "pred": tk.classes[int(p.argmax())],
                 **{f"prob_{c}": round(float(p[j]), 6) for j, c in enumerate(tk.classes)}}
                for i, p in zip(ids, self.probs(net, x), strict=True)]

    def predict_summary(self, rows):
        counts = {c: sum(r["pred"] == c for r in rows) for c in self.m.task.classes}
        self.ctx.log(f"predicted {len(rows)} subjects: " + ", ".join(f"{c} {n}" for c, n in counts.items()))
        return {"predicted": counts}

    # -- extra stages (their own modules) ----------------------------------------------------------------------
    def topo(self) -> dict:
        from .analyze import topo_stage

        return topo_stage(self)

    def analyze(self) -> dict:
        from .analyze import analyze_stage

        return analyze_stage(self)

    def cv(self) -> dict:
        from .sweeps import cv

        return cv(self)

    def repeat(self) -> dict:
        from .sweeps import repeat

        return repeat(self)

    def grid(self) -> dict:
        from .sweeps import grid

        return grid(self)

    def baseline(self) -> dict:
        from .sweeps import baseline

        return baseline(self)


# -- helpers ------------------------------------------------------------------------------------------------------
class TestAccuracy(Callback):
    """Test accuracy after every training epoch (the authors' code evaluates test each epoch; the paper reports the
    peak). Its history is saved in checkpoints, so a resumed run keeps the epochs before the interruption."""

    def __init__(self, x, y):
        self.x, self.y, self.history = x, y, []

    def on_train_epoch_end(self, trainer, pl_module):
        import torch

        net, was = pl_module.net, pl_module.net.training
        net.eval()
        with torch.no_grad():
            pred = net(self.x.to(pl_module.device)).argmax(1).cpu()
        acc = float((pred == self.y).float().mean()) if len(self.y) else float("nan")
        net.train(was)
        self.history.append(acc)
        pl_module.log("test_acc", acc, on_step=False, on_epoch=True)

    def state_dict(self):
        return {"history": list(self.history)}

    def load_state_dict(self, state):
        self.history = list(state.get("history", []))


def as_image(x: np.ndarray, size: int) -> np.ndarray:
    """(N, n, n) matrices → (N, 1, size, size) images by nearest-neighbour resampling (a rendering of the matrix)."""
    idx = (np.arange(size) * x.shape[-1] // size).astype(int)
    return np.ascontiguousarray(x[:, idx][:, :, idx][:, None]).astype(np.float32)


def scores(probs: np.ndarray, y: np.ndarray, ids: list[str], classes: list[str]) -> tuple[dict, list[dict]]:
    from medrun.metrics import classification as cm

    pred = probs.argmax(1)
    prf = cm.precision_recall_f1(y, pred, num_classes=2)
    metrics = {"accuracy": cm.accuracy(y, pred), "auroc": cm.auroc(y, probs),
               "sensitivity": cm.sensitivity(y, pred), "specificity": cm.specificity(y, pred),
               "f1_macro": prf["f1_macro"], "n": int(len(y)),
               "confusion_matrix": cm.confusion_matrix(y, pred, num_classes=2).tolist()}
    rows = [{"subject": i, "true": classes[t], "pred": classes[p], **{f"prob_{c}": round(float(probs[j, q]), 6)
             for q, c in enumerate(classes)}} for j, (i, t, p) in enumerate(zip(ids, y, pred, strict=True))]
    return metrics, rows


def read_folds(path: Path, ids: list[str]) -> list[tuple[np.ndarray, np.ndarray]]:
    """(train, test) index pairs from a ``subject,fold`` CSV. A subject listed in two folds, or one of the data's
    subjects missing from the file, is an error naming the file and the subject."""
    import csv

    if not path.is_file():
        raise DataError(f"train.folds_file not found: {path}", fix="a CSV with a header subject,fold")
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    if not rows or not {"subject", "fold"} <= set(rows[0]):
        raise DataError(f"{path} needs the columns subject and fold", fix="a CSV with a header subject,fold")
    fold_of: dict[str, str] = {}
    for r in rows:
        sub, fold = r["subject"].strip().split("/")[-1], r["fold"].strip()
        if sub in fold_of and fold_of[sub] != fold:
            raise DataError(f"{path}: subject {sub} is in two folds, {fold_of[sub]} and {fold}",
                            fix="list each subject in one fold only")
        fold_of[sub] = fold
    subjects = [i.split("/")[-1] for i in ids]
    missing = [x for x in subjects if x not in fold_of]
    if missing:
        more = f" and {len(missing) - 1} more" if len(missing) > 1 else ""
        raise DataError(f"{path} has no fold for subject {missing[0]}{more}",
                        fix="give every subject of the comparison a fold")
    labels = np.array([fold_of[x] for x in subjects])
    names = sorted(set(labels), key=lambda v: (len(v), v))
    if len(names) < 2:
        raise DataError(f"{path} defines {len(names)} fold(s) for these subjects", fix="at least two folds")
    return [(np.flatnonzero(labels != n), np.flatnonzero(labels == n)) for n in names]


def _peak(history: list[float]) -> dict:
    h = np.array(history, dtype=float)
    return {"accuracy_peak": float(np.nanmax(h)), "peak_epoch": int(np.nanargmax(h)) + 1} if len(h) else {}


# -- the paper's numbers (paper.yaml) -----------------------------------------------------------------------------
def table1(spec, classes, network: str, dim: int) -> float | None:
    """Table 1's accuracy (a fraction) of one comparison, network and homology dimension; None if not there."""
    t = paper_data(spec)["tables"]["table1"]
    for row in t["rows"]:
        if row[0] == "-".join(classes) and row[1] == f"H{dim}":
            return round(row[t["header"].index(network)] / 100, 4)
    return None


def table2(spec, network: str, model: str) -> float:
    """Table 2's ADNI accuracy (a fraction) of ``model`` (densenet121, rf, proposed) on ``network``."""
    t = paper_data(spec)["tables"]["table2"]
    row = next(r for r in t["rows"] if r[0] == network)
    return round(row[t["header"].index(f"{model} ADNI")] / 100, 4)


def table_md(spec, name: str) -> str:
    """One of the paper's tables in its own units (%), then its note."""
    t = paper_data(spec)["tables"][name]
    rows = [[f"{c:g}" if isinstance(c, (int, float)) else c for c in r] for r in t["rows"]]
    return f"## {t['title']}\n\n{markdown_table(t['header'], rows)}\n\n{paper_note(spec, name)}"
