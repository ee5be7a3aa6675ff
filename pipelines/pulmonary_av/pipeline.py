"""pulmonary-av, the method (card: docs/papers/pulmonary-av.md).

Data (``datasets/pulmonary_av.py``): ``imagesTr/labelsTr/lungsTr/<id>.nii.gz``; CT in HU = stored −
``dataset.stored_offset`` (the fixture stores HU+1024); labels 0/1 PA/2 PV (``dataset.label_map`` for other codings;
other values are refused); image, label and lung mask must share shape, voxel size and orientation (refused,
never resampled). Splits: the cases (without ``dataset.gap_case``) shuffled by the seed, ``dataset.folds`` folds
(paper: 3), fold ``dataset.fold`` is test, ``dataset.val_cases`` of the rest validation (paper 13:1:7 ≈ 5 of 71),
the others train. The paper cuts each scan into labelled halves; that split (``--halves auto``) is not implemented:
give each half as a case of its own.

Stage 1a (``geometry.prior_in``): marching cubes of HU + ``prior.intensity_offset`` (1024: the paper's levels
700–1000 read as stored values, card ambiguity 2) at each of ``prior.iso_levels``, vertices / spacing rounded to
voxels, union, ∧ lung, ``binary_fill_holes`` in 3D then per slice along ``prior.fill_axes`` (ours: axial, coronal,
sagittal; the card's axial-only is ``[2]``, which leaves in-plane tubes hollow); ``prior.fast_threshold`` thresholds
at the lowest level instead. Stage 1b: the prior-net, MONAI ``AttentionUnet`` (``model.prior_channels``, strides 2)
on the CT alone, one sigmoid output, target (PA ∪ PV) ∧ ¬lung, DiceCE, thresholded at 0.5 → P_out; P = P_in ∪ P_out.
It is its own ``train`` run (``train.stage: prior-net``); an EA-U-Net train run trains (or reuses) it as a child run
and keeps a copy of its weights as ``checkpoints/prior_net.safetensors`` for eval, refine and predict.

Stage 2 (``models/ea_unet.py``): EA-U-Net, CT and prior encoders (``model.channels``, card: 32–256), three
enhanced gates (``model.gate``: scalar or per-channel), InstanceNorm blocks; DiceCE (softmax, one-hot, equal
weights), Adam lr 1e-4, ``ReduceLROnPlateau(mode='max')`` on the validation Dice (÷10 after 2 epochs without a rise,
floor 1e-6; the paper's "does not decrease" has the wrong sign), early stopping after 8 epochs without a lower
validation loss, batch 2, ``train.patches_per_epoch`` random patches of ``train.patch`` (176×176×76) per epoch,
``train.foreground_ratio`` of them centred on a vessel voxel (ours), HU clipped to [−1000, 600] and scaled to [0, 1],
random flips (ours). The fixture's manifest narrows the window to [−200, 200] HU: under [−1000, 600] its PA (+80) and
PV (+20) differ by 0.04 after scaling and 150 steps learnt one of the two classes only (tried: PA 0.52 / PV 0.02).
The Dice term includes the background (MONAI's default; leaving it out stalled at no foreground in 100 steps).
Validation: ``train.val_patches`` fixed patches of the validation cases (val loss, mean PA/PV Dice). A patch larger
than a volume is a UsageError naming the file. One fold per run: the paper's three folds are three commands with
``-o dataset.fold=0|1|2`` (no ``cv`` stage).

Evaluation: MONAI sliding windows (``inference``: roi = the patch, Gaussian blending), argmax; per case and per class
(PA, PV): precision, recall, specificity, Dice, max-HD and HD95 (mm, the header's spacing), then the mean of the two
classes and the mean over cases (the paper's averaging is not stated); terminal counts (skeleton endpoints) of
prediction and truth. ``per_case.csv``, three-plane overlays, ``paper.md`` beside Tables 1–4. Stages ``prior``,
``refine`` (ASE), ``count-terminals`` and ``predict`` are in ``stages.py``.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import lightning as L
import numpy as np
import torch

from medrun.datasets import pulmonary_av as D
from medrun.errors import UsageError
from medrun.metrics import segmentation as segm

from .. import training
from ..predictor import Forward
from ..report import paper_note, paper_table
from ..sweep import Child
from ..tasks.segmentation import summarise
from ..tasks.supervised import Supervised
from . import geometry as G

CLASSES = {1: "pa", 2: "pv"}
PER_CLASS = ("precision", "recall", "specificity", "dice", "hd", "hd95")


@dataclass
class Case:
    vol: D.Volume
    ct: np.ndarray  # (X, Y, Z) float32 in [0, 1]
    prior: np.ndarray | None = None  # (X, Y, Z) bool, P

    @property
    def id(self) -> str:
        return self.vol.id


def normalise(hu: np.ndarray, window) -> np.ndarray:
    lo, hi = window
    return ((np.clip(hu, lo, hi) - lo) / (hi - lo)).astype(np.float32)


class PriorNet(torch.nn.Module):
    """Stage 1b's network: MONAI's AttentionUnet (Oktay), one sigmoid output (held as ``net``, so its weights'
    names do not start with the ``model.`` prefix that checkpoint loading strips). Inputs whose sides are not
    multiples of 2^(levels − 1) (the paper's 76 slices) are zero-padded at the far end and the output cropped."""

    def __init__(self, channels):
        super().__init__()
        from monai.networks.nets import AttentionUnet

        ch = tuple(channels)
        self.net = AttentionUnet(spatial_dims=3, in_channels=1, out_channels=1, channels=ch,
                                 strides=(2,) * (len(ch) - 1))
        self.multiple = 2 ** (len(ch) - 1)

    def forward(self, x):
        size = x.shape[2:]
        pad = [(-s) % self.multiple for s in size]
        if any(pad):
            x = torch.nn.functional.pad(x, [v for p in reversed(pad) for v in (0, p)])
        return self.net(x)[(..., *(slice(0, s) for s in size))]


def build_prior_net(channels):
    return PriorNet(channels)


def build_ea_unet(mm):
    from medrun.models.ea_unet import EAUNet

    return EAUNet(1, 1, 3, tuple(mm.channels), mm.gate)


class PatchData(torch.utils.data.Dataset):
    """``n`` random patches per epoch (torch's generator: Lightning's seeding and exact resume apply): a case
    uniformly, a centre on a target voxel with probability ``fg`` else anywhere, random flips."""

    def __init__(self, cases, inputs, target, patch, n: int, fg: float, flips: bool):
        self.cases, self.inputs, self.target, self.p, self.n, self.fg, self.flips = \
            cases, inputs, target, patch, n, fg, flips

    def __len__(self):
        return self.n

    def __getitem__(self, i):
        c = self.cases[int(torch.randint(len(self.cases), (1,)))]
        y = self.target(c)
        fg = np.argwhere(y > 0) if float(torch.rand(1)) < self.fg else None
        if fg is not None and len(fg):
            centre = fg[int(torch.randint(len(fg), (1,)))]
            corner = [int(np.clip(ce - p // 2, 0, s - p)) for ce, p, s in zip(centre, self.p, y.shape, strict=True)]
        else:
            corner = [int(torch.randint(s - p + 1, (1,))) for s, p in zip(y.shape, self.p, strict=True)]
        sl = tuple(slice(a, a + p) for a, p in zip(corner, self.p, strict=True))
        x, y = self.inputs(c)[(slice(None), *sl)], y[sl]
        if self.flips:
            for ax in range(3):
                if float(torch.rand(1)) < 0.5:
                    x, y = np.flip(x, ax + 1), np.flip(y, ax)
        return torch.from_numpy(np.ascontiguousarray(x)), torch.from_numpy(np.ascontiguousarray(y).astype(np.int64))


def fixed_patches(cases, inputs, target, patch, n: int, seed: int):
    rng = np.random.default_rng(seed)
    xs, ys = [], []
    for k in range(n):
        c = cases[k % len(cases)]
        y = target(c)
        fg = np.argwhere(y > 0)
        centre = fg[rng.integers(len(fg))] if len(fg) else np.array(y.shape) // 2
        corner = [int(np.clip(ce - p // 2, 0, s - p)) for ce, p, s in zip(centre, patch, y.shape, strict=True)]
        sl = tuple(slice(a, a + p) for a, p in zip(corner, patch, strict=True))
        xs.append(inputs(c)[(slice(None), *sl)])
        ys.append(y[sl].astype(np.int64))
    return torch.utils.data.TensorDataset(torch.from_numpy(np.stack(xs)), torch.from_numpy(np.stack(ys)))


class LitSeg(L.LightningModule):
    """DiceCE (equal weights; softmax + one-hot for A/V, sigmoid for the binary prior-net), Adam,
    ReduceLROnPlateau on the validation Dice."""

    def __init__(self, net, binary: bool, lr: float, min_lr: float, lr_patience: int, ce_weight: float):
        super().__init__()
        from monai.losses import DiceCELoss

        self.net, self.binary, self.lr, self.min_lr, self.lr_patience = net, binary, lr, min_lr, lr_patience
        self.loss = DiceCELoss(sigmoid=True, lambda_ce=ce_weight) if binary else \
            DiceCELoss(softmax=True, to_onehot_y=True, lambda_ce=ce_weight)

    def forward(self, x):
        return self.net(x)

    def _loss(self, logits, y):
        return self.loss(logits, (y[:, None] > 0).float() if self.binary else y[:, None])

    def training_step(self, batch, _):
        x, y = batch
        loss = self._loss(self.net(x), y)
        self.log("train_loss", loss, on_step=False, on_epoch=True, prog_bar=True, batch_size=len(x))
        return loss

    def validation_step(self, batch, _):
        x, y = batch
        logits = self.net(x)
        pred = (logits[:, 0] > 0).long() if self.binary else logits.argmax(1)
        classes = (1,) if self.binary else (1, 2)
        dices = []
        for c in classes:
            p, t = pred == c, (y > 0) if self.binary else (y == c)
            den = p.sum() + t.sum()
            dices.append((2 * (p & t).sum() / den) if den > 0 else torch.tensor(1.0))
        self.log("val_loss", self._loss(logits, y), on_epoch=True, batch_size=len(x))
        self.log("val_dice", torch.stack([d.float() for d in dices]).mean(), on_epoch=True, batch_size=len(x))

    def configure_optimizers(self):
        opt = torch.optim.Adam(self.net.parameters(), lr=self.lr)
        sched = torch.optim.lr_scheduler.ReduceLROnPlateau(opt, mode="max", factor=0.1, patience=self.lr_patience,
                                                           min_lr=self.min_lr)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "monitor": "val_dice"}}


def case_row(pred: np.ndarray, gt: np.ndarray, spacing, cid: str, prefix: str = "") -> dict:
    """Per class (PA, PV) precision, recall, specificity, Dice, max-HD, HD95 (mm) and their mean over the two."""
    row = {"case": cid} if not prefix else {}
    for c, name in CLASSES.items():
        p, t = pred == c, gt == c
        vals = {"precision": segm.precision(p, t), "recall": segm.recall(p, t), "specificity": segm.specificity(p, t),
                "dice": segm.dice(p, t), "hd": segm.hausdorff(p, t, spacing=spacing),
                "hd95": segm.hausdorff95(p, t, spacing=spacing)}
        row.update({f"{prefix}{k}_{name}": float(v) for k, v in vals.items()})
    for k in PER_CLASS:
        row[f"{prefix}{k}"] = float(np.mean([row[f"{prefix}{k}_{n}"] for n in CLASSES.values()]))
    return row


class PulmonaryAv(Supervised):
    report_split = "test"

    @property
    def prior_phase(self) -> bool:
        return self.m.train.stage == "prior-net"

    def build_model(self):
        return build_prior_net(self.m.model.prior_channels) if self.prior_phase else build_ea_unet(self.m.model)

    @property
    def epochs(self) -> int:
        return (self.m.train.prior_epochs or self.m.train.epochs) if self.prior_phase else self.m.train.epochs

    # -- data -----------------------------------------------------------------------------------------------------
    @property
    def root(self):
        return self.ctx.data_roots[self.m.dataset.name]

    def load_case(self, c: D.Case) -> Case:
        vol = D.load(c, self.m.dataset.stored_offset, self.m.dataset.label_map)
        small = [s for s, p in zip(vol.hu.shape, self.m.train.patch, strict=True) if s < p]
        if small:
            raise UsageError(f"train.patch {tuple(self.m.train.patch)} is larger than {c.image} "
                             f"({'×'.join(map(str, vol.hu.shape))})",
                             fix="-o train.patch=[x,y,z] at most the smallest volume's size")
        return Case(vol, normalise(vol.hu, self.m.train.hu_window))

    @cached_property
    def all_cases(self) -> list[D.Case]:
        return D.read(self.root)

    @cached_property
    def _splits(self) -> dict[str, list[Case]]:
        d = self.m.dataset
        cases = [c for c in self.all_cases if c.id != d.gap_case]
        if len(cases) < d.folds:
            raise UsageError(f"{self.root} has {len(cases)} cases, fewer than dataset.folds {d.folds}",
                             fix=f"-o dataset.folds={max(2, len(cases))}")
        order = np.random.default_rng(self.m.seed).permutation(len(cases))
        test = {int(i) for k, i in enumerate(order) if k % d.folds == d.fold}
        rest = [int(i) for i in order if int(i) not in test]
        if len(rest) <= d.val_cases:
            raise UsageError(f"dataset.val_cases {d.val_cases} leaves no training case", fix="lower it")
        ids = {"test": sorted(test), "val": rest[:d.val_cases], "train": rest[d.val_cases:]}
        loaded = {i: self.load_case(cases[i]) for i in self.ctx.track(range(len(cases)), "reading cases")}
        splits = {k: [loaded[i] for i in v] for k, v in ids.items()}
        self.ctx.record_splits({k: [f for c in v for f in c.vol.files] for k, v in splits.items()})
        return splits

    def splits(self) -> dict:
        if not self.prior_phase:
            for cases in self._splits.values():
                self.attach_priors(cases)
        return self._splits

    @cached_property
    def gap_case(self) -> Case | None:
        name = self.m.dataset.gap_case
        if not name:
            return None
        hit = [c for c in self.all_cases if c.id == name]
        if not hit:
            raise UsageError(f"dataset.gap_case '{name}' is not a case of {self.root}", fix="remove it or fix the id")
        return self.load_case(hit[0])

    # -- priors (Stage 1a + 1b) --------------------------------------------------------------------------------
    def prior_in(self, c: Case) -> np.ndarray:
        p = self.m.prior
        return G.prior_in(c.vol.hu, c.vol.lung, c.vol.spacing, tuple(p.iso_levels), p.intensity_offset,
                          p.fast_threshold, tuple(p.fill_axes))

    @cached_property
    def prior_net(self):
        """The prior-net: the parent's copy (eval/refine/predict), else a child train run (trained or reused)."""
        if not self.m.prior.extrapulmonary:
            return None
        net = build_prior_net(self.m.model.prior_channels)
        if self.ctx.stage in ("eval", "refine", "predict"):
            return self.trained_model(net, "prior_net.safetensors")
        run = self.ctx.sweep([Child("prior-net", {"train.stage": "prior-net"}, stage="train")], title="prior-net")[0]
        self._prior_run = run
        return training.load_weights(net, run.run_dir / "checkpoints" / "model.safetensors")

    def prior_out(self, c: Case) -> np.ndarray:
        x = torch.from_numpy(c.ct)[None, None]
        logits = self.predictor.sliding_window(self.prior_net, x)
        return (torch.sigmoid(logits[0, 0]) > 0.5).numpy() & ~c.vol.lung

    def attach_priors(self, cases: list[Case]) -> None:
        for c in cases:
            if c.prior is None:
                p = self.prior_in(c)
                c.prior = p | self.prior_out(c) if self.prior_net is not None else p

    # -- training hooks ------------------------------------------------------------------------------------------
    def inputs(self, c: Case) -> np.ndarray:
        return c.ct[None] if self.prior_phase else np.stack([c.ct, c.prior.astype(np.float32)])

    def target(self, c: Case) -> np.ndarray:
        return ((c.vol.label > 0) & ~c.vol.lung).astype(np.uint8) if self.prior_phase else c.vol.label

    def dataset(self, cases, train: bool):
        t = self.m.train
        if train:
            n = (t.prior_patches_per_epoch or t.patches_per_epoch) if self.prior_phase else t.patches_per_epoch
            return PatchData(cases, self.inputs, self.target, tuple(t.patch), n, t.foreground_ratio, t.flips)
        return fixed_patches(cases, self.inputs, self.target, tuple(t.patch), t.val_patches, self.m.seed)

    def lit_module(self, net):
        t = self.m.train
        return LitSeg(net, self.prior_phase, t.lr, t.min_lr, t.lr_patience, self.m.loss_weight)

    def trainer_kwargs(self) -> dict:
        from lightning.pytorch.callbacks import EarlyStopping

        patience = self.m.train.early_stop_patience
        return {"callbacks": [EarlyStopping(monitor="val_loss", mode="min", patience=patience)]}

    def weights_metadata(self) -> dict:
        return {"pipeline": self.ctx.spec.slug, "role": self.m.train.stage}

    def train(self) -> dict:
        metrics = super().train()
        if not self.prior_phase and self.prior_net is not None:
            training.save_weights(self.prior_net, self.ctx.path / "checkpoints" / "prior_net.safetensors",
                                  {"pipeline": self.ctx.spec.slug, "role": "prior-net"})
            metrics["prior_net_run"] = self._prior_run.run_id[:12]
        return metrics

    # -- evaluation ---------------------------------------------------------------------------------------------
    def segment(self, net, c: Case) -> np.ndarray:
        x = torch.from_numpy(np.ascontiguousarray(self.inputs(c)))[None]
        if self.prior_phase:
            return (torch.sigmoid(self.predictor.sliding_window(net, x)[0, 0]) > 0.5).numpy().astype(np.uint8)
        probs = self.predictor.sliding_window(Forward(net, lambda n, t: torch.softmax(n(t), 1)), x)
        return probs[0].argmax(0).numpy().astype(np.uint8)

    def evaluate(self, net, cases: list[Case]):
        rows, self._pred = [], {}
        for c in self.ctx.track(cases, "segmenting"):
            pred = self._pred[c.id] = self.segment(net, c)
            if self.prior_phase:
                t = self.target(c) > 0
                rows.append({"case": c.id, "dice": float(segm.dice(pred > 0, t)),
                             "recall": float(segm.recall(pred > 0, t)),
                             "precision": float(segm.precision(pred > 0, t))})
                continue
            row = case_row(pred, c.vol.label, c.vol.spacing, c.id)
            row.update(terminals_pred=G.terminals(pred), terminals_gt=G.terminals(c.vol.label),
                       chance_dice=float(np.mean([(c.vol.label == k).mean() for k in CLASSES])))
            rows.append(row)
        keys = ["dice", "recall", "precision"] if self.prior_phase else \
            [*PER_CLASS, *(f"{k}_{n}" for k in PER_CLASS for n in CLASSES.values()), "terminals_pred",
             "terminals_gt", "chance_dice"]
        metrics = summarise(rows, keys)
        metrics.update(training.count_params(net))
        return metrics, rows

    def figures(self, net, cases, metrics, rows, split):
        if not self.m.eval.overlays:
            return
        from .stages import overlay_three_planes

        for c, r in zip(cases[:3], rows, strict=False):
            gt = self.target(c) if self.prior_phase else c.vol.label
            overlay_three_planes(self.ctx, f"overlay_{c.id}", c.vol.hu, gt, self._pred[c.id],
                                 f"{c.id}: Dice {r['dice']:.3f}")

    def summary_line(self, split, metrics):
        if self.prior_phase:
            return f"{split}: prior-net Dice {metrics['dice']:.4f} (extrapulmonary vessels)"
        return (f"{split}: Dice PA {metrics['dice_pa']:.4f}  PV {metrics['dice_pv']:.4f}  (mean {metrics['dice']:.4f}, "
                f"HD95 {metrics['hd95']:.2f} mm, terminals {metrics['terminals_pred']:.0f} vs "
                f"{metrics['terminals_gt']:.0f})")

    def paper_kwargs(self, split, metrics):
        return {"expect": {}, "title": f"{self.ctx.spec.title}: prior-net"} if self.prior_phase else {}

    def paper_sections(self, metrics):
        if self.prior_phase:
            return [paper_note(self.ctx.spec, "prior_net")]
        return [paper_table(self.ctx.spec, "table1"), paper_table(self.ctx.spec, "table4"),
                paper_note(self.ctx.spec, "comparison")]

    # -- stages on top (stages.py) -----------------------------------------------------------------------------
    def prior(self) -> dict:
        from .stages import prior_stage

        return prior_stage(self)

    def refine(self) -> dict:
        from .stages import refine_stage

        return refine_stage(self)

    def count_terminals(self) -> dict:
        from .stages import count_stage

        return count_stage(self)

    def predict(self) -> dict:
        from .stages import predict_stage

        return predict_stage(self)
