"""epilepsy-mtl, the method (paper notes, with the card's resolutions: docs/papers/epilepsy-mtl.md).

Data (``datasets.ncnp_ecog``): ``hfo/<patient>/{HFO,nonHFO}`` and ``ied/<patient>/{IED,nonIED}`` 227×227 PNGs, resized
to 28×28 with anti-aliasing and scaled to [0, 1] (the paper states no other normalisation).

Model (``models.crossstitch``): two CNNs (conv-ReLU-BN-pool ×2, Dense(2)-Dropout(0.8)-Dense(2)) coupled by two full
cross-stitch units (1024² and 128², identity at init): 1,068,208 parameters counted as Keras does; ``model.stitch:
channel`` gives Misra's 2×2 units, ``model.n_stitch`` 0/1/2 the Fig. 5 variants. Dense layers linear, Keras'
BatchNorm momentum and eps, Glorot-uniform kernels.

Pairing (``data.py``): each split's HFO and IED images are paired by a seeded shuffle (``dataset.split_seed``), kept
for the whole fit (``train.repair_each_epoch``: new IED partners every epoch by (seed, epoch)); the shorter side is
cycled and every image is scored once, with its first partner. Evaluation re-pairs the test images
``eval.repairings`` times and reports the accuracy spread (``repair_acc_*``), a diagnostic.

Training: CE_HFO + CE_IED + 0.01 · Σ|conv kernels|, SGD lr 1e-3 × 0.95 every 500 steps (staircase), batch 32, 200
epochs, seed 123; no validation set, the last epoch is evaluated. ``train``: a stratified 80/20 hold-out per task, or
with ``dataset.fold`` = k fold k of ``dataset.protocol`` as the test split. Metrics per task from the confusion
matrix (positive = HFO / IED): accuracy, sensitivity, specificity, F1, ROC AUC of the positive softmax, the
majority-class rate and ``over_majority_*`` (the smoke margin); a train run adds Table 3's efficiency (Keras
parameter count, weight file MiB, ms for 300 HFO + 300 IED images on the manifest's hardware, ``infer_ms_600``).

Extra stages: ``cv`` and ``ablate`` (``cv.py``: one train run per fold, and per number of stitch units), ``explain``
(``explain.py``: captum saliency of both heads on both inputs), ``render`` (``render.py``: raw segments → the
paper's images). The fixture manifest trains faster than the paper (SGD lr 0.005, momentum 0.9, L1 0.004, BatchNorm
momentum 0.1; its comments give the arithmetic). Every stage runs with ``train.intra_op_threads`` = 1 torch thread:
the model is tiny and more threads were ten times slower on a shared 2-core machine. Not implemented: Table 2's
ImageNet baselines (shown from the paper; ``model.task`` hfo / ied trains the single-task CNN baseline, one
stream of the same backbone with one head, and ``baselines`` in ``baselines.py`` sets it beside the proposed
model over the folds). No MONAI bundle: the model classifies an HFO and an IED image together.
"""

from __future__ import annotations

import timeit
from collections import Counter
from functools import cached_property
from pathlib import Path

import lightning as L
import numpy as np
import torch
import torch.nn.functional as F

from medrun.datasets import ncnp_ecog
from medrun.datasets.ncnp_ecog import CLASSES, TASKS
from medrun.errors import DataError, UsageError
from medrun.metrics import classification as cm
from medrun.models.crossstitch import CrossStitchNet, keras_param_count
from medrun.models.single_task_cnn import SingleTaskCNN

from .. import training
from ..report import confusion_axes, markdown_table, paper_data, paper_note
from ..tasks.supervised import Supervised
from . import data
from .data import Pairs, Part, RepairingPairs, epoch_sampler, pair_indices

TASK_METRICS = ("accuracy", "sensitivity", "specificity", "f1", "auroc")
NAMES = {"accuracy": "Accuracy", "sensitivity": "Sensitivity", "specificity": "Specificity", "f1": "F1",
         "auroc": "AUC"}
COLUMNS = {"cv": "5-fold CV", "lopo": "leave-one-patient-out"}


def task_metrics(y: np.ndarray, prob: np.ndarray) -> dict:
    """accuracy, sensitivity, specificity, F1 (positive class), ROC AUC of the positive softmax, majority rate."""
    from sklearn.metrics import f1_score

    pred = (prob >= 0.5).astype(int)
    return {"accuracy": cm.accuracy(y, pred), "sensitivity": cm.sensitivity(y, pred),
            "specificity": cm.specificity(y, pred), "f1": float(f1_score(y, pred, pos_label=1, zero_division=0)),
            "auroc": cm.auroc(y, prob), "majority": float(max(y.mean(), 1 - y.mean())) if len(y) else float("nan"),
            "confusion": cm.confusion_matrix(y, pred, num_classes=2)}


class LitCrossStitch(L.LightningModule):
    """CE_HFO + CE_IED + l1 · Σ|conv kernels|; SGD with a staircase decay every ``decay_steps`` optimizer steps."""

    def __init__(self, net: CrossStitchNet, lr: float, momentum: float, decay_rate: float, decay_steps: int,
                 l1: float):
        super().__init__()
        self.net, self.lr, self.momentum = net, lr, momentum
        self.decay_rate, self.decay_steps, self.l1 = decay_rate, decay_steps, l1

    def training_step(self, batch, batch_idx):
        xa, ya, xb, yb = batch
        la, lb = self.net(xa, xb)
        loss = F.cross_entropy(la, ya) + F.cross_entropy(lb, yb)
        loss = loss + self.l1 * sum(w.abs().sum() for w in self.net.conv_kernels())
        kw = dict(on_step=False, on_epoch=True, batch_size=len(ya), sync_dist=True)
        self.log("train_loss", loss, prog_bar=True, **kw)
        self.log("train_acc_hfo", (la.argmax(1) == ya).float().mean(), **kw)
        self.log("train_acc_ied", (lb.argmax(1) == yb).float().mean(), **kw)
        return loss

    def lr_at(self, step: int) -> float:
        return self.decay_rate ** (step // self.decay_steps)

    def configure_optimizers(self):
        opt = torch.optim.SGD(self.parameters(), lr=self.lr, momentum=self.momentum)
        sched = torch.optim.lr_scheduler.LambdaLR(opt, self.lr_at)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}


class EpilepsyMtl(Supervised):
    val_split = None  # no validation set: the last epoch is evaluated

    def run_stage(self, stage: str) -> dict:
        """Every stage with ``train.intra_op_threads`` torch threads (restored afterwards)."""
        n, before = self.m.train.intra_op_threads, torch.get_num_threads()
        if n:
            torch.set_num_threads(n)
        try:
            return super().run_stage(stage)
        finally:
            torch.set_num_threads(before)

    def build_model(self) -> CrossStitchNet | SingleTaskCNN:
        mm = self.m.model
        if mm.task == "both":
            net = CrossStitchNet(mm.stitch, mm.n_stitch, mm.dropout, mm.bn_momentum)
        else:
            net = SingleTaskCNN(mm.task, mm.dropout, mm.bn_momentum)
        if mm.weights and self.ctx.stage == "train":  # later stages load the train run's own weights
            load_initial_weights(net, Path(mm.weights), self.ctx.log)
        return net

    # -- data -----------------------------------------------------------------------------------------------
    @property
    def root(self) -> Path:
        return Path(self.ctx.data_roots["ncnp-ecog"])

    @cached_property
    def samples(self) -> dict[str, list]:
        samples = ncnp_ecog.read(self.root, self.m.dataset.image_size)
        for t in TASKS:
            counts = Counter(s.label for s in samples[t])
            self.ctx.log(f"{t}: {len(samples[t])} images from {len({s.patient for s in samples[t]})} patients — "
                         f"{CLASSES[t][1]} {counts[1]}, {CLASSES[t][0]} {counts[0]}")
        return samples

    @cached_property
    def images(self) -> dict[str, np.ndarray]:
        """{task: (N, 3, 28, 28) float32 images}, read once per stage, and reused by the next stage of this process
        (the child runs of a sweep) while every file's path, size and mtime are unchanged."""
        key = (self.m.dataset.input_size, tuple((str(s.path), *_stat(s.path)) for t in TASKS
                                                for s in self.samples[t]))
        if _IMAGES.get("key") != key:
            _IMAGES.clear()
            _IMAGES.update(key=key, images={t: ncnp_ecog.load_images(self.samples[t], self.m.dataset.input_size)
                                            for t in TASKS})
        return {t: a.copy() for t, a in _IMAGES["images"].items()}

    def setting(self) -> str:
        """This run's split in words (paper.md)."""
        d = self.m.dataset
        return "hold-out 80/20 per task" if d.fold is None else f"fold {d.fold + 1} of {data.protocol(d)}"

    def splits(self) -> dict[str, Part]:
        d = self.m.dataset
        if d.fold is None:
            splits = data.holdout(self.samples, d)
        else:
            folds = data.folds(self.samples, d)
            if d.fold >= len(folds):
                raise UsageError(f"dataset.fold {d.fold} is not one of the {len(folds)} {d.protocol} folds",
                                 fix=f"-o dataset.fold=N with 0 ≤ N < {len(folds)}")
            splits = folds[d.fold]
        self.ctx.record_splits({f"{name}_{t}": [self.samples[t][i].path for i in part[t]]
                                for name, part in splits.items() for t in TASKS})
        self.ctx.log(" | ".join(f"{name} " + " · ".join(f"{t} {len(part[t])}" for t in TASKS)
                                for name, part in splits.items()))
        return splits

    def labels(self, t: str, idx) -> np.ndarray:
        return np.array([self.samples[t][i].label for i in idx], dtype=np.int64)

    def pairs(self, part, seed: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Aligned (HFO index, IED index) arrays into the tasks' sample lists."""
        ia, ib = pair_indices(len(part["hfo"]), len(part["ied"]), self.m.dataset.split_seed if seed is None else seed)
        return part["hfo"][ia], part["ied"][ib]

    # -- training -------------------------------------------------------------------------------------------
    def dataset(self, part: Part, train: bool) -> Pairs:
        a, b = self.pairs(part)
        return Pairs(self.images["hfo"][a], self.labels("hfo", a), self.images["ied"][b], self.labels("ied", b))

    def train_loader(self, splits: dict):
        if not self.m.train.repair_each_epoch:
            return super().train_loader(splits)
        t, ds = self.m.train, self.dataset(splits["train"], True)
        ds = RepairingPairs(ds.xa, ds.ya, ds.xb, ds.yb, seed=self.m.seed)
        return training.ResumableLoader(ds, t.batch_size, self.m.seed, num_workers=t.num_workers,
                                        sampler=epoch_sampler(len(ds), t.batch_size, self.m.seed))

    def fit(self, splits: dict, net=None, *, checkpoint: bool = True):
        torch.manual_seed(self.m.seed)  # the same initial weights whatever ran before in this process
        return super().fit(splits, net, checkpoint=checkpoint)

    def lit_module(self, net):
        t = self.m.train
        return LitCrossStitch(net, t.lr, t.momentum, t.lr_decay_rate, t.lr_decay_steps, t.l1)

    def weights_metadata(self) -> dict:
        mm = self.m.model
        return {"pipeline": "epilepsy-mtl", "stitch": mm.stitch, "n_stitch": mm.n_stitch, "task": mm.task}

    # -- evaluation -----------------------------------------------------------------------------------------
    def predict_pairs(self, net, xa: np.ndarray, xb: np.ndarray, batch: int = 256) -> tuple[np.ndarray, np.ndarray]:
        """Positive-class softmax of both heads for aligned pairs (xa[i], xb[i]), on the manifest's hardware."""
        out = [self.predictor(net, torch.as_tensor(xa[i:i + batch]), torch.as_tensor(xb[i:i + batch]))
               for i in range(0, len(xa), batch)]
        pa, pb = (torch.cat([torch.softmax(o[k], 1)[:, 1] for o in out]).numpy() for k in (0, 1))
        return pa, pb

    def evaluate(self, net, part: Part) -> tuple[dict, list[dict]]:
        """Metrics of both tasks on the fixed pairing (confusion matrices included), the re-pairing spread, the
        efficiency figures of a train run (Table 3); per-image rows."""
        samples, images, run = self.samples, self.images, self.predictor.setup(net)
        a, b = self.pairs(part)
        pa, pb = self.predict_pairs(run, images["hfo"][a], images["ied"][b])
        probs = {"hfo": _first(a, pa), "ied": _first(b, pb)}
        partner: dict[str, dict[int, int]] = {"hfo": {}, "ied": {}}
        for i, j in zip(a.tolist(), b.tolist(), strict=True):  # an image's first partner, as scored
            partner["hfo"].setdefault(i, j)
            partner["ied"].setdefault(j, i)
        metrics: dict = {}
        rows = []
        for t in TASKS:
            ids = np.array(sorted(probs[t]))
            y, p = self.labels(t, ids), np.array([probs[t][i] for i in ids])
            tm = task_metrics(y, p)
            metrics[f"confusion_{t}"] = tm.pop("confusion").tolist()
            metrics.update({f"{k}_{t}": v for k, v in tm.items()})
            metrics[f"over_majority_{t}"] = tm["accuracy"] - tm["majority"]
            metrics[f"n_{t}"] = len(ids)
            other = "ied" if t == "hfo" else "hfo"
            rows += [{"task": t, "file": samples[t][i].rel(self.root), "patient": samples[t][i].patient,
                      "label": CLASSES[t][yy], "pred": CLASSES[t][int(pp >= 0.5)], "prob": round(float(pp), 6),
                      "partner": samples[other][partner[t][int(i)]].rel(self.root)}
                     for i, yy, pp in zip(ids, y, p, strict=True)]
        if n_rep := self.m.eval.repairings:
            accs = {t: [] for t in TASKS}
            for r in range(n_rep):
                ra, rb = self.pairs(part, seed=self.m.dataset.split_seed + 1000 + r)
                qa, qb = self.predict_pairs(run, images["hfo"][ra], images["ied"][rb])
                for t, ii, q in (("hfo", ra, qa), ("ied", rb, qb)):
                    first = _first(ii, q)
                    ids = np.array(sorted(first))
                    hit = np.array([first[i] >= 0.5 for i in ids]).astype(int)
                    accs[t].append(cm.accuracy(self.labels(t, ids), hit))
            for t in TASKS:
                v = np.array(accs[t])
                metrics.update({f"repair_acc_mean_{t}": float(v.mean()),
                                f"repair_acc_sd_{t}": float(v.std(ddof=1)) if n_rep > 1 else 0.0,
                                f"repair_acc_min_{t}": float(v.min()), f"repair_acc_max_{t}": float(v.max())})
        if self.ctx.stage == "train":
            metrics.update(self.efficiency(net))
        if (task := self.m.model.task) != "both":
            metrics, rows = single_task(metrics, rows, task)
        return metrics, rows

    def efficiency(self, net: CrossStitchNet) -> dict:
        """Table 3: Keras parameter count, weight file size (MiB), ms to classify 300 HFO + 300 IED images in one
        batch (median of 5 after a warm-up)."""
        run, x = self.predictor.setup(net), [torch.as_tensor(self.images[t][np.arange(300) % len(self.images[t])])
                                             for t in TASKS]
        times = timeit.repeat(lambda: self.predictor(run, *x), number=1, repeat=6)[1:]
        weights = self.ctx.path / "checkpoints" / "model.safetensors"
        return {"params_keras": keras_param_count(net), **training.count_params(net),
                "infer_ms_600": round(1000 * float(np.median(times)), 2),
                **({"size_mib": round(weights.stat().st_size / 2**20, 3)} if weights.exists() else {})}

    def figures(self, net, part, metrics: dict, rows: list[dict], split: str) -> None:
        confusion_figures(self.ctx, {t: metrics[f"confusion_{t}"] for t in TASKS}, split)

    def summary_line(self, split: str, metrics: dict) -> str:
        return f"{split}: " + "  ".join(
            f"{t.upper()} acc {metrics[f'accuracy_{t}']:.4f} sens {metrics[f'sensitivity_{t}']:.3f} spec "
            f"{metrics[f'specificity_{t}']:.3f} F1 {metrics[f'f1_{t}']:.3f} AUC {metrics[f'auroc_{t}']:.3f}"
            for t in TASKS)

    def paper_sections(self, metrics: dict) -> list[str]:
        where = self.setting()
        setting = f"{where}, last epoch" if self.ctx.stage == "train" else f"{self.m.eval.split} split of the {where}"
        return [*table_sections(self.ctx.spec, metrics, "cv", setting), paper_note(self.ctx.spec, "comparison")]

    # -- predict --------------------------------------------------------------------------------------------
    def predict_items(self):
        """(samples, images, indices, name of a sample): the folders predict.hfo + predict.ied, else the eval split."""
        p, d = self.m.predict, self.m.dataset
        if not (p.hfo or p.ied):
            return self.samples, self.images, self.split_of(self.splits()), lambda s: s.rel(self.root)
        if not (p.hfo and p.ied):
            raise UsageError("predict needs both predict.hfo and predict.ied (the model classifies pairs)",
                             fix="-o predict.hfo=DIR -o predict.ied=DIR")
        samples = {}
        for t in TASKS:
            folder = Path(getattr(p, t))
            if not folder.is_dir():
                raise DataError(f"predict.{t} folder not found: {folder}", fix=f"-o predict.{t}=/path/to/images")
            files = self.ctx.predict_inputs(f"{folder}/**/*", ncnp_ecog.IMAGE_SUFFIXES, what=f"{t.upper()} images")
            samples[t] = [ncnp_ecog.Sample(f, -1, "", t) for f in files]
            if d.image_size:
                ncnp_ecog.check_sizes(folder, samples[t], d.image_size)
        images = {t: ncnp_ecog.load_images(samples[t], d.input_size) for t in TASKS}
        return samples, images, {t: np.arange(len(samples[t])) for t in TASKS}, lambda s: str(s.path)

    def predict_rows(self, net, items) -> list[dict]:
        samples, images, idx, name = items
        a, b = self.pairs(idx)
        pa, pb = self.predict_pairs(self.predictor.setup(net), images["hfo"][a], images["ied"][b])
        rows = []
        for t, ii, pp in (("hfo", a, pa), ("ied", b, pb)):
            first = _first(ii, pp)
            rows += [{"task": t, "file": name(samples[t][i]), "pred": CLASSES[t][int(first[i] >= 0.5)],
                      "prob": round(float(first[i]), 6)} for i in sorted(first)
                     if self.m.model.task in ("both", t)]
        return rows

    def predict_summary(self, rows: list[dict]) -> dict:
        counts = {t: {c: sum(r["pred"] == c for r in rows if r["task"] == t) for c in CLASSES[t]} for t in TASKS}
        self.ctx.log("predicted " + "; ".join(f"{t}: " + ", ".join(f"{c} {n}" for c, n in counts[t].items())
                                              for t in TASKS))
        return {**{f"n_{t}": sum(counts[t].values()) for t in TASKS}, "predicted": counts}

    # -- extra stages ---------------------------------------------------------------------------------------
    def cv(self) -> dict:
        from .cv import cv

        return cv(self)

    def ablate(self) -> dict:
        from .cv import ablate

        return ablate(self)

    def baselines(self) -> dict:
        from .baselines import baselines

        return baselines(self)

    def explain(self) -> dict:
        if self.m.model.task != "both":
            raise UsageError("explain reads both heads of the multitask model; a single-task baseline has one",
                             fix="-o model.task=both")
        from .explain import explain

        return explain(self)

    def render(self) -> dict:
        from .render import render

        return render(self)


_IMAGES: dict = {}  # the last stage's images, {"key", "images"} (one entry: a sweep's children share one data set)


def _stat(path) -> tuple[int, int]:
    st = Path(path).stat()
    return st.st_size, st.st_mtime_ns


def single_task(metrics: dict, rows: list[dict], task: str) -> tuple[dict, list[dict]]:
    """A single-task baseline's scores: the other task's numbers NaN (its counts 0, its confusion matrix zeros, so
    fold sums and means over folds leave it out) and its per-image rows dropped."""
    other = "ied" if task == "hfo" else "hfo"
    out = {}
    for k, v in metrics.items():
        if k.endswith(f"_{other}") and not isinstance(v, bool):
            v = (float("nan") if isinstance(v, float) else 0 if isinstance(v, int)
                 else [[0, 0], [0, 0]] if k == f"confusion_{other}" else v)
        out[k] = v
    out["task"] = task
    return out, [r for r in rows if r["task"] == task]


def load_initial_weights(net, path: Path, log=print):
    """Initial weights from a user's file through the safe loader (``training.load_state``: safetensors, or
    ``torch.load(weights_only=True)``), optionally under a ``model.`` prefix. The multitask model needs every key;
    a single-task model takes its stream's (``hfo.*`` / ``ied.*``, or bare ``block1.…`` keys) and ignores the rest,
    so a multitask train run's ``model.safetensors`` initialises either baseline. A missing or misshapen key is
    an error naming it."""
    state = training.load_state(path)
    if state and all(k.startswith("model.") for k in state):
        state = {k[6:]: v for k, v in state.items()}
    own = net.state_dict()
    if isinstance(net, SingleTaskCNN):
        if not any(k.startswith(f"{net.task}.") for k in state):  # a bare stream
            state = {f"{net.task}.{k}": v for k, v in state.items()}
        state = {k: v for k, v in state.items() if k.startswith(f"{net.task}.")}
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    wrong = sorted(k for k in set(own) & set(state) if tuple(own[k].shape) != tuple(state[k].shape))
    if missing or unexpected or wrong:
        parts = [f"{len(v)} {what} (e.g. {v[0]})" for what, v in
                 (("missing", missing), ("unexpected", unexpected), ("with other shapes", wrong)) if v]
        raise UsageError(f"weights in {path} do not fit this model: " + ", ".join(parts),
                         fix="pass weights of the same model.task / model.stitch / model.n_stitch")
    net.load_state_dict(state)
    log(f"initial weights: {len(state)} tensors from {path}")
    return net


def _first(idx: np.ndarray, values: np.ndarray) -> dict[int, float]:
    """{index: value at its first occurrence} (a cycled shorter side is scored once per image)."""
    out: dict[int, float] = {}
    for i, v in zip(idx.tolist(), values.tolist(), strict=True):
        out.setdefault(i, v)
    return out


def confusion_figures(ctx, confusion: dict, title: str) -> None:
    """``figures/confusion_{hfo,ied}.png``."""
    for t in TASKS:
        with ctx.figure(f"confusion_{t}", figsize=(4.9, 4.2)) as (_, ax):
            confusion_axes(ax, np.asarray(confusion[t]), list(CLASSES[t]), f"{t.upper()} {title}")


def paper_column(spec, protocol: str) -> dict[str, float]:
    """Table 1's column of the protocol, {metric: fraction}."""
    rows = paper_data(spec)["tables"]["table1"]["rows"]
    return {r[0]: r[1 if protocol == "cv" else 2] for r in rows}


def table_sections(spec, metrics: dict, protocol: str, setting: str) -> list[str]:
    """Table 1 (this run beside the protocol's column, mean ± sd when over folds), Table 2 with this run's row, and
    Table 3 when the run measured its efficiency."""
    paper, tables = paper_column(spec, protocol), paper_data(spec)["tables"]

    def run(key: str):
        v, sd = metrics.get(key), metrics.get(f"{key}_sd")
        return f"{v:.4f} ± {sd:.4f}" if isinstance(v, float) and isinstance(sd, float) else v

    body = [[NAMES[k], run(f"{k}_hfo"), paper[f"{k}_hfo"], run(f"{k}_ied"), paper[f"{k}_ied"]] for k in TASK_METRICS]
    body.append(["majority-class rate", metrics.get("majority_hfo"), "—", metrics.get("majority_ied"), "—"])
    body.append(["accuracy − majority", metrics.get("over_majority_hfo"), "—", metrics.get("over_majority_ied"), "—"])
    if "repair_acc_sd_hfo" in metrics:
        body.append(["accuracy sd over re-pairings", metrics["repair_acc_sd_hfo"], "—", metrics["repair_acc_sd_ied"],
                     "—"])
    out = [f"## Table 1, {COLUMNS[protocol]} column (this run: {setting})\n\nFractions, not percent"
           + ("; mean ± sd over folds" if "accuracy_hfo_sd" in metrics else "") + ".\n\n"
           + markdown_table(["metric", "HFO run", "HFO paper", "IED run", "IED paper"], body)]
    t2 = tables["table2"]
    this = ["this run", *[100 * metrics.get(f"accuracy_{t}", float("nan")) for t in TASKS],
            *[metrics.get(f"f1_{t}") for t in TASKS]]
    out.append(f"## {t2['title']}\n\n" + markdown_table(t2["header"], [this, *t2["rows"]]))
    if "infer_ms_600" in metrics:
        t3 = tables["table3"]
        this = ["this run", metrics["params_keras"] / 1e6, metrics.get("size_mib"), metrics["infer_ms_600"]]
        out.append(f"## {t3['title']}\n\n" + markdown_table(t3["header"], [this, *t3["rows"]]))
    return out
