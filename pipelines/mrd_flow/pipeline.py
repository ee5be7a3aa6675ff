"""mrd-flow, the method (card: docs/papers/mrd-flow.md).

Data (``datasets/flow_mrd.py``): one folder per lab (Vie, Bln, Bue) of ``<sample>.pkl`` + ``<sample>_labels.pkl``
pairs (also CSV pairs, or FCS files + ``_labels.csv``). Events are kept in the ``Intact`` gate; the 11 features
TIME, FSC-A, FSC-W, SSC-A, CD20, CD10, CD45, CD34, CD19, CD38, SY41 are taken in that order (markers a panel lacks
are 0); blast34 / blastother / blast → 1. Splits come from ``data_splits/{train,eval,test}.txt``; without them Vie is
split 50/25/25 at random (``split_seed``) and Bln / Bue (``test_only``) are all test. Samples are held in memory as
float32 (the 519 Vie samples take about 7 GB).

Networks (``models/flowsets.py``, on PyTorch Geometric's GINConv / GATConv / GCNConv / ASAPooling): the zoo of Tables
2–5, ``model.arch`` (default the proposed ``gin-st-fps``: one GIN layer, its output concatenated to the 11 inputs, 3
FPS set-attention blocks, a linear head; 30,049 parameters). The kNN graph (k = 10, no self loops) is built inside
the network's forward on all markers, also those ``model.drop_features`` removes from the node features (Table 7:
``[CD10, CD19, CD45]``, which, as in the official code's ``remove_marker``, is a training setting: an eval with the
same override finds that train run). FPS indices are computed once per forward on the network's input events.

Training (the card): 4 samples × 5·10⁴ events drawn per sample per step (with replacement when a sample has fewer;
a new draw every time), Gaussian jitter σ = 0.01, label smoothing y(1−ε) + ε/2 with ε = 0.1, BCE-with-logits;
AdamW (lr 1e-3, amsgrad as the official code), CosineAnnealingLR T_max = 10, eta_min 2e-4 (the paper; the code's
1e-4 is ``-o train.eta_min=1e-4``), stepped per epoch, 150 epochs. GAT models get dropout 0.2 and weight decay 0.2
(others AdamW's default 0.01, which the paper does not state). Gradient norms are clipped at 2.5 as in the official
trainer (not in the paper). Validation on the full validation samples (mean per-sample F1) at the first epoch,
every ``val_every`` (5, as the official trainer) and the last; Lightning's ``ModelCheckpoint(monitor="val_f1",
mode="max")`` keeps the best epoch, whose weights are saved and tested.

Evaluation: full samples, logit > 0 is blast; per sample precision, recall, F1 (``metrics.cytometry``: F1 = 1 for a
sample without blasts where none is predicted), then the mean (``f1``, the paper's "avg F1") and median
(``f1_median``) over samples; ``f1_all_positive`` is the score of calling every event a blast (the baseline the
smoke run is read against); true and predicted MRD per sample in ``per_case.csv`` and ``figures/mrd.png``; scatter
plots (FSC-A/SSC-A, CD45/SSC-A, CD19/SSC-A, CD45/CD10) of the first samples coloured by true and predicted blast.

Stages: ``train``; ``eval`` (``--dataset bln|bue --run <vie train run>`` for Table 6); ``predict`` (per-event blast
probability ``predictions/<sample>_blast_prob.npy`` and the sample's predicted MRD % in ``per_case.csv``; labels,
when beside the file, add F1 and the true MRD); ``benchmark`` (``benchmark.py``: Tables 2–5 as a sweep).

Choices where the card is silent or the code and paper differ: FPS starts at a random event in training (the
official ``fps(random_start=True)``) and at event 0 in evaluation, so evaluation is deterministic; the spillover
cleaning of the official config is off unless ``dataset.clean_spillover`` is set (it drops test events, which the
paper does not describe); ``train.repeats`` draws each training sample several times per epoch (1 for the paper; the
16-sample fixture uses more so that 3 epochs are enough steps). The GIN layer's MLP has three linear layers
(in→32→32→32) as the official ``GINFPSST``, where the card writes 11→32→32. PyTorch Geometric supplies GINConv,
GATConv, GCNConv and ASAPooling; its ``fps`` and ``knn_graph`` need torch_cluster / pyg-lib, which are not
installed, so FPS is ``models.flowsets.fps`` (tested against a brute-force reference) and the kNN graph is scipy's
exact cKDTree on the CPU (chunked ``cdist`` on CUDA). FCS files are read with flowio (values after the file's own
gain and log-decade scaling). Pickles go through a restricted unpickler (pandas / NumPy types only). A sample in any
split that cannot be read stops ``train`` before the first epoch.
"""

from __future__ import annotations

from pathlib import Path

import lightning as L
import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset

from medrun.datasets import flow_mrd
from medrun.errors import DataError
from medrun.metrics import cytometry
from medrun.models.flowsets import FlowNet

from .. import training
from ..report import paper_data, paper_table
from ..tasks.supervised import Supervised
from .config import ZOO

PANELS = (("FSC-A", "SSC-A"), ("CD45", "SSC-A"), ("CD19", "SSC-A"), ("CD45", "CD10"))
ARCH_ROW = {v["model.arch"]: k for k, v in ZOO.items() if len(v) == 1}


def row_name(mm) -> str:
    """The paper's row for a model section (ST-150I, GIN-3, GAT-3 by their settings)."""
    if mm.arch == "st" and mm.inducing == 150:
        return "ST-150I"
    if mm.arch in ("gin", "gat") and mm.knn_k == 3:
        return f"{mm.arch.upper()}-3"
    return ARCH_ROW[mm.arch]


def is_gat(arch: str) -> bool:
    return arch.startswith("gat")


class LitMRD(L.LightningModule):
    """BCE-with-logits on smoothed labels; AdamW + cosine annealing; validation = mean per-sample F1 of full
    samples, computed on the epochs the official trainer validates (others log the last value again, which never
    replaces a best checkpoint)."""

    def __init__(self, net: FlowNet, t, weight_decay: float):
        super().__init__()
        self.net, self.t, self.weight_decay = net, t, weight_decay
        self._f1, self._loss = [], []
        self.val_f1: dict[int, float] = {}  # epoch (0-based) → mean validation F1

    def forward(self, x):
        return self.net(x)

    def training_step(self, batch, _):
        x, y = batch
        loss = F.binary_cross_entropy_with_logits(self.net(x), y)
        self.log("train_loss", loss, on_step=False, on_epoch=True, prog_bar=True, batch_size=len(x))
        return loss

    def _validates(self) -> bool:
        e = self.current_epoch
        return e == 0 or (e + 1) % self.t.val_every == 0 or e + 1 == self.trainer.max_epochs

    def validation_step(self, batch, _):
        if not self._validates():
            return
        x, y = batch
        logits = self.net(x)
        self._loss.append(float(F.binary_cross_entropy_with_logits(logits, y)))
        self._f1.append(cytometry.sample_scores(y[0] > 0.5, logits[0] > 0)["f1"])

    def on_validation_epoch_end(self):
        if self._f1:
            self.val_f1[self.current_epoch] = float(np.mean(self._f1))
            self._last = (self.val_f1[self.current_epoch], float(np.mean(self._loss)))
        f1, loss = getattr(self, "_last", (0.0, float("nan")))
        self.log("val_f1", f1, prog_bar=True)
        self.log("val_loss", loss)
        self._f1, self._loss = [], []

    def configure_optimizers(self):
        t = self.t
        opt = torch.optim.AdamW(self.net.parameters(), lr=t.lr, weight_decay=self.weight_decay, amsgrad=t.amsgrad)
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=t.t_max, eta_min=t.eta_min)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "epoch"}}


class TrainSet(Dataset):
    """Each item: one sample's ``events_per_sample`` events drawn at random (with replacement when it has fewer),
    jittered, with smoothed labels."""

    def __init__(self, samples: list, t):
        self.samples, self.t = samples, t

    def __len__(self):
        return len(self.samples) * self.t.repeats

    def __getitem__(self, i):
        s, t = self.samples[i % len(self.samples)], self.t
        n, k = len(s), t.events_per_sample
        idx = torch.randperm(n)[:k] if n >= k else torch.cat([torch.arange(n), torch.randint(n, (k - n,))])
        idx = idx[torch.randperm(len(idx))]
        x = torch.from_numpy(s.events)[idx]
        x = x + t.jitter * torch.randn_like(x)
        y = torch.from_numpy(s.labels)[idx].float() * (1 - t.label_smoothing) + t.label_smoothing / 2
        return x, y


class FullSet(Dataset):
    """Whole samples (events, 0/1 labels) for validation."""

    def __init__(self, samples: list):
        self.samples = samples

    def __len__(self):
        return len(self.samples)

    def __getitem__(self, i):
        s = self.samples[i]
        return torch.from_numpy(s.events), torch.from_numpy(s.labels).float()


class MrdFlow(Supervised):
    _best = None  # the ModelCheckpoint that keeps the best validation epoch

    # -- model ------------------------------------------------------------------------------------------------
    def build_model(self) -> FlowNet:
        mm, d = self.m.model, self.m.dataset
        keep = [i for i, mk in enumerate(d.markers) if mk not in mm.drop_features]
        dropout = mm.dropout if mm.dropout is not None else (0.2 if is_gat(mm.arch) else 0.0)
        return FlowNet(mm.arch, len(d.markers), keep, mm.knn_k, hidden=mm.hidden, heads=mm.heads, layers=mm.layers,
                       inducing=mm.inducing, fps_ratio=mm.fps_ratio, fps_min=mm.fps_min, dropout=dropout,
                       asap_nodes=tuple(mm.asap_nodes))

    def weights_metadata(self) -> dict:
        return {"pipeline": "mrd-flow", "arch": self.m.model.arch, "markers": ",".join(self.m.dataset.markers),
                "drop_features": ",".join(self.m.model.drop_features)}

    # -- data -------------------------------------------------------------------------------------------------
    def options(self) -> flow_mrd.ReadOptions:
        d = self.m.dataset
        return flow_mrd.ReadOptions(tuple(d.markers), tuple(d.filter_gates), tuple(d.blast_gates), dict(d.channels),
                                    d.scale, d.arcsinh_cofactor, d.clean_spillover, tuple(d.spillover_range))

    def load(self, files: list) -> list:
        cache = self.__dict__.setdefault("_loaded", {})
        opt = self.options()
        for f in files:
            if f.name not in cache:
                cache[f.name] = flow_mrd.load(f, opt)
        return [cache[f.name] for f in files]

    def splits(self) -> dict:
        if "_splits" in self.__dict__:
            return self._splits
        d = self.m.dataset
        root = self.ctx.data_roots[d.name]
        files = flow_mrd.list_samples(root)
        by_name = {f.name: f for f in files}
        folder = Path(d.splits) if Path(d.splits).is_absolute() else root / d.splits
        lists = flow_mrd.read_splits(folder, list(by_name))
        if lists is None and d.test_only:
            lists = {"train": [], "val": [], "test": list(by_name)}
        elif lists is None:
            order = np.random.default_rng(d.split_seed).permutation(len(files))
            n_tr, n_va = round(d.train_fraction * len(files)), round(d.val_fraction * len(files))
            names = [files[i].name for i in order]
            lists = {"train": sorted(names[:n_tr]), "val": sorted(names[n_tr:n_tr + n_va]),
                     "test": sorted(names[n_tr + n_va:])}
        splits = {k: [by_name[n] for n in v] for k, v in lists.items()}
        self.ctx.record_splits({k: [f.events for f in v] for k, v in splits.items()})
        self._splits = splits
        return splits

    def fit(self, splits, net=None, *, checkpoint: bool = True):
        self._has_val = bool(splits.get("val"))
        net, secs = super().fit(splits, net, checkpoint=checkpoint)
        if self._best is not None and self._best.best_model_path:
            state = training.load_state(Path(self._best.best_model_path))
            net.load_state_dict({k[len("net."):]: v for k, v in state.items() if k.startswith("net.")})
        return net, secs

    def dataset(self, files, train: bool):
        samples = self.load(files)
        return TrainSet(samples, self.m.train) if train else FullSet(samples)

    def val_loader(self, splits):
        if not splits.get("val"):
            return None
        return DataLoader(self.dataset(splits["val"], False), batch_size=1, shuffle=False)

    def lit_module(self, net):
        t = self.m.train
        wd = t.weight_decay if t.weight_decay is not None else (0.2 if is_gat(self.m.model.arch) else 0.01)
        self._lit = LitMRD(net, t, wd)
        return self._lit

    def trainer_kwargs(self) -> dict:
        kw = {"gradient_clip_val": self.m.train.grad_clip or None}
        if getattr(self, "_has_val", False):  # keep the best validation epoch (mean per-sample F1)
            from lightning.pytorch.callbacks import ModelCheckpoint

            self._best = ModelCheckpoint(dirpath=self.ctx.path / "checkpoints", filename="best", monitor="val_f1",
                                         mode="max", save_top_k=1, enable_version_counter=False)
            kw["callbacks"] = [self._best]
        return kw

    def train(self) -> dict:
        splits = self.splits()
        if not splits["train"]:
            d = self.m.dataset
            raise DataError(f"{self.ctx.data_roots[d.name]}: no training samples ({d.name} is "
                            f"{'test only' if d.test_only else 'without a train split'})",
                            fix="train on vie and evaluate here with `medrun eval mrd-flow --dataset "
                                f"{d.name} --run <train run id>`")
        # read and check every sample first: a bad test sample fails now, not after the last epoch
        self.load([f for files in splits.values() for f in files])
        metrics = super().train()
        lit = getattr(self, "_lit", None)
        if lit is not None and lit.val_f1:
            best = max(lit.val_f1, key=lambda e: (lit.val_f1[e], -e))
            metrics.update(best_epoch=best + 1, best_val_f1=lit.val_f1[best])
        return metrics

    # -- evaluation -------------------------------------------------------------------------------------------
    def probs(self, net, s) -> np.ndarray:
        return torch.sigmoid(self.predictor(net, torch.from_numpy(s.events)[None])[0]).numpy()

    def evaluate(self, net, files):
        samples, rows, self._shown = self.load(files), [], []
        for f, s in zip(files, samples, strict=True):
            p = self.probs(net, s)
            sc = cytometry.sample_scores(s.labels, p > 0.5)
            rows.append({"sample": s.name, "events": len(s), "blasts": int(s.labels.sum()), **sc,
                         "mrd_true_pct": 100 * sc["mrd_true"], "mrd_pred_pct": 100 * sc["mrd_pred"],
                         "f1_all_positive": cytometry.all_positive_f1(s.labels), "file": str(f.events)})
            if len(self._shown) < self.m.eval.scatter:
                self._shown.append((s, p))
        metrics = {**cytometry.summarise(rows), "n_samples": len(rows),
                   "f1_all_positive": float(np.mean([r["f1_all_positive"] for r in rows])),
                   "mrd_mae_pct": float(np.mean([abs(r["mrd_pred_pct"] - r["mrd_true_pct"]) for r in rows])),
                   "events": int(sum(r["events"] for r in rows)), "model": row_name(self.m.model)}
        metrics.update(training.count_params(net))
        for r in rows:
            r.pop("mrd_true"), r.pop("mrd_pred")
        return metrics, rows

    def figures(self, net, files, metrics, rows, split):
        for s, p in self._shown:
            self.scatter(s, p, f"scatter_{s.name}")
        with self.ctx.figure("mrd", figsize=(4.5, 4.2)) as (_, ax):
            t = np.array([r["mrd_true_pct"] for r in rows])
            q = np.array([r["mrd_pred_pct"] for r in rows])
            lo = max(1e-3, min(t[t > 0].min(initial=1), q[q > 0].min(initial=1)) / 2)
            ax.scatter(np.maximum(t, lo), np.maximum(q, lo), s=14, c="tab:red")
            ax.plot([lo, 100], [lo, 100], "k--", lw=0.8)
            ax.set(xscale="log", yscale="log", xlabel="true MRD (%)", ylabel="predicted MRD (%)",
                   title=f"{self.m.dataset.name} {split}: {row_name(self.m.model)}")

    def scatter(self, s, p, name: str) -> None:
        """Events on the paper's panel pairs, coloured by the true (top) and predicted (bottom) blast label."""
        mk = list(self.m.dataset.markers)
        panels = [(a, b) for a, b in PANELS if a in mk and b in mk]
        if not panels:
            return
        rows = 2 if s.labels is not None else 1
        with self.ctx.figure(name, nrows=rows, ncols=len(panels), figsize=(3.2 * len(panels), 3.1 * rows),
                             squeeze=False) as (_, axes):
            labels = ([("true", s.labels > 0)] if s.labels is not None else []) + [("predicted", p > 0.5)]
            for r, (what, blast) in enumerate(labels):
                for c, (a, b) in enumerate(panels):
                    ax, xa, xb = axes[r][c], s.events[:, mk.index(a)], s.events[:, mk.index(b)]
                    ax.scatter(xa[~blast], xb[~blast], s=1, c="0.6", rasterized=True)
                    ax.scatter(xa[blast], xb[blast], s=2, c="tab:red", rasterized=True)
                    ax.set(xlabel=a, ylabel=b, title=f"{what}: {int(blast.sum())} blasts" if c == 0 else None)

    def summary_line(self, split, metrics):
        return (f"{split}: {metrics['model']}  avg F1 {metrics['f1']:.4f}  med F1 {metrics['f1_median']:.4f}  "
                f"p {metrics['precision']:.4f}  r {metrics['recall']:.4f}  (all-positive F1 "
                f"{metrics['f1_all_positive']:.4f}, {metrics['n_samples']} samples)")

    # -- paper.md -----------------------------------------------------------------------------------------------
    def paper_kwargs(self, split, metrics):
        name, d = row_name(self.m.model), self.m.dataset.name
        tables = paper_data(self.ctx.spec)["tables"]
        keys = ["f1", "f1_median", "precision", "recall", "f1_all_positive", "mrd_mae_pct"]
        if self.m.model.drop_features:
            ref = {r[0]: r for r in tables["table7"]["rows"]}.get(name)
            return {"expect": {"f1": ref[1], "f1_median": ref[2]} if ref and d == "vie" else {}, "table": "Table 7",
                    "setting": f"Vie test, {', '.join(self.m.model.drop_features)} removed from the node features",
                    "keys": keys}
        if d in ("bln", "bue"):
            ref = {r[0]: r for r in tables["interlab"]["rows"]}.get(name)
            col = 1 if d == "bln" else 3
            return {"expect": {"f1": ref[col], "f1_median": ref[col + 1]} if ref else {}, "table": "Table 6",
                    "setting": f"trained on Vie, tested on every {d.capitalize()} sample", "keys": keys}
        ref = {r[0]: r for r in tables["zoo"]["rows"]}.get(name)
        expect = {"f1": ref[3], "f1_median": ref[5], "precision": ref[1], "recall": ref[2]} if ref else {}
        return {"expect": expect, "table": f"Table {ref[7]}" if ref else None, "keys": keys,
                "setting": f"Vie test split, {name}, mean of at least 5 runs"}

    def paper_sections(self, metrics):
        run = (f"## This run\n\nModel {metrics['model']} ({metrics['params_total']:,} parameters), "
               f"{metrics['n_samples']} samples, {metrics['events']:,} events. Per-sample F1 averaged over samples "
               f"(avg F1) and its median (med F1); calling every event a blast scores {metrics['f1_all_positive']:.4f}."
               f" Mean absolute MRD error {metrics['mrd_mae_pct']:.3f} percentage points.")
        table = "table7" if self.m.model.drop_features else (
            "interlab" if self.m.dataset.name in ("bln", "bue") else "zoo")
        return [run, paper_table(self.ctx.spec, table), paper_data(self.ctx.spec)["notes"]["comparison"].rstrip()]

    # -- predict: per-event blast probability and the sample's MRD ----------------------------------------------
    def predict_items(self):
        src = self.m.predict.input
        if not src:
            return self.split_of(self.splits())
        found = [p for p in self.ctx.predict_inputs(src, flow_mrd.EVENT_SUFFIXES, what="flow samples")
                 if not p.name.lower().endswith(flow_mrd.LABEL_SUFFIXES)]
        if not found:
            raise DataError(f"no flow samples in {src} (only labels files)",
                            fix="point predict.input at <sample>.pkl/.csv/.fcs")
        out = []
        for p in found:
            name = p.name[: -len(p.suffix)]
            lab = next((p.with_name(f"{name}{s}") for s in flow_mrd.LABEL_SUFFIXES
                        if p.with_name(f"{name}{s}").is_file()), None)
            out.append(flow_mrd.SampleFiles(name, p, lab))
        return out

    def predict_rows(self, net, items) -> list[dict]:
        rows = []
        for i, (f, s) in enumerate(zip(items, self.load(items), strict=True)):
            p = self.probs(net, s)
            row = {"sample": s.name, "file": str(f.events), "events": len(s),
                   "mrd_pred_pct": 100 * float((p > 0.5).mean()),
                   "mean_blast_prob": float(p.mean())}
            if s.labels is not None:
                sc = cytometry.sample_scores(s.labels, p > 0.5)
                row.update(mrd_true_pct=100 * sc["mrd_true"], f1=sc["f1"], precision=sc["precision"],
                           recall=sc["recall"])
            if self.m.predict.probabilities:
                row["probabilities"] = f"predictions/{s.name}_blast_prob.npy"
                self.ctx.write_npy(row["probabilities"], p.astype(np.float32))
            if i < self.m.eval.scatter:
                self.scatter(s, p, f"scatter_{s.name}")
            rows.append(row)
        return rows

    def predict_summary(self, rows):
        out = {"mean_mrd_pred_pct": float(np.mean([r["mrd_pred_pct"] for r in rows]))}
        if all("f1" in r for r in rows):
            out["f1"] = float(np.mean([r["f1"] for r in rows]))
        self.ctx.log("MRD (%): " + ", ".join(f"{r['sample']} {r['mrd_pred_pct']:.3f}" for r in rows[:8]))
        return out

    # -- the model zoo --------------------------------------------------------------------------------------------
    def benchmark(self) -> dict:
        from .benchmark import benchmark

        return benchmark(self)
