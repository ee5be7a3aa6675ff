"""epilepsy-mtl, the method (card: shared/papers/epilepsy-mtl.md).

Data: ``datasets.ncnp_ecog`` reads ``hfo/<patient>/{HFO,nonHFO}`` and ``ied/<patient>/{IED,nonIED}`` (227×227 PNGs,
checked), resizes every image to 28×28 with anti-aliasing and scales it to [0, 1] (no further normalisation: the
paper states none).

Model (``models.crossstitch``): two identical CNNs (conv-ReLU-BN-pool ×2, Dense(2)-Dropout(0.8)-Dense(2)) coupled by
two full cross-stitch units (1024² and 128², identity at init), 1,068,208 parameters counted as Keras does.
``model.stitch: channel`` gives Misra's 2×2-per-channel units, ``model.n_stitch`` 0/1/2 the paper's Fig. 5 study.

Pairing: the stitch needs an HFO image and an IED image side by side, so each split's HFO and IED images are
paired by a seeded shuffle (``dataset.split_seed``) and the pairing is kept for the whole fit (Keras' joint fit);
training batches shuffle pairs, not partners. When the two sets differ in size the shorter one is cycled (again
shuffled), and every image is scored once, with its first partner. A prediction for one task depends on its
partner, so evaluation also re-pairs the test images ``eval.repairings`` times (10) and reports the spread of
accuracy as a diagnostic (``repair_acc_sd_*``, min, max).

``train.repair_each_epoch`` (the card's optional ``--repair-each-epoch``): the IED partners of the training pairs are
reshuffled every epoch by (seed, epoch) instead of staying fixed; evaluation keeps the fixed pairing.

Training: loss = CE_HFO + CE_IED + 0.01 · Σ|conv kernels| (Keras ``l1()``; the stitch matrices and dense layers
are not penalised), SGD lr 1e-3 × 0.95 every 500 steps (staircase), batch 32, 200 epochs, seed 123, no validation
set and no early stopping: the last epoch is evaluated.

Protocols:
- ``train``: a stratified 80/20 hold-out per task (1,200/300 on the paper's data; the paper's text also speaks of
  "5 repetitions of a random 1200/300 split"), evaluated after the last epoch; compared with Table 1's CV column.
- ``cv`` with ``cv.protocol: cv``: stratified 5-fold per task (seed 123), fold k of HFO paired with fold k of IED,
  metrics averaged over folds (mean ± sd). With ``cv.protocol: lopo``: one fold per patient (or the groups of
  ``cv.fold_file``, CSV patient,fold); the held-out patients' images of both tasks form the test fold. A patient in
  two folds of the fold file, or present in one task only, is a data error naming the patient.
- Metrics per task from each fold's confusion matrix (positive = HFO / IED): accuracy, sensitivity, specificity,
  F1 of the positive class, ROC AUC of the positive softmax; and the majority-class rate of the test fold, so
  ``over_majority_*`` = accuracy − majority rate (the card's smoke margin).
- Efficiency (Table 3): parameters (Keras count), weight file size in MiB, and milliseconds to classify 300 HFO +
  300 IED images in one batch on this machine (``infer_ms_600``).

``ablate``: the paper's baseline study (Fig. 5): the ``cv`` protocol once per ``ablate.n_stitch`` (0 = separate
models, 1 = one stitch, 2 = proposed), every variant from the same seed and folds; the gains of two stitches over
separate models beside the paper's (+11.86 / +10.8 accuracy points, +0.2633 / +0.0457 F1; the paper gives no
absolute numbers for the variants).

``explain`` (``explain.py``): captum Saliency and Integrated Gradients of each head's predicted-class logit with
respect to both inputs: its own image (the saliency map) and its partner (the cross-task attribution through the
stitches, zero with ``n_stitch: 0``).

Choices where the card is silent: Dense(2) layers are linear (Keras' default activation); BatchNorm uses Keras'
momentum 0.99 and eps 1e-3; Glorot-uniform kernels, zero biases. The fixture manifest (the card's smoke run) uses SGD lr 0.005
with momentum 0.9, L1 0.004 and BatchNorm momentum 0.1: 50 epochs of a 300-image fixture are 400 steps, too few for
the paper's lr 1e-3, and the L1 term at the paper's 0.01 with a faster rate drives the BatchNorm-scaled kernels to
zero (its comments give the arithmetic). All stages run with one torch thread (``train.intra_op_threads``): the
model is tiny, and on a shared 2-core machine two threads made a training step ten times slower.
``render`` (``render.py``): raw candidate segments (``.npz`` with x, fs) → the paper's 227×227 HFO CWT maps and IED
traces, in the layout the other stages read. Not implemented: the ImageNet baselines of Table 2 (their numbers are
shown from the paper for context only). A killed ``cv`` or ``ablate`` run starts again from its first fold
(only ``train`` resumes mid-run from ``last.ckpt``).
"""

from __future__ import annotations

import json
import math
import time
from collections import Counter
from pathlib import Path

import lightning as L
import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from medrun.datasets import ncnp_ecog
from medrun.datasets.ncnp_ecog import CLASSES, TASKS
from medrun.errors import DataError, UsageError
from medrun.metrics import classification as cm
from medrun.models.crossstitch import CrossStitchNet, keras_param_count

from .. import training
from ..base import Pipeline
from ..report import confusion_png, learning_curves, markdown_table, paper_md
from ..tasks import classification as clf

TASK_METRICS = ("accuracy", "sensitivity", "specificity", "f1", "auroc")
# Table 1 of the paper (proposed model), fractions.
PAPER_TABLE1 = {
    "cv": {"accuracy_hfo": 0.9099, "accuracy_ied": 0.9399, "sensitivity_hfo": 0.7855, "specificity_hfo": 0.9193,
           "sensitivity_ied": 0.8202, "specificity_ied": 0.8812, "f1_hfo": 0.80, "f1_ied": 0.82,
           "auroc_hfo": 0.8524, "auroc_ied": 0.8539},
    "lopo": {"accuracy_hfo": 0.7803, "accuracy_ied": 0.8119, "sensitivity_hfo": 0.4317, "specificity_hfo": 0.9063,
             "sensitivity_ied": 0.6893, "specificity_ied": 0.8507, "f1_hfo": 0.42, "f1_ied": 0.65,
             "auroc_hfo": 0.6734, "auroc_ied": 0.7427},
}
# Table 2 (5-fold CV): accuracy HFO / IED (%), F1 HFO / IED.
PAPER_TABLE2 = {"Proposed (paper)": (90.99, 93.99, 0.80, 0.82), "VGG19": (89.20, 87.24, 0.79, 0.80),
                "DenseNet-201": (87.73, 86.27, 0.78, 0.81), "Inception-v3": (87.33, 87.73, 0.77, 0.81),
                "2D-CNN": (85.47, 86.27, 0.73, 0.81), "ResNet18": (85.4, 83.40, 0.76, 0.79),
                "ViT": (77.53, 74.47, 0.67, 0.71)}
# Table 3: parameters (M), size (MB), ms for 600 images (i7-10750H + RTX 2070).
PAPER_TABLE3 = {"Proposed (paper)": (1.06, 4.0, 455), "2D-CNN": (0.71, 2.9, 1532), "ResNet18": (11.69, 44.7, 1248),
                "VGG19": (143.67, 548.1, 2138)}
# Fig. 5 (text): two stitch units vs separate models, accuracy points and F1.
PAPER_FIG5 = {"accuracy_hfo": 11.86, "accuracy_ied": 10.8, "f1_hfo": 0.2633, "f1_ied": 0.0457}
NAMES = {"accuracy": "Accuracy", "sensitivity": "Sensitivity", "specificity": "Specificity", "f1": "F1",
         "auroc": "AUC"}


class Pairs(Dataset):
    """Fixed pairs: item i is (HFO image, HFO label, IED image, IED label) of pair i."""

    def __init__(self, xa, ya, xb, yb):
        self.xa, self.ya = torch.as_tensor(xa), torch.as_tensor(ya, dtype=torch.long)
        self.xb, self.yb = torch.as_tensor(xb), torch.as_tensor(yb, dtype=torch.long)

    def __len__(self):
        return len(self.xa)

    def __getitem__(self, i):
        return self.xa[i], self.ya[i], self.xb[i], self.yb[i]


class RepairingPairs(Pairs):
    """``--repair-each-epoch``: the HFO side stays, the IED partners are reshuffled every epoch by (seed, epoch).
    Items are keyed ``(i, epoch)`` by :class:`EpochSampler`."""

    def __init__(self, xa, ya, xb, yb, seed: int):
        super().__init__(xa, ya, xb, yb)
        self.seed, self._perm = seed, {}

    def partner(self, epoch: int) -> torch.Tensor:
        if epoch not in self._perm:
            g = torch.Generator().manual_seed(self.seed * 100_003 + 7919 * (epoch + 1))
            self._perm = {epoch: torch.randperm(len(self), generator=g)}
        return self._perm[epoch]

    def __getitem__(self, key):
        i, epoch = key
        j = self.partner(epoch)[i]
        return self.xa[i], self.ya[i], self.xb[j], self.yb[j]


def epoch_sampler(n: int, batch_size: int, seed: int):
    """A ResumableSampler (same order, same resume) whose indices carry the epoch, for :class:`RepairingPairs`."""
    from ..training import ResumableSampler

    class EpochSampler(ResumableSampler):
        def __iter__(self):
            epoch = self.epoch
            return ((i, epoch) for i in super().__iter__())

    return EpochSampler(n, batch_size, seed)


def pair_indices(n_a: int, n_b: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """A seeded pairing of two index sets: each side is a shuffle of its indices, the shorter one cycled (each
    cycle reshuffled) to the longer one's length."""
    rng = np.random.default_rng(seed)
    n = max(n_a, n_b)

    def side(k: int) -> np.ndarray:
        if k == 0:
            raise DataError("a split has no images of one task", fix="every split needs HFO and IED images")
        return np.concatenate([rng.permutation(k) for _ in range(math.ceil(n / k))])[:n]

    return side(n_a), side(n_b)


def task_metrics(y: np.ndarray, prob: np.ndarray) -> dict:
    """accuracy, sensitivity, specificity, F1 (positive class), ROC AUC of the positive softmax, majority rate."""
    from sklearn.metrics import f1_score

    pred = (prob >= 0.5).astype(int)
    return {"accuracy": cm.accuracy(y, pred), "sensitivity": cm.sensitivity(y, pred), "specificity": cm.specificity(y, pred),
            "f1": float(f1_score(y, pred, pos_label=1, zero_division=0)), "auroc": cm.auroc(y, prob),
            "majority": float(max(y.mean(), 1 - y.mean())) if len(y) else float("nan"),
            "confusion": cm.confusion_matrix(y, pred, num_classes=2)}


class LitCrossStitch(L.LightningModule):
    """CE_HFO + CE_IED + l1 · Σ|conv kernels|; SGD with a staircase decay every ``decay_steps`` optimizer steps."""

    def __init__(self, net: CrossStitchNet, lr: float, momentum: float, decay_rate: float, decay_steps: int, l1: float):
        super().__init__()
        self.net, self.lr, self.momentum = net, lr, momentum
        self.decay_rate, self.decay_steps, self.l1 = decay_rate, decay_steps, l1

    def training_step(self, batch, batch_idx):
        xa, ya, xb, yb = batch
        la, lb = self.net(xa, xb)
        ce_a, ce_b = F.cross_entropy(la, ya), F.cross_entropy(lb, yb)
        reg = sum(w.abs().sum() for w in self.net.conv_kernels())
        loss = ce_a + ce_b + self.l1 * reg
        n = len(ya)
        self.log("train_loss", loss, on_step=False, on_epoch=True, prog_bar=True, batch_size=n, sync_dist=True)
        self.log("train_acc_hfo", (la.argmax(1) == ya).float().mean(), on_step=False, on_epoch=True, batch_size=n, sync_dist=True)
        self.log("train_acc_ied", (lb.argmax(1) == yb).float().mean(), on_step=False, on_epoch=True, batch_size=n, sync_dist=True)
        return loss

    def lr_at(self, step: int) -> float:
        return self.decay_rate ** (step // self.decay_steps)

    def configure_optimizers(self):
        opt = torch.optim.SGD(self.parameters(), lr=self.lr, momentum=self.momentum)
        sched = torch.optim.lr_scheduler.LambdaLR(opt, self.lr_at)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}


@torch.no_grad()
def predict_pairs(net: CrossStitchNet, xa: np.ndarray, xb: np.ndarray, batch: int = 256) -> tuple[np.ndarray, np.ndarray]:
    """Positive-class softmax of both heads for aligned pairs (xa[i], xb[i])."""
    net.eval()
    pa, pb = [], []
    for i in range(0, len(xa), batch):
        la, lb = net(torch.as_tensor(xa[i:i + batch]), torch.as_tensor(xb[i:i + batch]))
        pa.append(torch.softmax(la, 1)[:, 1])
        pb.append(torch.softmax(lb, 1)[:, 1])
    return torch.cat(pa).numpy(), torch.cat(pb).numpy()


class EpilepsyMtl(Pipeline):
    def run_stage(self, stage: str) -> dict:
        """Every stage with ``train.intra_op_threads`` torch threads (restored afterwards)."""
        n, before = self.m.train.intra_op_threads, torch.get_num_threads()
        if n:
            torch.set_num_threads(n)
        try:
            return super().run_stage(stage)
        finally:
            torch.set_num_threads(before)

    def build_model(self) -> CrossStitchNet:
        mm = self.m.model
        return CrossStitchNet(mm.stitch, mm.n_stitch, mm.dropout, mm.bn_momentum)

    # -- data -----------------------------------------------------------------------------------------------
    @property
    def root(self) -> Path:
        return Path(self.ctx.data_roots["ncnp-ecog"])

    def data(self):
        """{task: samples}, {task: (N, 3, 28, 28) images}; read once per stage."""
        if getattr(self, "_data", None) is None:
            d = self.m.dataset
            samples = ncnp_ecog.read(self.root, d.image_size)
            for t in TASKS:
                counts = Counter(s.label for s in samples[t])
                self.ctx.log(f"{t}: {len(samples[t])} images from {len({s.patient for s in samples[t]})} patients — "
                             f"{CLASSES[t][1]} {counts[1]}, {CLASSES[t][0]} {counts[0]}")
            images = {t: ncnp_ecog.load_images(samples[t], d.input_size) for t in TASKS}
            self._data = samples, images
        return self._data

    def holdout(self) -> dict[str, dict[str, np.ndarray]]:
        """{split: {task: indices}}: the train stage's stratified hold-out per task."""
        from sklearn.model_selection import StratifiedShuffleSplit

        samples, _ = self.data()
        d = self.m.dataset
        out: dict[str, dict] = {"train": {}, "test": {}}
        for t in TASKS:
            y = np.array([s.label for s in samples[t]])
            split = StratifiedShuffleSplit(n_splits=1, test_size=d.test_fraction, random_state=d.split_seed)
            tr, te = next(split.split(np.zeros(len(y)), y))
            out["train"][t], out["test"][t] = np.sort(tr), np.sort(te)
        return out

    def _labels(self, t: str, idx) -> np.ndarray:
        samples, _ = self.data()
        return np.array([samples[t][i].label for i in idx], dtype=np.int64)

    def _pairs(self, idx: dict[str, np.ndarray], seed: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Aligned (HFO index, IED index) arrays into the task's sample lists."""
        ia, ib = pair_indices(len(idx["hfo"]), len(idx["ied"]), self.m.dataset.split_seed if seed is None else seed)
        return idx["hfo"][ia], idx["ied"][ib]

    def _record_splits(self, splits: dict[str, dict[str, np.ndarray]]) -> None:
        samples, _ = self.data()
        lock = json.loads((self.ctx.run.path / "data.lock.json").read_text())
        lock["splits"] = {f"{name}_{t}": [samples[t][i].rel(self.root) for i in idx[t]]
                          for name, idx in splits.items() for t in TASKS}
        self.ctx.run.write_json("data.lock.json", lock)

    # -- training -------------------------------------------------------------------------------------------
    def _fit(self, idx: dict[str, np.ndarray], ckpt: bool = True, resume: bool = True):
        t = self.m.train
        _, images = self.data()
        a, b = self._pairs(idx)
        arrays = (images["hfo"][a], self._labels("hfo", a), images["ied"][b], self._labels("ied", b))
        if t.repair_each_epoch:
            ds = RepairingPairs(*arrays, seed=self.m.seed)
            loader = training.ResumableLoader(ds, t.batch_size, self.m.seed, num_workers=t.num_workers,
                                              sampler=epoch_sampler(len(ds), t.batch_size, self.m.seed))
        else:
            loader = clf.loader(Pairs(*arrays), t.batch_size, True, t.num_workers, seed=self.m.seed)
        torch.manual_seed(self.m.seed)  # the same initial weights for every fold
        module = LitCrossStitch(self.build_model(), t.lr, t.momentum, t.lr_decay_rate, t.lr_decay_steps, t.l1)
        trainer = training.make_trainer(self.ctx, t.epochs, checkpoint=ckpt, logger=ckpt)
        t0 = time.perf_counter()
        training.fit(trainer, module, train_dataloaders=loader,
                     ckpt_path=training.resume_checkpoint(self.ctx.run) if resume else None)
        return module.net, (time.perf_counter() - t0) / max(1, t.epochs)

    # -- evaluation -----------------------------------------------------------------------------------------
    def _evaluate(self, net: CrossStitchNet, idx: dict[str, np.ndarray]) -> tuple[dict, list[dict], dict]:
        """Metrics of both tasks on the fixed pairing, the re-pairing spread, per-image rows, confusion matrices."""
        samples, images = self.data()
        a, b = self._pairs(idx)
        pa, pb = predict_pairs(net, images["hfo"][a], images["ied"][b])
        probs = {"hfo": _first(a, pa), "ied": _first(b, pb)}
        partner: dict[str, dict[int, int]] = {"hfo": {}, "ied": {}}
        for i, j in zip(a.tolist(), b.tolist(), strict=True):  # an image's first partner, as scored
            partner["hfo"].setdefault(i, j)
            partner["ied"].setdefault(j, i)
        metrics: dict = {}
        confusion = {}
        rows = []
        for t in TASKS:
            ids = np.array(sorted(probs[t]))
            y, p = self._labels(t, ids), np.array([probs[t][i] for i in ids])
            tm = task_metrics(y, p)
            confusion[t] = tm.pop("confusion")
            metrics.update({f"{k}_{t}": v for k, v in tm.items()})
            metrics[f"over_majority_{t}"] = tm["accuracy"] - tm["majority"]
            metrics[f"n_{t}"] = len(ids)
            other = "ied" if t == "hfo" else "hfo"
            rows += [{"task": t, "file": samples[t][i].rel(self.root), "patient": samples[t][i].patient,
                      "label": CLASSES[t][yy], "pred": CLASSES[t][int(pp >= 0.5)], "prob": round(float(pp), 6),
                      "partner": samples[other][partner[t][int(i)]].rel(self.root)} for i, yy, pp in zip(ids, y, p, strict=True)]
        n_rep = self.m.eval.repairings
        if n_rep:
            accs = {t: [] for t in TASKS}
            for r in range(n_rep):
                ra, rb = self._pairs(idx, seed=self.m.dataset.split_seed + 1000 + r)
                qa, qb = predict_pairs(net, images["hfo"][ra], images["ied"][rb])
                for t, ii, q in (("hfo", ra, qa), ("ied", rb, qb)):
                    first = _first(ii, q)
                    ids = np.array(sorted(first))
                    accs[t].append(cm.accuracy(self._labels(t, ids), np.array([first[i] >= 0.5 for i in ids]).astype(int)))
            for t in TASKS:
                v = np.array(accs[t])
                metrics.update({f"repair_acc_mean_{t}": float(v.mean()), f"repair_acc_sd_{t}": float(v.std(ddof=1)) if n_rep > 1 else 0.0,
                                f"repair_acc_min_{t}": float(v.min()), f"repair_acc_max_{t}": float(v.max())})
        return metrics, rows, confusion

    def _log_metrics(self, where: str, m: dict) -> None:
        self.ctx.log(f"{where}: " + "  ".join(f"{t.upper()} acc {m[f'accuracy_{t}']:.4f} sens {m[f'sensitivity_{t}']:.3f} "
                                               f"spec {m[f'specificity_{t}']:.3f} F1 {m[f'f1_{t}']:.3f} AUC {m[f'auroc_{t}']:.3f}"
                                               for t in TASKS))

    def _confusion_figures(self, confusion: dict, title: str) -> None:
        for t in TASKS:
            confusion_png(np.asarray(confusion[t]), list(CLASSES[t]), self.ctx.run.path / "figures" / f"confusion_{t}.png",
                          f"{t.upper()} {title}")

    def efficiency(self, net: CrossStitchNet, weights: Path | None = None) -> dict:
        """Table 3: Keras parameter count, weight size (MiB), ms to classify 300 HFO + 300 IED images (one batch)."""
        _, images = self.data()
        xa = torch.as_tensor(images["hfo"][np.arange(300) % len(images["hfo"])])
        xb = torch.as_tensor(images["ied"][np.arange(300) % len(images["ied"])])
        net.eval()
        times = []
        with torch.no_grad():
            net(xa, xb)
            for _ in range(5):
                t0 = time.perf_counter()
                net(xa, xb)
                times.append(time.perf_counter() - t0)
        out = {"params_keras": keras_param_count(net), **training.count_params(net),
               "infer_ms_600": round(1000 * float(np.median(times)), 2)}
        if weights is not None and weights.exists():
            out["size_mib"] = round(weights.stat().st_size / 2**20, 3)
        return out

    # -- stages ---------------------------------------------------------------------------------------------
    def train(self) -> dict:
        splits = self.holdout()
        self._record_splits(splits)
        self.ctx.log("train " + " · ".join(f"{t} {len(splits['train'][t])}" for t in TASKS)
                     + " | test " + " · ".join(f"{t} {len(splits['test'][t])}" for t in TASKS))
        net, secs = self._fit(splits["train"])
        weights = self.ctx.run.path / "checkpoints" / "model.safetensors"
        mm = self.m.model
        training.save_weights(net, weights, {"pipeline": "epilepsy-mtl", "stitch": mm.stitch, "n_stitch": mm.n_stitch})
        learning_curves(self.ctx.run.path / "logs" / "metrics.csv", self.ctx.run.path / "figures" / "learning_curves.png")
        metrics = self._report(net, splits["test"], "test")
        metrics["secs_per_epoch"] = round(secs, 3)
        metrics.update(self.efficiency(net, weights))
        self._write_paper(metrics, "cv", "hold-out 80/20 per task, last epoch", efficiency=True)
        return metrics

    def _report(self, net, idx, split: str) -> dict:
        metrics, rows, confusion = self._evaluate(net, idx)
        metrics["split"] = split
        clf.write_csv(self.ctx.run.path / "per_case.csv", rows)
        self._confusion_figures(confusion, split)
        self._log_metrics(split, metrics)
        return metrics

    def eval(self) -> dict:
        split = self.m.eval.split
        splits = self.holdout()
        self._record_splits({split: splits[split]})
        metrics = self._report(self.trained_model().eval(), splits[split], split)
        self._write_paper(metrics, "cv", f"{split} split of the train stage's hold-out")
        return metrics

    def predict(self) -> dict:
        net = self.trained_model().eval()
        p = self.m.predict
        if p.hfo or p.ied:
            if not (p.hfo and p.ied):
                raise UsageError("predict needs both predict.hfo and predict.ied (the model classifies pairs)",
                                 fix="-o predict.hfo=DIR -o predict.ied=DIR")
            folders = {"hfo": Path(p.hfo), "ied": Path(p.ied)}
            samples = {}
            for t, folder in folders.items():
                if not folder.is_dir():
                    raise DataError(f"predict.{t} folder not found: {folder}", fix=f"-o predict.{t}=/path/to/images")
                files = sorted(f for f in folder.rglob("*") if f.suffix.lower() in ncnp_ecog.IMAGE_SUFFIXES
                               and not f.name.startswith("."))
                if not files:
                    raise DataError(f"no images in {folder}", fix=f"point predict.{t} at a folder of .png files")
                samples[t] = [ncnp_ecog.Sample(f, -1, "", t) for f in files]
                if self.m.dataset.image_size:
                    ncnp_ecog.check_sizes(folder, samples[t], self.m.dataset.image_size)
            images = {t: ncnp_ecog.load_images(samples[t], self.m.dataset.input_size) for t in TASKS}
            idx = {t: np.arange(len(samples[t])) for t in TASKS}
            name = {t: (lambda s: str(s.path)) for t in TASKS}
        else:
            samples, images = self.data()
            idx = self.holdout()[self.m.eval.split]
            name = {t: (lambda s: s.rel(self.root)) for t in TASKS}
        a, b = self._pairs(idx)
        pa, pb = predict_pairs(net, images["hfo"][a], images["ied"][b])
        rows, counts = [], {}
        for t, ii, pp in (("hfo", a, pa), ("ied", b, pb)):
            first = _first(ii, pp)
            rows += [{"task": t, "file": name[t](samples[t][i]), "pred": CLASSES[t][int(first[i] >= 0.5)],
                      "prob": round(float(first[i]), 6)} for i in sorted(first)]
            counts[t] = {c: sum(r["pred"] == c for r in rows if r["task"] == t) for c in CLASSES[t]}
        clf.write_csv(self.ctx.run.path / "per_case.csv", rows)
        self.ctx.log("predicted " + "; ".join(f"{t}: " + ", ".join(f"{c} {n}" for c, n in counts[t].items()) for t in TASKS))
        return {"n_hfo": len(set(a.tolist())), "n_ied": len(set(b.tolist())), "predicted": counts}

    def folds(self) -> list[dict[str, dict[str, np.ndarray]]]:
        """[{"train": {task: idx}, "test": {task: idx}}] for the manifest's protocol."""
        from sklearn.model_selection import StratifiedKFold

        samples, _ = self.data()
        c, d = self.m.cv, self.m.dataset
        if c.protocol == "cv":
            per_task = {}
            for t in TASKS:
                y = np.array([s.label for s in samples[t]])
                if np.bincount(y, minlength=2).min() < c.folds:
                    raise DataError(f"{t}: fewer than {c.folds} images of a class for {c.folds}-fold CV",
                                    fix="-o cv.folds=N with a smaller N, or add images")
                skf = StratifiedKFold(n_splits=c.folds, shuffle=True, random_state=d.split_seed)
                per_task[t] = list(skf.split(np.zeros(len(y)), y))
            return [{"train": {t: per_task[t][k][0] for t in TASKS}, "test": {t: per_task[t][k][1] for t in TASKS}}
                    for k in range(c.folds)]
        patients = {t: sorted({s.patient for s in samples[t]}) for t in TASKS}
        only = sorted(set(patients["hfo"]) ^ set(patients["ied"]))
        if only:
            has = "hfo" if only[0] in patients["hfo"] else "ied"
            raise DataError(f"patient {only[0]} has {has} images but no {'ied' if has == 'hfo' else 'hfo'} images, so "
                            "leaving patients out cannot hold out both of their tasks",
                            fix=f"add the images or remove {has}/{only[0]}")
        groups = ncnp_ecog.read_folds(Path(c.fold_file), patients["hfo"]) if c.fold_file \
            else {p: k for k, p in enumerate(patients["hfo"])}
        if len(set(groups.values())) < 2:
            raise DataError("leave-patients-out needs at least two folds of patients", fix="add patients or folds")
        out = []
        for k in sorted(set(groups.values())):
            test = {t: np.array([i for i, s in enumerate(samples[t]) if groups[s.patient] == k]) for t in TASKS}
            train = {t: np.array([i for i, s in enumerate(samples[t]) if groups[s.patient] != k]) for t in TASKS}
            for t in TASKS:  # defensive: no patient on both sides of a fold
                shared = {samples[t][i].patient for i in train[t]} & {samples[t][i].patient for i in test[t]}
                if shared:
                    raise DataError(f"patient {sorted(shared)[0]} is in the training and the test part of fold {k}",
                                    fix="each patient must belong to exactly one fold")
            out.append({"train": train, "test": test})
        return out

    def _cross_validate(self, folds) -> tuple[dict, list[dict], list[dict], dict]:
        """Fit and score every fold: (mean ± sd metrics, per-fold rows, per-case rows, summed confusion matrices)."""
        samples, _ = self.data()
        c = self.m.cv
        per_fold, rows = [], []
        confusion = {t: np.zeros((2, 2), dtype=np.int64) for t in TASKS}
        for k, f in enumerate(folds):
            held = sorted({samples["hfo"][i].patient for i in f["test"]["hfo"]}) if c.protocol == "lopo" else []
            self.ctx.log(f"fold {k + 1}/{len(folds)}" + (f" (held out: {', '.join(held)})" if held else "") + ": train "
                         + " · ".join(f"{t} {len(f['train'][t])}" for t in TASKS) + " | test "
                         + " · ".join(f"{t} {len(f['test'][t])}" for t in TASKS))
            net, secs = self._fit(f["train"], ckpt=False, resume=False)
            tag = f"_n{self.m.model.n_stitch}" if self.ctx.stage == "ablate" else ""
            training.save_weights(net, self.ctx.run.path / "checkpoints" / f"fold{k + 1}{tag}.safetensors")
            m, case_rows, conf = self._evaluate(net, f["test"])
            for t in TASKS:
                confusion[t] += conf[t]
            self._log_metrics(f"fold {k + 1}", m)
            per_fold.append({"fold": k + 1, "held_out": " ".join(held), **m, "secs_per_epoch": round(secs, 3)})
            rows += [{"fold": k + 1, **r} for r in case_rows]
        metrics: dict = {"protocol": c.protocol, "folds": len(folds)}
        keys = [k for k in per_fold[0] if k not in ("fold", "held_out") and isinstance(per_fold[0][k], (int, float))]
        for key in keys:
            vals = np.array([f[key] for f in per_fold], dtype=float)
            metrics[key] = float(np.nanmean(vals))
            metrics[f"{key}_sd"] = float(np.nanstd(vals, ddof=1))
        return metrics, per_fold, rows, confusion

    def _setting(self, n_folds: int) -> str:
        c = self.m.cv
        return (f"stratified {n_folds}-fold CV per task, seed {self.m.dataset.split_seed}" if c.protocol == "cv"
                else f"leave-patients-out, {n_folds} folds")

    def cv(self) -> dict:
        c = self.m.cv
        folds = self.folds()
        self._record_splits({f"fold{k + 1}_test": f["test"] for k, f in enumerate(folds)})
        metrics, per_fold, rows, confusion = self._cross_validate(folds)
        clf.write_csv(self.ctx.run.path / "per_case.csv", rows)
        clf.write_csv(self.ctx.run.path / "per_fold.csv", per_fold)
        self._confusion_figures(confusion, f"{c.protocol}, all folds")
        self._log_metrics(f"{c.protocol} mean over {len(folds)} folds", metrics)
        table = markdown_table(["fold", "held out", *[f"{k}_{t}" for t in TASKS for k in ("accuracy", "f1", "auroc")]],
                               [[f["fold"], f["held_out"] or "—", *[f[f"{k}_{t}"] for t in TASKS for k in ("accuracy", "f1", "auroc")]]
                                for f in per_fold])
        self._write_paper(metrics, c.protocol, self._setting(len(folds)), sections=["## Folds (this run)\n\n" + table])
        return metrics

    def ablate(self) -> dict:
        """The paper's baseline study (Fig. 5): the manifest's protocol once per number of stitch units."""
        a = self.m.ablate
        folds = self.folds()
        self._record_splits({f"fold{k + 1}_test": f["test"] for k, f in enumerate(folds)})
        base, table, all_rows = self.m, [], []
        metrics: dict = {"protocol": self.m.cv.protocol, "folds": len(folds), "variants": [f"n{n}" for n in a.n_stitch]}
        try:
            for n in a.n_stitch:
                self.m = base.model_copy(update={"model": base.model.model_copy(update={"n_stitch": n})})
                self.ctx.log(f"ablation: n_stitch {n} ({self.m.model.stitch} stitches)")
                m, _, rows, _ = self._cross_validate(folds)
                all_rows += [{"n_stitch": n, **r} for r in rows]
                for key in ("accuracy_hfo", "accuracy_ied", "f1_hfo", "f1_ied", "auroc_hfo", "auroc_ied"):
                    metrics[f"n{n}.{key}"] = m[key]
                    metrics[f"n{n}.{key}_sd"] = m[f"{key}_sd"]
                table.append([n, *[m[f"{k}_{t}"] for t in TASKS for k in ("accuracy", "f1", "auroc")],
                              keras_param_count(self.build_model())])
        finally:
            self.m = base
        if 0 in a.n_stitch and 2 in a.n_stitch:
            for t in TASKS:
                metrics[f"gain_accuracy_{t}"] = metrics[f"n2.accuracy_{t}"] - metrics[f"n0.accuracy_{t}"]
                metrics[f"gain_f1_{t}"] = metrics[f"n2.f1_{t}"] - metrics[f"n0.f1_{t}"]
        clf.write_csv(self.ctx.run.path / "per_case.csv", all_rows)
        md = markdown_table(["n_stitch", *[f"{k}_{t}" for t in TASKS for k in ("accuracy", "f1", "auroc")], "params (Keras)"], table)
        gains = markdown_table(["two stitches − separate models", "HFO run", "HFO paper", "IED run", "IED paper"], [
            ["accuracy (points)", *[x for t in TASKS for x in (100 * metrics[f"gain_accuracy_{t}"] if f"gain_accuracy_{t}" in metrics
                                                                else None, PAPER_FIG5[f"accuracy_{t}"])]],
            ["F1", *[x for t in TASKS for x in (metrics.get(f"gain_f1_{t}"), PAPER_FIG5[f"f1_{t}"])]]])
        m = self.m.model_copy(update={"paper": None, "eval": self.m.eval.model_copy(update={"metrics": []})})
        self.ctx.run.write_text("paper.md", paper_md(
            self.ctx.spec, m, metrics, self.ctx, title="Cross-stitch baseline study (Fig. 5)",
            sections=[f"## Stitch units (this run: {self._setting(len(folds))}, {self.m.model.stitch} stitches)\n\n" + md,
                      "## Gain of the proposed model over separate models (the paper gives only the gains, Fig. 5 text)\n\n"
                      + gains, _NOTES]))
        return metrics

    def explain(self) -> dict:
        from .explain import explain

        return explain(self)

    def render(self) -> dict:
        from .render import render

        return render(self)

    # -- paper.md -------------------------------------------------------------------------------------------
    def _write_paper(self, metrics: dict, protocol: str, setting: str, sections=(), efficiency: bool = False) -> None:
        paper = PAPER_TABLE1[protocol]
        col = "5-fold CV" if protocol == "cv" else "leave-one-patient-out"
        head = ["metric", "HFO run", "HFO paper", "IED run", "IED paper"]
        body = []
        def run(key: str):
            v, sd = metrics.get(key), metrics.get(f"{key}_sd")
            return f"{v:.4f} ± {sd:.4f}" if isinstance(v, float) and isinstance(sd, float) else v

        for k in TASK_METRICS:
            body.append([NAMES[k], run(f"{k}_hfo"), paper[f"{k}_hfo"], run(f"{k}_ied"), paper[f"{k}_ied"]])
        body.append(["majority-class rate", metrics.get("majority_hfo"), "—", metrics.get("majority_ied"), "—"])
        body.append(["accuracy − majority", metrics.get("over_majority_hfo"), "—", metrics.get("over_majority_ied"), "—"])
        if "repair_acc_sd_hfo" in metrics:
            body.append(["accuracy sd over re-pairings", metrics["repair_acc_sd_hfo"], "—", metrics["repair_acc_sd_ied"], "—"])
        out = [f"## Table 1, {col} column (this run: {setting})\n\nFractions, not percent"
               + ("; mean ± sd over folds" if "accuracy_hfo_sd" in metrics else "") + ".\n\n" + markdown_table(head, body)]
        t2 = [[name, *v] for name, v in PAPER_TABLE2.items()]
        t2.insert(0, ["this run", *[100 * metrics.get(f"accuracy_{t}", float("nan")) for t in TASKS],
                      *[metrics.get(f"f1_{t}") for t in TASKS]])
        out.append("## Table 2 (the paper's 5-fold CV comparison; other models from the paper, not run here)\n\n"
                   + markdown_table(["model", "acc HFO %", "acc IED %", "F1 HFO", "F1 IED"], t2))
        if efficiency:
            t3 = [["this run", metrics["params_keras"] / 1e6, metrics.get("size_mib"), metrics["infer_ms_600"]]]
            t3 += [[name, *v] for name, v in PAPER_TABLE3.items()]
            out.append("## Table 3 (efficiency; this run on this machine's CPU, the paper on an i7-10750H + RTX 2070)\n\n"
                       + markdown_table(["model", "params (M)", "size (MB)", "ms for 300 HFO + 300 IED"], t3))
        out += [*sections, _NOTES]
        m = self.m
        expect = {k: v for k, v in paper.items()}
        table = f"Table 1 ({col})"
        where = f"5 patients, 1,500 images per task, {col}, 200 epochs"
        m = m.model_copy(update={"paper": (m.paper.model_copy(update={"expect": expect, "table": table, "setting": where})
                                           if m.paper else None),
                                 "eval": m.eval.model_copy(update={"metrics": []})})
        self.ctx.run.write_text("paper.md", paper_md(self.ctx.spec, m, metrics, self.ctx, sections=out))


def _first(idx: np.ndarray, values: np.ndarray) -> dict[int, float]:
    """{index: value at its first occurrence} (a cycled shorter side is scored once per image)."""
    out: dict[int, float] = {}
    for i, v in zip(idx.tolist(), values.tolist(), strict=True):
        out.setdefault(i, v)
    return out


_NOTES = """## Notes on the comparison

- Every metric comes from each fold's own confusion matrix (positive class = HFO / IED) and is averaged over folds.
  The paper's Table 1 cannot all hold at once (IED CV accuracy 93.99 % lies above both its sensitivity and its
  specificity; the HFO CV figures imply ≈93 % negatives where the data has 71 %), so differences are expected.
- A prediction for one task depends on the partner image it is paired with; the fixed seeded pairing is scored and
  the spread over random re-pairings is given as a diagnostic.
- The other models of Tables 2 and 3 are the paper's numbers, not run here (no ImageNet weights offline)."""
