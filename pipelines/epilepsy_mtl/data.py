"""epilepsy-mtl's data: splits (the hold-out, the folds of ``dataset.protocol``) as indices into each task's
samples, and the pairing of HFO with IED images the cross-stitch network needs (fixed for a fit, or new IED
partners every epoch)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from medrun.datasets import ncnp_ecog
from medrun.datasets.ncnp_ecog import TASKS
from medrun.errors import DataError

from .. import training


@dataclass(frozen=True)
class Part:
    """One split: indices into each task's samples (``part["hfo"]``); its length is the number of images."""

    hfo: np.ndarray
    ied: np.ndarray

    def __getitem__(self, task: str) -> np.ndarray:
        return getattr(self, task)

    def __len__(self) -> int:
        return len(self.hfo) + len(self.ied)


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
    Items are keyed ``(i, epoch)`` by :func:`epoch_sampler`."""

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

    class EpochSampler(training.ResumableSampler):
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


def protocol(d) -> str:
    """``dataset.protocol`` in words."""
    return f"stratified {d.folds}-fold CV per task, seed {d.split_seed}" if d.protocol == "cv" else "leave-patients-out"


def holdout(samples: dict[str, list], d) -> dict[str, Part]:
    """The train stage's split: a stratified hold-out of ``dataset.test_fraction`` per task (``split_seed``)."""
    from sklearn.model_selection import StratifiedShuffleSplit

    parts: dict[str, dict] = {"train": {}, "test": {}}
    for t in TASKS:
        y = np.array([s.label for s in samples[t]])
        split = StratifiedShuffleSplit(n_splits=1, test_size=d.test_fraction, random_state=d.split_seed)
        tr, te = next(split.split(np.zeros(len(y)), y))
        parts["train"][t], parts["test"][t] = np.sort(tr), np.sort(te)
    return {k: Part(**v) for k, v in parts.items()}

def folds(samples: dict[str, list], d) -> list[dict[str, Part]]:
    """[{"train": Part, "test": Part}] of ``dataset.protocol``: stratified k-fold per task (fold k of HFO with fold k
    of IED), or leave-patients-out (one fold per patient, or the groups of ``dataset.fold_file``); a patient with
    images of one task only cannot be left out and is a DataError naming them."""
    from sklearn.model_selection import StratifiedKFold

    if d.protocol == "cv":
        per_task = {}
        for t in TASKS:
            y = np.array([s.label for s in samples[t]])
            if np.bincount(y, minlength=2).min() < d.folds:
                raise DataError(f"{t}: fewer than {d.folds} images of a class for {d.folds}-fold CV",
                                fix="-o dataset.folds=N with a smaller N, or add images")
            skf = StratifiedKFold(n_splits=d.folds, shuffle=True, random_state=d.split_seed)
            per_task[t] = list(skf.split(np.zeros(len(y)), y))
        return [{"train": Part(*(per_task[t][k][0] for t in TASKS)),
                 "test": Part(*(per_task[t][k][1] for t in TASKS))} for k in range(d.folds)]
    patients = {t: sorted({s.patient for s in samples[t]}) for t in TASKS}
    only = sorted(set(patients["hfo"]) ^ set(patients["ied"]))
    if only:
        has = "hfo" if only[0] in patients["hfo"] else "ied"
        raise DataError(f"patient {only[0]} has {has} images but no {'ied' if has == 'hfo' else 'hfo'} images, "
                        "so leaving patients out cannot hold out both of their tasks",
                        fix=f"add the images or remove {has}/{only[0]}")
    groups = ncnp_ecog.read_folds(Path(d.fold_file), patients["hfo"]) if d.fold_file \
        else {p: k for k, p in enumerate(patients["hfo"])}
    if len(set(groups.values())) < 2:
        raise DataError("leave-patients-out needs at least two folds of patients", fix="add patients or folds")
    out = []
    for k in sorted(set(groups.values())):
        test = {t: np.array([i for i, s in enumerate(samples[t]) if groups[s.patient] == k]) for t in TASKS}
        train = {t: np.array([i for i, s in enumerate(samples[t]) if groups[s.patient] != k]) for t in TASKS}
        out.append({"train": Part(**train), "test": Part(**test)})
    return out
