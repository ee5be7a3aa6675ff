"""ph-mci, the method (card: shared/papers/ph-mci.md).

Data: ``<root>/<CLASS>/<NET>/<subject>.csv`` (rows ROIs, columns time points; ``datasets.adni_rsfmri``). A CSV with
an exact zero is dropped (the authors' filter, logged); NaNs, constant ROIs, wrong row counts and a subject under two
class folders are errors naming the file.

Topology (``topo.py``): each ROI's series → sliding-window points in R³ (M = 2, τ = 1; T−3 points as the authors'
code, ``ph.sw_drop_last``) → Vietoris–Rips persistence with gudhi (edge collapse, then expansion to the 3-skeleton;
Z/2; H0–H2) → per network and dimension the PR matrix PR[i, j] = W1(dgm(ROI i), dgm(ROI j)): 1-Wasserstein, L∞
ground metric, matching to the diagonal allowed, infinite bars dropped (persim's semantics), with gudhi's
implementation on POT. Each ROI's diagrams are computed once and reused for all its pairs; only i < j is computed.
Results are cached per subject CSV, content-addressed, under ``<runs>/.cache/ph-mci/`` (see ``topo.py``), in
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
- ``repeat`` (the smoke run) uses each seed as both the split seed and the model seed.
- ``analyze`` takes a finished ``topo`` run; it reads the same cached features (recomputing nothing when the cache
  is there), runs the Wilcoxon rank-sum test per ROI pair (p < ``analyze.alpha``, uncorrected, as the paper) and
  computes PS matrices (subject × subject distances) only for ``analyze.ps_rois`` (all ROIs would be N² distances
  each).
- ripser (the authors' PH) is a test-only reference here, not a backend; gudhi's Z/2 Rips diagrams agree with it.
- ``grid`` does not save per-cell weights (it is a table sweep); ``train`` a cell for its weights.
- ``baseline`` (Table 2): a random forest (scikit-learn, ``baseline.rf_trees`` trees) on the flattened upper
  triangle of the z-scored PR matrix, and MONAI's DenseNet-121 (1 channel, from scratch) on the matrix resampled
  nearest-neighbour to ``baseline.image_size``² (the code saved 224×224 grayscale renderings; no colour map), trained
  like the proposed network; both on train's split.
- ``cv.folds_file`` (``subject,fold`` CSV) fixes the folds, e.g. to a published split; a subject listed in two
  folds, or one without a fold, is a data error naming it. Otherwise stratified k-fold seeded ``cv.seed``.
- No ``extract`` verb (preprocessed NIfTI → these CSVs with nilearn's Dosenbach-2010 spheres, radius 5 mm): nilearn
  is not among medrun's dependencies, so users extract the time series themselves.
- Under multi-process training the ranks above 0 run in a scratch directory, so their cache lies elsewhere; the
  topology is computed by the stage before training starts, so this only matters for a cold cache.
"""

from __future__ import annotations

import json
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from medrun.datasets import adni_rsfmri as ds
from medrun.errors import DataError, UsageError

from .. import training
from ..base import Pipeline
from ..report import markdown_table, paper_md, save_figure
from . import topo
from .config import CLASSES

warnings.filterwarnings("ignore", message=".*`validation_step` but have no `val_dataloader`.*")  # test is tracked per epoch


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


class PhMci(Pipeline):
    def build_model(self, network: str | None = None):
        from medrun.models.prnet import PRNet

        return PRNet(ds.NETWORKS[network or self.m.task.network], 2, head=self.m.model.head, dropout=self.m.model.dropout)

    # -- topology ---------------------------------------------------------------------------------------------
    @property
    def settings(self) -> topo.Settings:
        return topo.Settings.from_manifest(self.m.ph)

    def cache_dir(self) -> Path:
        return self.ctx.run.path.parent.parent / ".cache" / "ph-mci"  # <runs>/.cache/ph-mci

    def root(self) -> Path:
        return self.ctx.data_roots["data"]

    def classes_present(self) -> list[str]:
        return list(self.m.dataset.classes or [c for c in CLASSES if ds.class_folder(self.root(), c)])

    def topology(self, series: list[ds.Series]) -> tuple[dict, dict]:
        items = [topo.Item(f"{s.cls}/{s.network}/{s.subject}", s.path, s.network) for s in series]
        paths, stats = topo.compute(items, self.settings, self.cache_dir(), ds.read_series, self.m.ph.workers,
                                    self.ctx.log)
        self.ctx.run.append_event("topology", **{k: round(v, 3) if isinstance(v, float) else v for k, v in stats.items()})
        return paths, stats

    def samples(self, classes: list[str], network: str, dim: int) -> Samples:
        series = ds.list_series(self.root(), classes, [network])
        series = self._subsample(series, classes)
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
                self.ctx.log(f"{'-'.join(classes)}: {caps[c]} of {len(mine)} {c} subjects (seed {self.m.task.subsample_seed})")
                mine = [mine[i] for i in pick]
            keep += mine
        return keep

    def _shown(self, keys: list[str]):
        """The manifest as paper.md's metric table sees it for stages other than train/eval: these keys, no
        expectation (the paper's numbers for them are in the stage's own tables)."""
        paper = self.m.paper.model_copy(update={"expect": {}}) if self.m.paper else None
        return self.m.model_copy(update={"paper": paper, "eval": self.m.eval.model_copy(update={"metrics": keys})})

    def _record_splits(self, splits: dict[str, list[str]]) -> None:
        lock = self.ctx.run.path / "data.lock.json"
        data = json.loads(lock.read_text())
        data.setdefault("splits", {}).update(splits)
        self.ctx.run.write_json("data.lock.json", data)

    # -- training ---------------------------------------------------------------------------------------------
    def _fit(self, net, x_tr, y_tr, x_te, y_te, seed: int, ckpt: bool, epochs: int | None = None):
        import torch
        from torch.utils.data import TensorDataset

        from ..tasks import classification as clf

        t = self.m.train
        epochs = epochs or t.epochs
        module = clf.LitClassifier(net, t.lr)  # Adam, torch defaults (the code)
        tracker = TestAccuracy(torch.from_numpy(x_te), torch.from_numpy(y_te))
        trainer = training.make_trainer(self.ctx, epochs, checkpoint=ckpt, logger=ckpt, callbacks=[tracker])
        t0 = time.perf_counter()
        training.fit(trainer, module,
                     train_dataloaders=clf.loader(TensorDataset(torch.from_numpy(x_tr), torch.from_numpy(y_tr)),
                                                  t.batch_size, True, seed=seed),
                     ckpt_path=training.resume_checkpoint(self.ctx.run) if ckpt else None)
        return module.net, tracker.history, (time.perf_counter() - t0) / epochs

    def _train_one(self, s: Samples, split_seed: int, model_seed: int, ckpt: bool = False):
        import lightning as L

        tr, te = random_split(len(s.y), self.m.train.test_fraction, split_seed)
        L.seed_everything(model_seed, workers=True, verbose=False)
        net, history, secs = self._fit(self.build_model(s.network), s.x[tr], s.y[tr], s.x[te], s.y[te], model_seed, ckpt)
        return net, history, secs, tr, te

    def train(self) -> dict:
        tk = self.m.task
        s = self.samples(tk.classes, tk.network, tk.dim)
        tr, te = random_split(len(s.y), self.m.train.test_fraction, self.m.train.split_seed)
        self._record_splits({"train": [s.ids[i] for i in tr], "test": [s.ids[i] for i in te]})
        self.ctx.log(f"{'-'.join(tk.classes)}, {tk.network} H{tk.dim}: train {len(tr)} · test {len(te)} subjects")
        net, history, secs = self._fit(self.build_model(), s.x[tr], s.y[tr], s.x[te], s.y[te], self.m.seed, True)
        training.save_weights(net, self.ctx.run.path / "checkpoints" / "model.safetensors",
                              {"pipeline": "ph-mci", "classes": ",".join(tk.classes), "network": tk.network, "dim": tk.dim})
        from ..report import learning_curves

        learning_curves(self.ctx.run.path / "logs" / "metrics.csv", self.ctx.run.path / "figures" / "learning_curves.png")
        metrics = self._report(net, s, te, "test")
        metrics.update(_peak(history))
        metrics["secs_per_epoch"] = round(secs, 4)
        metrics["dropped"] = len(s.dropped)
        metrics.update(training.count_params(net))
        self._paper_md(metrics, s)
        return metrics

    def _report(self, net, s: Samples, idx: np.ndarray, split: str) -> dict:
        from ..report import confusion_png
        from ..tasks import classification as clf

        metrics, rows = evaluate(net, s.x[idx], s.y[idx], [s.ids[i] for i in idx], s.classes)
        metrics["split"] = split
        clf.write_csv(self.ctx.run.path / "per_case.csv", rows)
        confusion_png(metrics["confusion_matrix"], s.classes, self.ctx.run.path / "figures" / "confusion_matrix.png",
                      f"{'-'.join(s.classes)} {s.network} H{s.dim} {split}")
        self.ctx.log(f"{split}: accuracy {metrics['accuracy']:.4f}  AUROC {metrics['auroc']:.4f}  (n = {metrics['n']})")
        return metrics

    def _paper_md(self, metrics: dict, s: Samples, title: str | None = None, extra=()) -> None:
        m = self.m
        if "accuracy_mean" in metrics:  # cv / repeat: means over folds or seeds beside the paper's single number
            paper = m.paper.model_copy(update={"expect": {f"{k}_mean": v for k, v in m.paper.expect.items()}}) if m.paper else None
            m = m.model_copy(update={"paper": paper, "eval": m.eval.model_copy(
                update={"metrics": ["accuracy_mean", "accuracy_peak_mean", "auroc_mean"]})})
        cell = table1(s.classes, s.network, s.dim)
        row = "-".join(s.classes)
        sections = [f"## Table 1 (ADNI), {row}, {s.network}, H{s.dim}\n\n"
                    + markdown_table(["", "accuracy"], [
                        ["this run, last epoch (`accuracy`)", metrics.get("accuracy", metrics.get("accuracy_mean"))],
                        ["this run, peak over epochs on test (`accuracy_peak`)",
                         metrics.get("accuracy_peak", metrics.get("accuracy_peak_mean"))],
                        ["paper (peak test accuracy)", cell]]),
                    *extra, table1_markdown(), _NOTES]
        self.ctx.run.write_text("paper.md", paper_md(self.ctx.spec, m, metrics, self.ctx, title=title, sections=sections))

    # -- evaluation and prediction on a finished train run ----------------------------------------------------
    def eval(self) -> dict:
        tk = self.m.task
        s = self.samples(tk.classes, tk.network, tk.dim)
        tr, te = random_split(len(s.y), self.m.train.test_fraction, self.m.train.split_seed)
        idx = te if self.m.eval.split == "test" else tr
        self._record_splits({self.m.eval.split: [s.ids[i] for i in idx]})
        metrics = self._report(self.trained_model(), s, idx, self.m.eval.split)
        self._paper_md(metrics, s)
        return metrics

    def predict(self) -> dict:
        import torch

        from ..tasks import classification as clf

        tk = self.m.task
        net = self.trained_model()
        if self.m.predict.input:
            folder = Path(self.m.predict.input)
            if not folder.is_dir():
                raise DataError(f"predict.input folder not found: {folder}", fix="-o predict.input=/path/to/csvs")
            files = sorted(p for p in folder.iterdir() if p.suffix.lower() == ".csv")
            if not files:
                raise DataError(f"no .csv files in {folder}", fix=f"one <subject>.csv of network {tk.network} per subject")
            series = [ds.Series(p.stem, "?", tk.network, p) for p in files]
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
        else:
            s = self.samples(tk.classes, tk.network, tk.dim)
            _, te = random_split(len(s.y), self.m.train.test_fraction, self.m.train.split_seed)
            ids, x = [s.ids[i] for i in te], s.x[te]
        net.eval()
        with torch.no_grad():
            probs = torch.softmax(net(torch.from_numpy(x)), 1).numpy() if len(x) else np.zeros((0, 2))
        rows = [{"subject": i, "pred": tk.classes[int(p.argmax())], **{f"prob_{c}": round(float(p[j]), 6)
                for j, c in enumerate(tk.classes)}} for i, p in zip(ids, probs, strict=True)]
        clf.write_csv(self.ctx.run.path / "per_case.csv", rows)
        counts = {c: sum(r["pred"] == c for r in rows) for c in tk.classes}
        self.ctx.log(f"predicted {len(rows)} subjects: " + ", ".join(f"{c} {n}" for c, n in counts.items()))
        return {"n": len(rows), "predicted": counts}

    # -- the topo stage -----------------------------------------------------------------------------------------
    def topo(self) -> dict:
        classes, nets = self.classes_present(), list(self.m.dataset.networks)
        series = ds.list_series(self.root(), classes, nets)
        subjects = {(s.cls, s.subject) for s in series}
        self.ctx.log(f"topo: {len(subjects)} subjects ({', '.join(classes)}) × networks {', '.join(nets)}: "
                     f"{len(series)} CSVs")
        paths, stats = self.topology(series)
        rows, dropped = [], 0
        for s in series:
            path = paths[f"{s.cls}/{s.network}/{s.subject}"]
            t = topo.load(path)
            dropped += t.dropped
            rows.append({"class": s.cls, "network": s.network, "subject": s.subject, "csv": str(s.path),
                         "cache": path.name, "dropped": int(t.dropped)})
            if not t.dropped:
                for k in range(t.pr.shape[0]):
                    buf = _csv(t.pr[k])
                    self.ctx.run.write_text(f"features/{s.network}/{s.cls}/{s.subject}_h{k}.csv", buf)
        from ..tasks import classification as clf

        clf.write_csv(self.ctx.run.path / "features" / "index.csv", rows)
        figs = self.ctx.run.path / "figures"
        example = {}
        for s in series:
            if s.network == nets[0] and s.cls not in example:
                t = topo.load(paths[f"{s.cls}/{s.network}/{s.subject}"])
                if not t.dropped:
                    example[s.cls] = (s, t)
        diagram_figure(example, 0, figs / "persistence_diagrams.png")
        computed = stats["computed"]
        metrics = {"subjects": len(subjects), "csvs": len(series), "dropped": dropped, "cached": stats["cached"],
                   "computed": computed, "seconds": round(stats["seconds"], 3),
                   "secs_per_csv_computed": round(stats["compute_seconds"] / computed, 4) if computed else None,
                   "workers": self.m.ph.workers, "cache_dir": str(self.cache_dir())}
        shown = self._shown(["csvs", "computed", "cached", "dropped", "seconds", "secs_per_csv_computed"])
        self.ctx.run.write_text("paper.md", paper_md(self.ctx.spec, shown, metrics, self.ctx, title="PH-MCI topology",
                                                     sections=[_topo_md(metrics, classes, nets), _NOTES]))
        return metrics

    # -- analyze: Wilcoxon P-plots, PS matrices, figures ---------------------------------------------------------
    def analyze(self) -> dict:
        import yaml
        from scipy.stats import ranksums

        from ..tasks import classification as clf

        parent_ph = yaml.safe_load((self.ctx.parent.path / "manifest.yaml").read_text()).get("ph")
        if {k: v for k, v in (parent_ph or {}).items() if k != "workers"} != self.m.ph.model_dump(exclude={"workers"}):
            raise UsageError(f"topo run {self.ctx.parent.path} used other ph settings than this manifest",
                             fix="analyze with the same ph section, or pass the matching --run")
        a, present = self.m.analyze, self.classes_present()
        comps = [c for c in a.comparisons if all(x in present for x in c)]
        if not comps:
            raise UsageError(f"none of analyze.comparisons has both class folders under {self.root()} (present: "
                             f"{', '.join(present)})", fix=f"list pairs of present classes in analyze.comparisons, e.g. {present[0]} with {present[-1]}")
        nets = list(self.m.dataset.networks)
        classes = sorted({c for comp in comps for c in comp}, key=CLASSES.index)
        series = ds.list_series(self.root(), classes, nets)
        paths, stats = self.topology(series)
        loaded = {key: topo.load(p) for key, p in paths.items()}
        out = self.ctx.run.path
        rows, summary = [], []
        for net in nets:
            for k in range(self.m.ph.max_dim + 1):
                for comp in comps:
                    groups = [np.stack([t.pr[k] for key, t in loaded.items() if key.startswith(f"{c}/{net}/") and not t.dropped])
                              for c in comp]
                    n = groups[0].shape[1]
                    iu = np.triu_indices(n, 1)
                    _, p = ranksums(groups[0][:, iu[0], iu[1]], groups[1][:, iu[0], iu[1]], axis=0)
                    pmap = np.ones((n, n))
                    pmap[iu] = p
                    pmap[iu[1], iu[0]] = p
                    name = f"{comp[0]}-{comp[1]}_{net}_h{k}"
                    self.ctx.run.write_text(f"analyze/pvalues_{name}.csv", _csv(pmap))
                    pplot(pmap, a.alpha, out / "figures" / f"pplot_{name}.png", f"{comp[0]} vs {comp[1]}, {net}, H{k}")
                    sig = np.flatnonzero(p < a.alpha)
                    for j in sig:
                        i1, i2 = int(iu[0][j]), int(iu[1][j])
                        rows.append({"comparison": f"{comp[0]}-{comp[1]}", "network": net, "dim": k, "roi_i": i1 + 1,
                                     "roi_j": i2 + 1, "p": float(p[j]), f"mean_{comp[0]}": float(groups[0][:, i1, i2].mean()),
                                     f"mean_{comp[1]}": float(groups[1][:, i1, i2].mean())})
                    summary.append([f"{comp[0]} vs {comp[1]}", net, f"H{k}", len(groups[0]), len(groups[1]), len(p),
                                    len(sig), float(np.nanmin(p)) if len(p) else None])
        clf.write_csv(out / "significant_pairs.csv", rows)
        # persistence diagrams and the PS matrices of a few ROIs of task.network
        tn = self.m.task.network if self.m.task.network in nets else nets[0]
        example = {}
        for key, t in loaded.items():
            c, net, _ = key.split("/")
            if net == tn and c not in example and not t.dropped:
                example[c] = (key, t)
        for r in a.ps_rois:
            if not 1 <= r <= ds.NETWORKS[tn]:
                raise UsageError(f"analyze.ps_rois has ROI {r}, but network {tn} has ROIs 1..{ds.NETWORKS[tn]}",
                                 fix="list 1-based ROI numbers of task.network")
            diagram_figure(example, r - 1, out / "figures" / f"persistence_diagrams_{tn}_roi{r}.png")
            keys = sorted(k for k, t in loaded.items() if k.split("/")[1] == tn and not t.dropped)
            for k in range(self.m.ph.max_dim + 1):
                dg = [loaded[key].diagrams[k][r - 1] for key in keys]
                ps = _pairwise(dg, self.m.ph.order, self.m.ph.workers)
                ids = [f"{key.split('/')[0]}/{key.split('/')[2]}" for key in keys]
                self.ctx.run.write_text(f"analyze/ps_{tn}_roi{r}_h{k}.csv", _csv(ps, header=ids))
        metrics = {"comparisons": ["-".join(c) for c in comps], "tests": int(sum(r[5] for r in summary)),
                   "significant": len(rows), "alpha": a.alpha, "cached": stats["cached"], "computed": stats["computed"],
                   "by_setting": {f"{r[0]} {r[1]} {r[2]}": r[6] for r in summary}}
        table = markdown_table(["comparison", "network", "dim", "n A", "n B", "ROI pairs", f"p < {a.alpha}", "min p"], summary)
        self.ctx.run.write_text("paper.md", paper_md(self.ctx.spec, self._shown(["tests", "significant", "alpha"]), metrics,
                                                     self.ctx, title="PH-MCI group statistics",
                                                     sections=["## Wilcoxon rank-sum per ROI pair (uncorrected, as the paper)\n\n"
                                                               + table, _NOTES]))
        return metrics

    # -- honest k-fold CV, repeats, and the Table 1 grid --------------------------------------------------------
    def cv(self) -> dict:
        import lightning as L
        from sklearn.model_selection import StratifiedKFold

        from ..tasks import classification as clf

        tk, c = self.m.task, self.m.cv
        s = self.samples(tk.classes, tk.network, tk.dim)
        if c.folds_file:
            folds = read_folds(Path(c.folds_file), s.ids)
        else:
            folds = list(StratifiedKFold(c.folds, shuffle=True, random_state=c.seed).split(np.zeros(len(s.y)), s.y))
        self._record_splits({f"fold{i + 1}": [s.ids[j] for j in te] for i, (_, te) in enumerate(folds)})
        per_fold = []
        for i, (tr, te) in enumerate(folds):
            L.seed_everything(self.m.seed, workers=True, verbose=False)
            self.ctx.log(f"fold {i + 1}/{len(folds)}: train {len(tr)} · test {len(te)}")
            net, hist, secs = self._fit(self.build_model(), s.x[tr], s.y[tr], s.x[te], s.y[te], self.m.seed, False)
            m, _ = evaluate(net, s.x[te], s.y[te], [s.ids[j] for j in te], s.classes)
            per_fold.append({"fold": i + 1, "accuracy": m["accuracy"], "auroc": m["auroc"], **_peak(hist), "n": len(te)})
        clf.write_csv(self.ctx.run.path / "per_fold.csv", per_fold)
        metrics = {"folds": len(folds), **_mean_sd(per_fold, ("accuracy", "accuracy_peak", "auroc"))}
        table = markdown_table(["fold", "accuracy (last)", "accuracy (peak)", "AUROC", "n"],
                               [[f["fold"], f["accuracy"], f["accuracy_peak"], f["auroc"], f["n"]] for f in per_fold])
        self._paper_md(metrics, s, title=f"PH-MCI, {len(folds)}-fold CV",
                       extra=[f"## Folds\n\nLast-epoch accuracy is the honest estimate; no fold's test part picks its "
                              f"epoch.\n\n{table}"])
        return metrics

    def repeat(self) -> dict:
        from ..tasks import classification as clf

        tk = self.m.task
        s = self.samples(tk.classes, tk.network, tk.dim)
        rows = []
        for seed in self.m.repeat.seeds:
            net, hist, secs, tr, te = self._train_one(s, seed, seed)
            m, _ = evaluate(net, s.x[te], s.y[te], [s.ids[j] for j in te], s.classes)
            rows.append({"seed": seed, "accuracy": m["accuracy"], "auroc": m["auroc"], **_peak(hist), "n_test": len(te),
                         "secs_per_epoch": round(secs, 4)})
            self.ctx.log(f"seed {seed}: accuracy {m['accuracy']:.4f} (peak {rows[-1]['accuracy_peak']:.4f}) on {len(te)}")
        clf.write_csv(self.ctx.run.path / "per_repeat.csv", rows)
        metrics = {"repeats": len(rows), **_mean_sd(rows, ("accuracy", "accuracy_peak", "auroc")),
                   "n_test": rows[0]["n_test"], **training.count_params(self.build_model())}
        table = markdown_table(["seed", "accuracy (last)", "accuracy (peak)", "AUROC", "test n"],
                               [[r["seed"], r["accuracy"], r["accuracy_peak"], r["auroc"], r["n_test"]] for r in rows])
        self._paper_md(metrics, s, title=f"PH-MCI, {len(rows)} seeds",
                       extra=[f"## Seeds (each is the split seed and the model seed)\n\n{table}"])
        return metrics

    def grid(self) -> dict:
        from ..tasks import classification as clf

        g = self.m.grid
        rows = []
        for comp in g.comparisons:
            for net in g.networks:
                for k in g.dims:
                    s = self.samples(comp, net, k)
                    self.ctx.log(f"grid: {comp[0]} vs {comp[1]}, {net}, H{k} ({len(s.y)} subjects)")
                    _, hist, secs, tr, te = self._train_one(s, self.m.train.split_seed, self.m.seed)
                    rows.append({"comparison": f"{comp[0]}-{comp[1]}", "network": net, "dim": k, "n_train": len(tr),
                                 "n_test": len(te), "accuracy": hist[-1], **_peak(hist), "paper": table1(comp, net, k)})
        clf.write_csv(self.ctx.run.path / "per_cell.csv", rows)
        peaks = np.array([r["accuracy_peak"] for r in rows])
        best = rows[int(peaks.argmax())]
        metrics = {"cells": len(rows), "accuracy_mean": float(np.mean([r["accuracy"] for r in rows])),
                   "accuracy_peak_mean": float(peaks.mean()),
                   "best": {k: best[k] for k in ("comparison", "network", "dim", "accuracy_peak")}}
        table = markdown_table(["comparison", "network", "H", "test n", "last epoch", "peak", "paper (Table 1)"],
                               [[r["comparison"], r["network"], r["dim"], r["n_test"], r["accuracy"], r["accuracy_peak"],
                                 r["paper"]] for r in rows])
        self.ctx.run.write_text("paper.md", paper_md(self.ctx.spec, self._shown(["cells", "accuracy_mean", "accuracy_peak_mean"]),
                                                     metrics, self.ctx, title="PH-MCI Table 1 grid",
                                                     sections=["## This run beside Table 1 (accuracy)\n\n" + table,
                                                               table1_markdown(), _NOTES]))
        return metrics


    # -- Table 2's baselines on the same split ------------------------------------------------------------------
    def baseline(self) -> dict:
        """Random forest on the flattened PR matrix and DenseNet-121 on its image, on train's split, beside the
        proposed network's Table 2 numbers."""
        import lightning as L

        from ..tasks import classification as clf

        tk, b = self.m.task, self.m.baseline
        s = self.samples(tk.classes, tk.network, tk.dim)
        tr, te = random_split(len(s.y), self.m.train.test_fraction, self.m.train.split_seed)
        self._record_splits({"train": [s.ids[i] for i in tr], "test": [s.ids[i] for i in te]})
        metrics, rows = {"n_train": len(tr), "n_test": len(te)}, []
        if "rf" in b.models:
            from sklearn.ensemble import RandomForestClassifier

            iu = np.triu_indices(s.x.shape[1], 1)
            flat = s.x[:, iu[0], iu[1]]
            rf = RandomForestClassifier(b.rf_trees, random_state=self.m.seed, n_jobs=1).fit(flat[tr], s.y[tr])
            probs = rf.predict_proba(flat[te])
            m, _ = _metrics(probs, s.y[te], [s.ids[i] for i in te], s.classes)
            metrics.update({"rf_accuracy": m["accuracy"], "rf_auroc": m["auroc"]})
            rows.append(["random forest (flattened PR)", m["accuracy"], None, table2(tk.network, "rf")])
            self.ctx.log(f"random forest: accuracy {m['accuracy']:.4f} on {len(te)}")
        if "densenet121" in b.models:
            import torch
            from monai.networks.nets import DenseNet121

            img = as_image(s.x, b.image_size)
            L.seed_everything(self.m.seed, workers=True, verbose=False)
            net = DenseNet121(spatial_dims=2, in_channels=1, out_channels=2)
            net, hist, secs = self._fit(net, img[tr], s.y[tr], img[te], s.y[te], self.m.seed, False, epochs=b.epochs)
            training.save_weights(net, self.ctx.run.path / "checkpoints" / "densenet121.safetensors")
            net.eval()
            with torch.no_grad():
                probs = torch.softmax(net(torch.from_numpy(img[te])), 1).numpy()
            m, _ = _metrics(probs, s.y[te], [s.ids[i] for i in te], s.classes)
            pk = _peak(hist)
            metrics.update({"densenet121_accuracy": m["accuracy"], "densenet121_accuracy_peak": pk["accuracy_peak"],
                            "densenet121_auroc": m["auroc"], "densenet121_secs_per_epoch": round(secs, 3),
                            "densenet121_params": sum(p.numel() for p in net.parameters())})
            rows.append([f"DenseNet-121 ({b.image_size}² image)", m["accuracy"], pk["accuracy_peak"],
                         table2(tk.network, "densenet121")])
            self.ctx.log(f"DenseNet-121: accuracy {m['accuracy']:.4f} (peak {pk['accuracy_peak']:.4f}) on {len(te)}")
        rows.append(["proposed (paper only; run `train`)", None, None, table2(tk.network, "proposed")])
        clf.write_csv(self.ctx.run.path / "per_model.csv",
                      [{"model": r[0], "accuracy": r[1], "accuracy_peak": r[2], "paper_adni": r[3]} for r in rows])
        table = markdown_table(["model", "accuracy (last)", "accuracy (peak)", "paper, ADNI HC vs MCI (Table 2)"], rows)
        note = ("" if tk.classes == ["HC", "MCI"] else "\n\nTable 2 is HC vs MCI only; this run's comparison is "
                f"{' vs '.join(tk.classes)}.")
        shown = self._shown([k for k in ("rf_accuracy", "densenet121_accuracy", "densenet121_accuracy_peak") if k in metrics])
        self.ctx.run.write_text("paper.md", paper_md(self.ctx.spec, shown, metrics, self.ctx,
                                                     title="PH-MCI baselines (Table 2)",
                                                     sections=[f"## {tk.network}, H{tk.dim}, the train split\n\n" + table
                                                               + note, table2_markdown(), _NOTES]))
        return metrics


# -- helpers ------------------------------------------------------------------------------------------------------
try:
    from lightning.pytorch.callbacks import Callback as _Callback
except ImportError:  # pragma: no cover
    _Callback = object


class TestAccuracy(_Callback):
    """Test accuracy after every training epoch (the authors' code evaluates test each epoch; the paper reports the
    peak). Its history is saved in checkpoints, so a resumed run keeps the epochs before the interruption."""

    def __init__(self, x, y):
        self.x, self.y, self.history = x, y, []

    def on_train_epoch_end(self, trainer, pl_module):
        import torch

        net = pl_module.net
        was = net.training
        net.eval()
        with torch.no_grad():
            acc = float((net(self.x).argmax(1) == self.y).float().mean()) if len(self.y) else float("nan")
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


def evaluate(net, x: np.ndarray, y: np.ndarray, ids: list[str], classes: list[str]) -> tuple[dict, list[dict]]:
    import torch

    net.eval()
    with torch.no_grad():
        probs = torch.softmax(net(torch.from_numpy(x)), 1).numpy() if len(x) else np.zeros((0, 2))
    return _metrics(probs, y, ids, classes)


def _metrics(probs: np.ndarray, y: np.ndarray, ids: list[str], classes: list[str]) -> tuple[dict, list[dict]]:
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
        raise DataError(f"cv.folds_file not found: {path}", fix="a CSV with a header subject,fold")
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
        raise DataError(f"{path} has no fold for subject {missing[0]}" + (f" and {len(missing) - 1} more" if len(missing) > 1 else ""),
                        fix="give every subject of the comparison a fold")
    labels = np.array([fold_of[x] for x in subjects])
    names = sorted(set(labels), key=lambda v: (len(v), v))
    if len(names) < 2:
        raise DataError(f"{path} defines {len(names)} fold(s) for these subjects", fix="at least two folds")
    return [(np.flatnonzero(labels != n), np.flatnonzero(labels == n)) for n in names]


def _peak(history: list[float]) -> dict:
    h = np.array(history, dtype=float)
    return {"accuracy_peak": float(np.nanmax(h)), "peak_epoch": int(np.nanargmax(h)) + 1} if len(h) else {}


def _mean_sd(rows: list[dict], keys) -> dict:
    out = {}
    for k in keys:
        v = np.array([r[k] for r in rows], dtype=float)
        out[f"{k}_mean"] = float(np.nanmean(v))
        out[f"{k}_sd"] = float(np.nanstd(v, ddof=1)) if len(v) > 1 else 0.0
    return out


def _pairwise(diagrams: list[np.ndarray], order: float, workers: int) -> np.ndarray:
    """Subject × subject distance matrix (the PS matrix), rows spread over ``workers`` processes."""
    n = len(diagrams)
    if workers > 1 and n > 2:
        from joblib import Parallel, delayed

        parts = Parallel(n_jobs=workers)(delayed(topo.cross_distances)([diagrams[i]], diagrams[i + 1:], order)
                                         for i in range(n - 1))
        out = np.zeros((n, n))
        for i, part in enumerate(parts):
            out[i, i + 1:] = part[0]
        return out + out.T
    return topo.distance_matrix(diagrams, order)


def _csv(m: np.ndarray, header: list[str] | None = None) -> str:
    import io

    buf = io.StringIO()
    if header:
        buf.write(",".join(header) + "\n")
    np.savetxt(buf, m, delimiter=",", fmt="%.8g")
    return buf.getvalue()


def diagram_figure(example: dict, roi: int, out_png: Path) -> Path | None:
    """Persistence diagrams (H0–H2) of one ROI, one subject per class: ``example`` maps class → (id, Topology)."""
    if not example:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(example), figsize=(4.2 * len(example), 4), squeeze=False)
    for ax, (cls, (sid, t)) in zip(axes[0], example.items(), strict=True):
        hi = 0.0
        for k, dg in enumerate(t.diagrams):
            d = dg[roi]
            if len(d):
                ax.scatter(d[:, 0], d[:, 1], s=10, label=f"H{k} ({len(d)})")
                hi = max(hi, float(d.max()))
        ax.plot([0, hi or 1], [0, hi or 1], "k--", lw=0.8)
        ax.set_xlabel("birth")
        ax.set_ylabel("death")
        ax.set_title(f"{cls}: {getattr(sid, 'subject', sid)}, ROI {roi + 1}", fontsize=9)
        ax.legend(fontsize=8)
    fig.tight_layout()
    save_figure(fig, out_png)
    return out_png


def pplot(pmap: np.ndarray, alpha: float, out_png: Path, title: str) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 4.4))
    im = ax.imshow(-np.log10(np.clip(pmap, 1e-300, 1)), cmap="magma")
    ys, xs = np.nonzero(pmap < alpha)
    ax.scatter(xs, ys, marker="s", s=6, facecolors="none", edgecolors="cyan", linewidths=0.6)
    ax.set_title(f"{title}: −log10 p (boxes: p < {alpha})", fontsize=9)
    ax.set_xlabel("ROI")
    ax.set_ylabel("ROI")
    fig.colorbar(im, ax=ax)
    fig.tight_layout()
    save_figure(fig, out_png)
    return out_png


# -- the paper's numbers ------------------------------------------------------------------------------------------
_T1_NETS = ("DMN", "FP", "OP", "SM", "CO", "CB")
TABLE1 = {  # ADNI accuracy %, per (comparison, homology dimension), networks in _T1_NETS order
    ("HC-MCI", 0): (70.0, 90.0, 85.0, 85.0, 95.0, 85.0), ("HC-MCI", 1): (65, 90, 90, 75, 75, 75),
    ("HC-MCI", 2): (75, 80, 85, 85, 75, 80),
    ("HC-EMCI", 0): (76.5, 60.3, 60.3, 58.8, 66.2, 64.7), ("HC-EMCI", 1): (61.8, 69.1, 75, 57.4, 52.9, 60.3),
    ("HC-EMCI", 2): (66.2, 50, 69.1, 55.9, 61.8, 55.9),
    ("HC-LMCI", 0): (91.1, 76.8, 84.1, 80.1, 74.6, 71.4), ("HC-LMCI", 1): (85.7, 55.6, 79.3, 74.6, 73, 61.9),
    ("HC-LMCI", 2): (63.5, 65.1, 58.7, 66.6, 53.9, 60.3),
    ("EMCI-LMCI", 0): (80.0, 65.0, 71.7, 76.7, 80.0, 71.7), ("EMCI-LMCI", 1): (75, 66.7, 68.3, 70, 61.6, 68.3),
    ("EMCI-LMCI", 2): (56.7, 53.3, 53.3, 56.7, 56.6, 60.0),
}


def table1(classes, network: str, dim: int) -> float | None:
    row = TABLE1.get(("-".join(classes), dim))
    return round(row[_T1_NETS.index(network)] / 100, 4) if row else None


TABLE2 = {  # HC vs MCI accuracy %, (ADNI, TLSA) per model
    "DMN": {"densenet121": (80.0, 82.0), "rf": (67.0, 72.48), "proposed": (91.1, 82.4)},
    "FP": {"densenet121": (89.6, 71.4), "rf": (83.0, 61.67), "proposed": (90.0, 71.4)},
    "OP": {"densenet121": (74.4, 72.9), "rf": (84.0, 70.67), "proposed": (90.0, 73.8)},
    "SM": {"densenet121": (80.0, 72.2), "rf": (80.0, 69.3), "proposed": (85.0, 85.0)},
    "CO": {"densenet121": (90.0, 75.0), "rf": (86.0, 68.19), "proposed": (95.0, 76.5)},
    "CB": {"densenet121": (85.0, 62.6), "rf": (82.0, 63.44), "proposed": (85.0, 63.2)},
}


def table2(network: str, model: str) -> float:
    return round(TABLE2[network][model][0] / 100, 4)


def table2_markdown() -> str:
    rows = [[net, *[f"{v[model][0]:g} / {v[model][1]:g}" for model in ("densenet121", "rf", "proposed")]]
            for net, v in TABLE2.items()]
    return ("## The paper's Table 2 (HC vs MCI, peak accuracy %, ADNI / TLSA)\n\n"
            + markdown_table(["network", "DenseNet-121", "random forest", "proposed"], rows)
            + "\n\nThe ADNI DMN entry of the proposed model (91.1) does not match Table 1 (70.0 for HC vs MCI, H0).")


def table1_markdown() -> str:
    rows = [[f"{comp} H{k}", *[f"{v:g}" for v in vals]] for (comp, k), vals in TABLE1.items()]
    return ("## The paper's Table 1 (ADNI, peak test accuracy %)\n\n"
            + markdown_table(["comparison", *_T1_NETS], rows)
            + "\n\nHeadline: HC vs MCI, CO, H0: 95.0 %. Table 2's ADNI DMN entry (91.1) is Table 1's HC-vs-LMCI value; "
              "Table 1 is taken as authoritative.")


def _topo_md(metrics: dict, classes, nets) -> str:
    return (f"## Topology\n\nClasses {', '.join(classes)}; networks {', '.join(nets)}. {metrics['csvs']} subject CSVs: "
            f"{metrics['computed']} computed, {metrics['cached']} from the cache (`{metrics['cache_dir']}`), "
            f"{metrics['dropped']} dropped (an exact zero). PR matrices: `features/<NET>/<CLASS>/<subject>_h<k>.csv`.\n\n"
            "The paper calls this step very expensive (2×Xeon Gold 6240); it reports no timing.")


_NOTES = """## Notes on the comparison

- The paper's numbers are the best epoch on the test split ("peak"); `accuracy_peak` is that number here, and
  `accuracy` the last epoch's. Only the latter (or `cv`) is an unbiased estimate.
- ADNI preprocessing (FSL, Dosenbach spheres) is the user's; differences there change the diagrams.
- Distances: 1-Wasserstein, L∞ ground metric, infinite bars dropped (persim's semantics), gudhi + POT."""
