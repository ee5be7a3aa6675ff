"""Shared pieces for image-classification pipelines: an image dataset over (path, label) samples, stratified
splits, a LightningModule around any classifier network, and evaluation with the shared metrics."""

from __future__ import annotations

import time

import lightning as L
import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset

from medrun.datasets.images import read_rgb
from medrun.metrics import classification as cm


class ImageSamples(Dataset):
    """(path, label) samples → (float32 3×S×S tensor of raw 0–255 values, label). Small sets are decoded once."""

    PRELOAD_BYTES = 512 * 1024 * 1024

    def __init__(self, samples, size: int, intensity=None):
        self.samples, self.size, self.intensity = list(samples), size, intensity
        self._cache = None
        if len(self.samples) * size * size * 3 <= self.PRELOAD_BYTES:
            self._cache = np.stack([read_rgb(s.path, size, intensity) for s in self.samples]) if self.samples else None

    def __len__(self):
        return len(self.samples)

    def __getitem__(self, i):
        img = self._cache[i] if self._cache is not None else read_rgb(self.samples[i].path, self.size, self.intensity)
        return torch.from_numpy(np.ascontiguousarray(img)).permute(2, 0, 1).float(), self.samples[i].label


class OwnImages:
    """Mixin for a classification pipeline: the ``imagefolder`` dataset (a user's class folders), written once.

    A pipeline adds ``imagefolder`` to its dataset ``Literal`` and ``datasets=``, mixes ``imagefolder.Fields``
    (``intensity``, ``classes``) into its dataset section, checks the root with ``imagefolder.check_root``, and calls
    ``read_own()`` where it reads its public dataset. Training stores the class names in the weights' metadata
    (``classes_metadata()``), so a later ``predict`` on unlabelled files names them (``trained_classes()``) and
    accepts every format ``imageio`` reads (``predict_suffixes()``). ``num_classes_expected`` is the class count the
    network has (``model.num_classes`` by default)."""

    OWN = "imagefolder"
    _own_classes: list[str] | None = None

    @property
    def own(self) -> bool:
        return self.m.dataset.name == self.OWN

    @property
    def num_classes_expected(self) -> int:
        return self.m.model.num_classes

    def class_count_fix(self, found: int) -> str:
        return f"-o model.num_classes={found}"

    def read_own(self) -> tuple[list, list[str]]:
        """(samples, class names) of the class folders, after checking that the network has one output per class."""
        from medrun.datasets import imagefolder
        from medrun.errors import UsageError

        d = self.m.dataset
        samples, classes = imagefolder.read(self.ctx.data_roots[self.OWN], self.ctx.log, d.classes)
        if self.num_classes_expected != len(classes):
            raise UsageError(f"the network has {self.num_classes_expected} classes but "
                             f"{self.ctx.data_roots[self.OWN]} has {len(classes)} class folders "
                             f"({', '.join(classes)})", fix=self.class_count_fix(len(classes)))
        self._own_classes = classes
        return samples, classes

    def classes_metadata(self, classes: list[str]) -> dict:
        """Class names for the weights file (JSON: a folder name may hold a comma)."""
        import json

        return {"classes": json.dumps(list(classes))}

    def trained_classes(self, weights: str = "model.safetensors") -> list[str]:
        """The class names of the weights this stage uses: those read this run if any, else those the training run
        stored in ``checkpoints/<weights>`` (or ``--checkpoint``); ``class0`` … for a file without them."""
        import json

        from .. import training

        if self._own_classes:
            return self._own_classes
        c, n = self.ctx, self.num_classes_expected
        path = c.checkpoint or (c.parent or c.run).path / "checkpoints" / weights
        text = training.weights_metadata(path).get("classes") or ""
        try:
            names = json.loads(text) if text.startswith("[") else text.split(",")  # runs before JSON: a,b,c
        except ValueError:
            names = []
        return [str(x) for x in names] if len(names) == n else [f"class{i}" for i in range(n)]

    def predict_suffixes(self) -> tuple[str, ...]:
        from medrun.datasets.imageio import READABLE

        from ..base import IMAGE_SUFFIXES

        return READABLE if self.own else IMAGE_SUFFIXES


def stratified_split(samples, fraction: float, seed: int):
    """sklearn StratifiedShuffleSplit(n_splits=1, test_size=fraction, random_state=seed): (rest, held_out)."""
    from sklearn.model_selection import StratifiedShuffleSplit

    labels = np.array([s.label for s in samples])
    splitter = StratifiedShuffleSplit(n_splits=1, test_size=fraction, random_state=seed)
    a, b = next(splitter.split(np.zeros(len(labels)), labels))
    return [samples[i] for i in sorted(a)], [samples[i] for i in sorted(b)]


def loader(ds, batch_size: int, shuffle: bool, num_workers: int = 0, seed: int = 0) -> DataLoader:
    """Training loaders (``shuffle``) are resumable mid-epoch, shuffled by (seed, epoch); others keep their order."""
    from ..training import ResumableLoader

    if shuffle:
        return ResumableLoader(ds, batch_size, seed, num_workers=num_workers, persistent_workers=num_workers > 0)
    return DataLoader(ds, batch_size=batch_size, shuffle=False, num_workers=num_workers,
                      persistent_workers=num_workers > 0)


class LitClassifier(L.LightningModule):
    """Cross-entropy classifier; Adam with a per-epoch multiplicative decay from a given epoch (Keras-style)."""

    def __init__(self, net: torch.nn.Module, lr: float, betas=(0.9, 0.999), eps: float = 1e-8,
                 decay_from: int | None = None, decay_factor: float = 1.0):
        super().__init__()
        self.net = net
        self.lr, self.betas, self.eps = lr, tuple(betas), eps
        self.decay_from, self.decay_factor = decay_from, decay_factor

    def forward(self, x):
        return self.net(x)

    def _step(self, batch, prefix: str):
        x, y = batch
        logits = self.net(x)
        loss = F.cross_entropy(logits, y)
        acc = (logits.argmax(1) == y).float().mean()
        self.log(f"{prefix}_loss", loss, on_step=False, on_epoch=True, prog_bar=True, batch_size=len(y), sync_dist=True)
        self.log(f"{prefix}_acc", acc, on_step=False, on_epoch=True, prog_bar=True, batch_size=len(y), sync_dist=True)
        return loss

    def training_step(self, batch, batch_idx):
        return self._step(batch, "train")

    def validation_step(self, batch, batch_idx):
        self._step(batch, "val")

    def lr_at(self, epoch: int) -> float:
        """Keras-style schedule: lr × factor^(epoch − from + 1) from epoch ``from`` (0-indexed) on."""
        if self.decay_from is None or epoch < self.decay_from:
            return 1.0
        return self.decay_factor ** (epoch - self.decay_from + 1)

    def configure_optimizers(self):
        opt = torch.optim.Adam(self.parameters(), lr=self.lr, betas=self.betas, eps=self.eps)
        sched = torch.optim.lr_scheduler.LambdaLR(opt, self.lr_at)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "epoch"}}


def predict_probs(net: torch.nn.Module, ds: Dataset, batch_size: int = 64, predictor=None) -> np.ndarray:
    """Softmax scores over a dataset of ``(x, y)`` items, through ``predictor`` (the manifest's hardware and
    precision; a CPU float32 one when not given)."""
    from ..predictor import Predictor

    pred = predictor or Predictor(accelerator="cpu")
    out = pred.map(net, loader(ds, batch_size, shuffle=False))
    return torch.softmax(torch.cat(out), dim=1).numpy() if out else np.zeros((0, 1))


def evaluate(net, samples, size: int, classes: list[str], batch_size: int = 64, predictor=None, intensity=None
             ) -> tuple[dict, list[dict]]:
    """Accuracy, per-class and macro/weighted P/R/F1, micro and macro AUROC, confusion matrix; per-case rows."""
    t0 = time.perf_counter()
    probs = predict_probs(net, ImageSamples(samples, size, intensity), batch_size, predictor)
    return scores(probs, np.array([s.label for s in samples]), [str(s.path) for s in samples], classes, t0)


def scores(probs: np.ndarray, y: np.ndarray, files: list[str], classes: list[str], t0: float | None = None
           ) -> tuple[dict, list[dict]]:
    """The classification metrics of class scores ``probs`` (N, C) against labels ``y``; one row per case."""
    t0 = time.perf_counter() if t0 is None else t0
    pred = probs.argmax(1)
    prf = cm.precision_recall_f1(y, pred, num_classes=len(classes))
    metrics = {
        "accuracy": cm.accuracy(y, pred),
        **{k: v for k, v in prf.items() if k != "per_class"},
        "auroc_micro": cm.auroc(y, probs, average="micro"),
        "auroc_macro": cm.auroc(y, probs, average="macro"),
        "n": int(len(y)),
        "per_class": {c: {k: prf["per_class"][k][i] for k in ("precision", "recall", "f1", "support")}
                      for i, c in enumerate(classes)},
        "confusion_matrix": cm.confusion_matrix(y, pred, num_classes=len(classes)).tolist(),
        "eval_seconds": round(time.perf_counter() - t0, 3),
    }
    rows = [{"file": f, "true": classes[t], "pred": classes[p],
             **{f"prob_{c}": round(float(probs[i, j]), 6) for j, c in enumerate(classes)}}
            for i, (f, t, p) in enumerate(zip(files, y, pred, strict=True))]
    return metrics, rows


def per_class_table(metrics: dict) -> str:
    from ..report import markdown_table

    rows = [[c, v["precision"], v["recall"], v["f1"], v["support"]] for c, v in metrics["per_class"].items()]
    rows += [
        ["macro", metrics["precision_macro"], metrics["recall_macro"], metrics["f1_macro"], metrics["n"]],
        ["weighted", metrics["precision_weighted"], metrics["recall_weighted"], metrics["f1_weighted"], metrics["n"]],
    ]
    return "## Per class (this run)\n\n" + markdown_table(["class", "precision", "recall", "F1", "support"], rows)
