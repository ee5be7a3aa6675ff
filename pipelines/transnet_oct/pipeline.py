"""transnet-oct, the method (card: docs/papers/transnet-oct.md).

Data (``datasets/oct_layers.py``): ``<patient>/oct.nii.gz`` (B-scans on axis 0) + ``labels.nii.gz`` (0–11, 255 on
B-scans nobody annotated) + optional ``meta.json`` (fovea index; default the middle B-scan). A patient gives the
stack of B-scans c−2 … c+2 around its fovea c (the card's reading of the paper's "5 most significant slices"). Each
B-scan is min–max scaled to [0, 1] (not stated in the paper; card), then resized to ``img_size``² (bilinear; labels
nearest, 255 kept and ignored by the loss).

Prior (Algorithm 1, ``propagate.py``): the fovea B-scan's labels M_L are propagated to its 4 neighbours by intensity
matching, λ = ``prior.tolerance`` (0.04) and Ω = ``prior.max_window`` (11), on the resized, scaled B-scans. The
paper's MGRF mid-slice model cannot be rebuilt from the text; M_L is either the ground truth
(``prior.mid_label_source: gt``, the default: an oracle, so every with-prior number is an upper bound, and the pages
say so) or ``model``: the fovea slice of a no-prior TransNetOCT's output (``prior.mid_model``, the
``model.safetensors`` of a train run with ``model.prior: false``; the card asks for a 1-slice no-prior network, this
is the 5-slice one the pipeline already trains), used for training, evaluation and prediction alike; its sha256
goes into run.json (``mid_model_sha256``).

Network (``models/transnet_oct.py``): input [Q1, Q2, M, Q3, Q4, Q1^L/11 … Q4^L/11] (9 channels; 5 with
``model.prior: false``); MONAI's ResNet-50 in torchvision's layout (conv1 for 9 inputs), a transformer bottleneck on
the patch-1 tokens of layer4 (D 512, M 4, 8 heads, MLP 4, GELU, pre-LN), a DeepLabV3+-style decoder and a Conv3d head
→ logits (12, 5, S, S). ``model.baseline: unet|fpn`` swaps in MONAI's BasicUNet or a ResNet-50 + MONAI FPN with the
same input and the same 3D head. ``train.encoder_weights`` loads an ImageNet ResNet-50 (torchvision names) with
conv1's RGB kernel tiled ×3 and divided by 3; without it the encoder starts from random init (nothing downloads).

Training: voxel-wise cross-entropy over 12 classes and 5 slices (255 ignored), AdamW (lr 1e-4, weight decay 1e-2,
torch's default), cosine annealing over the epochs (per epoch), batch 8, 100 epochs (not stated; card), no
augmentation (none described), last epoch's weights (no validation set in a leave-one-out protocol).
``dataset.train_stacks: annotated`` adds a stack around every other annotated B-scan of the training patients (the
fixture's small runs use it; the paper's protocol is ``fovea``).

Splits: patient-wise; ``dataset.folds: null`` is leave-one-patient-out (the paper), an integer k is k-fold
(KFold, shuffled, ``split_seed``); a train run holds out ``dataset.fold`` and scores it (split ``test``). The ``cv``
stage runs every fold × every ``cv.variants`` entry as train runs of their own.

Evaluation, per class c of the 12 (background included) on each 2D slice of the 5-slice output, at the network's
resolution: DSC, sensitivity TP/(TP+FN), ASSD (pooled surface distances of both directions) and MASD (mean of the
two directed means), distances in pixels (``medrun.metrics.segmentation``). A class absent from both label and
prediction on a slice is skipped there; absent from one of them: DSC 0, sensitivity 0 (or skipped when the label
lacks it), ASSD/MASD = the slice's diagonal (not infinity, so a missed layer costs a bounded amount). Per class the
mean over slices and patients; the headline numbers average the 12 classes, as the paper's Table 1. The
majority-class baseline (every voxel the most frequent label of the split) is scored the same way
(``dsc_majority``); ``dsc_over_majority`` is the margin.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import lightning as L
import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from medrun.datasets import oct_layers
from medrun.datasets.oct_layers import LAYERS, UNANNOTATED
from medrun.errors import DataError, UsageError

from .. import training
from ..report import markdown_table, paper_md, paper_note, paper_table
from ..sweep import Child, headline, mean_sd_table, summarise
from ..tasks.supervised import Supervised

KEYS = ("dsc", "sens", "assd", "masd")
OFFSETS = (-2, -1, 0, 1, 2)


def minmax(stack: np.ndarray) -> np.ndarray:
    """Each B-scan of (n, H, W) scaled to [0, 1] by its own min and max (a flat B-scan becomes 0)."""
    stack = np.asarray(stack, np.float32)
    lo = stack.min(axis=(1, 2), keepdims=True)
    span = stack.max(axis=(1, 2), keepdims=True) - lo
    return np.where(span > 0, (stack - lo) / np.where(span > 0, span, 1), 0).astype(np.float32)


def resize(stack: np.ndarray, size: int, labels: bool = False) -> np.ndarray:
    t = torch.as_tensor(np.asarray(stack, np.float32))[None]
    if t.shape[-2:] == (size, size):
        return np.asarray(stack)
    out = F.interpolate(t, size=(size, size), mode="nearest-exact" if labels else "bilinear",
                        align_corners=None if labels else False)[0].numpy()
    return out.astype(np.uint8) if labels else out


@dataclass
class Stack:
    patient: str
    file: str  # oct.nii.gz
    centre: int
    x: np.ndarray  # (9 | 5, S, S) float32
    y: np.ndarray | None  # (5, S, S) uint8, 255 = unannotated


def build_stack(pid, file, vol, labels, c, m, mid_labels=None, cache_dir=None) -> Stack:
    """The network input of the stack around B-scan c (and its labels), priors propagated when ``model.prior``."""
    size = m.dataset.img_size
    img = resize(minmax(vol[c - 2:c + 3]), size)
    lab = resize(labels[c - 2:c + 3], size, labels=True) if labels is not None else None
    x = img
    if m.model.prior:
        from .propagate import cached_priors

        mid = lab[2] if mid_labels is None else resize(mid_labels, size, labels=True)[0]
        priors = cached_priors(img, mid, m.prior.tolerance, m.prior.max_window, cache_dir)
        x = np.concatenate([img, priors.astype(np.float32) / 11.0])
    return Stack(pid, str(file), c, np.ascontiguousarray(x, np.float32), lab)


class StackData(Dataset):
    def __init__(self, stacks: list[Stack]):
        self.s = stacks

    def __len__(self):
        return len(self.s)

    def __getitem__(self, i):
        return torch.from_numpy(self.s[i].x), torch.from_numpy(self.s[i].y.astype(np.int64))


class LitOct(L.LightningModule):
    def __init__(self, net, train):
        super().__init__()
        self.net, self.cfg = net, train

    def forward(self, x):
        return self.net(x)

    def training_step(self, batch, _):
        x, y = batch
        loss = F.cross_entropy(self.net(x), y, ignore_index=UNANNOTATED)
        self.log("train_loss", loss, on_step=False, on_epoch=True, prog_bar=True, batch_size=len(x))
        return loss

    def configure_optimizers(self):
        t = self.cfg
        opt = torch.optim.AdamW(self.net.parameters(), lr=t.lr, weight_decay=t.weight_decay)
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=t.epochs)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "epoch"}}


def build_net(m) -> torch.nn.Module:
    from medrun.models import transnet_oct as t

    mm, cin = m.model, 9 if m.model.prior else 5
    if mm.baseline == "unet":
        return t.UNet25D(cin, len(LAYERS), 5, mm.head_channels, tuple(mm.unet_features))
    if mm.baseline == "fpn":
        return t.FPN25D(cin, len(LAYERS), 5, mm.head_channels)
    return t.TransNetOCT(cin, len(LAYERS), 5, m.dataset.img_size, mm.dim, mm.depth, mm.heads, mm.mlp_ratio,
                         mm.head_channels)


def slice_scores(pred: np.ndarray, gt: np.ndarray, num_classes: int = len(LAYERS)) -> dict[int, dict]:
    """Per class present in ``pred`` or ``gt`` (2D label maps): DSC, sensitivity, ASSD, MASD (pixels)."""
    from medrun.metrics import segmentation as segm

    out = {}
    for c in range(num_classes):
        p, g = pred == c, gt == c
        if not p.any() and not g.any():
            continue
        out[c] = {"dsc": segm.dice(p, g), "sens": segm.recall(p, g) if g.any() else math.nan,
                  "assd": segm.assd(p, g, empty="diagonal"), "masd": segm.masd(p, g, empty="diagonal")}
    return out


def aggregate(per_slice: list[dict[int, dict]], num_classes: int = len(LAYERS)) -> dict:
    """Per class mean over slices (NaN skipped), then the mean over classes: ``dsc``, ``dsc_NFL`` …"""
    out = {}
    for k in KEYS:
        per_class = []
        for c in range(num_classes):
            vals = [s[c][k] for s in per_slice if c in s and math.isfinite(s[c][k])]
            v = float(np.mean(vals)) if vals else math.nan
            out[f"{k}_{LAYERS[c]}"] = v
            per_class.append(v)
        finite = [v for v in per_class if math.isfinite(v)]
        out[k] = float(np.mean(finite)) if finite else math.nan
    return out


class TransNetOct(Supervised):
    report_split = "test"
    val_split = None

    def build_model(self):
        return build_net(self.m)

    def root(self) -> Path:
        return self.ctx.data_roots[self.m.dataset.name]

    # -- data ---------------------------------------------------------------------------------------------------
    def patients(self):
        return oct_layers.read(self.root())

    def folds(self, patients) -> list[np.ndarray]:
        from sklearn.model_selection import KFold

        d, n = self.m.dataset, len(patients)
        k = d.folds or n
        if n < 2 or k > n:
            raise DataError(f"{n} patient(s) in {self.root()} cannot make {k} folds",
                            fix="lower -o dataset.folds or add patients")
        if d.fold >= k:
            raise UsageError(f"dataset.fold {d.fold} is not one of the {k} folds", fix=f"use 0 … {k - 1}")
        return [te for _, te in KFold(k, shuffle=True, random_state=d.split_seed).split(np.zeros(n))]

    def mid_labels(self, vol, c) -> np.ndarray | None:
        """M_L of ``prior.mid_label_source: model``: the fovea slice of the no-prior network's output, (1, H, W) at
        the B-scan's size (the card's "model" resolution; None for ``gt``, where the labels are used)."""
        if not self.m.model.prior or self.m.prior.mid_label_source != "model":
            return None
        if getattr(self, "_mid_net", None) is None:
            from medrun.artifacts import sha256_file

            path = Path(self.m.prior.mid_model).expanduser()
            mm = self.m.model_copy(update={"model": self.m.model.model_copy(update={"prior": False,
                                                                                   "baseline": None})})
            try:
                self._mid_net = training.load_weights(build_net(mm), path)
            except (KeyError, RuntimeError) as e:
                raise UsageError(f"prior.mid_model {path} is not a no-prior TransNetOCT of this manifest's size ({e})",
                                 fix="give checkpoints/model.safetensors of a train run with -o model.prior=false"
                                 ) from None
            self.ctx.run.update_info(mid_model_sha256=sha256_file(path))
        st = build_stack("", "", vol, None, c, self.m.model_copy(
            update={"model": self.m.model.model_copy(update={"prior": False})}))
        logits = self.logits(self._mid_net, [st])[0][:, 2]  # (12, S, S) of the fovea slice
        h, w = vol.shape[1:]
        full = F.interpolate(torch.from_numpy(logits)[None], size=(h, w), mode="bilinear", align_corners=False)
        return full[0].argmax(0).numpy().astype(np.uint8)[None]

    def stacks(self, loaded, train: bool) -> list[Stack]:
        out = []
        for p, (vol, labels, _, fovea) in loaded:
            ann = oct_layers.annotated(labels)
            centres = [fovea]
            if train and self.m.dataset.train_stacks == "annotated":
                centres = [c for c in range(2, len(vol) - 2) if ann[c]]
            for c in centres:
                if not ann[c]:
                    raise DataError(f"{p.labels}: the fovea B-scan {c} is not annotated (255), so it has no labels "
                                    "to propagate or score",
                                    fix="label the fovea B-scan or set fovea_index in meta.json")
                mid = self.mid_labels(vol, c)
                out.append(build_stack(p.id, p.oct, vol, labels, c, self.m, mid, self.ctx.cache_dir))
        return out

    def splits(self) -> dict:
        if self.ctx.cache_dir is not None:
            from medrun.artifacts.cache import clear_stale

            clear_stale(Path(self.ctx.cache_dir) / "transnet-oct")
        patients = self.patients()
        held = set(self.folds(patients)[self.m.dataset.fold].tolist())
        test = [p for i, p in enumerate(patients) if i in held]
        train = [p for i, p in enumerate(patients) if i not in held]
        self.ctx.record_splits({"train": [p.oct for p in train], "test": [p.oct for p in test]})
        prior = f"on (fovea labels: {self.m.prior.mid_label_source})" if self.m.model.prior else "off"
        self.ctx.log(f"fold {self.m.dataset.fold}: train {', '.join(p.id for p in train)} · test "
                     f"{', '.join(p.id for p in test)} · prior {prior}")
        loaded = {p.id: oct_layers.load(p) for p in patients}  # every file checked before any stack is built
        return {"train": self.stacks([(p, loaded[p.id]) for p in train], True),
                "test": self.stacks([(p, loaded[p.id]) for p in test], False)}

    # -- the template's hooks -----------------------------------------------------------------------------------
    def dataset(self, stacks, train: bool):
        return StackData(stacks)

    def lit_module(self, net):
        return LitOct(net, self.m.train)

    def fit(self, splits, net=None, *, checkpoint: bool = True):
        if net is None and self.m.train.encoder_weights:
            net = self.build_model()
            enc = getattr(net, "encoder", None)
            if enc is None:
                raise UsageError("train.encoder_weights holds a ResNet-50, but the UNet baseline has no ResNet encoder",
                                 fix="drop train.encoder_weights for model.baseline unet")
            from medrun.models.transnet_oct import load_resnet50_weights

            try:
                left = load_resnet50_weights(enc, training.load_state(Path(self.m.train.encoder_weights)),
                                             enc.conv1.in_channels)
            except (KeyError, RuntimeError) as e:
                raise UsageError(f"{self.m.train.encoder_weights} is not a ResNet-50 state dict ({e})",
                                 fix="give torchvision resnet50 weights (conv1.weight, layer1.0.conv1.weight …)"
                                 ) from None
            self.ctx.log(f"encoder from {self.m.train.encoder_weights} ({len(left)} keys left at init)")
        return super().fit(splits, net, checkpoint=checkpoint)

    def logits(self, net, stacks: list[Stack]) -> np.ndarray:
        bs = self.m.train.batch_size
        out = [self.predictor(net, torch.from_numpy(np.stack([s.x for s in stacks[i:i + bs]]))).numpy()
               for i in self.ctx.track(range(0, len(stacks), bs), "segmenting")]
        return np.concatenate(out)

    def evaluate(self, net, stacks: list[Stack]):
        self._pred = pred = self.logits(net, stacks).argmax(1).astype(np.uint8)  # (N, 5, S, S)
        gts = np.stack([s.y for s in stacks])
        known = gts[gts != UNANNOTATED]
        majority = int(np.bincount(known, minlength=len(LAYERS)).argmax()) if known.size else 0
        rows, all_slices, base_slices = [], [], []
        for s, p in zip(stacks, pred, strict=True):
            for j, off in enumerate(OFFSETS):
                g = s.y[j]
                if (g == UNANNOTATED).any():
                    continue  # an unannotated B-scan of the stack is not scored
                sc = slice_scores(p[j], g)
                all_slices.append(sc)
                base_slices.append(slice_scores(np.full_like(g, majority), g))
                agg = aggregate([sc])
                rows.append({"patient": s.patient, "bscan": s.centre + off, "offset": off,
                             **{k: agg[k] for k in KEYS}, **{f"dsc_{n}": agg[f"dsc_{n}"] for n in LAYERS}})
        if not all_slices:
            raise DataError("no annotated B-scan in the evaluated stacks", fix="label the fovea ±2 B-scans")
        metrics = {"patients": len(stacks), "slices": len(all_slices), **aggregate(all_slices)}
        metrics["dsc_majority"] = aggregate(base_slices)["dsc"]
        metrics["dsc_over_majority"] = metrics["dsc"] - metrics["dsc_majority"]
        metrics["majority_class"] = LAYERS[majority]
        metrics["prior"] = self.m.model.prior
        metrics["model"] = self.m.model.baseline or "transnetoct"
        metrics.update(training.count_params(net))
        return metrics, rows

    def figures(self, net, stacks, metrics, rows, split):
        from .figures import layer_bars, stack_overlay

        for i in range(min(self.m.eval.overlays, len(stacks))):
            stack_overlay(self.ctx, f"overlay_{stacks[i].patient}", stacks[i], self._pred[i])
        layer_bars(self.ctx, metrics, self.ctx.spec)

    def prior_figure(self, pid, stack, mid_labels, priors):
        from .figures import prior_panel

        prior_panel(self.ctx, f"prior_{pid}", stack, mid_labels, priors)

    def summary_line(self, split, metrics):
        return (f"{split}: DSC {metrics['dsc']:.4f}  sens {metrics['sens']:.4f}  ASSD {metrics['assd']:.3f}  MASD "
                f"{metrics['masd']:.3f} px  (majority-class DSC {metrics['dsc_majority']:.4f})")

    def describe(self) -> str:
        mm = self.m.model
        net = {"unet": "UNet baseline (MONAI BasicUNet)", "fpn": "FPN baseline (ResNet-50 + FPN)"}.get(
            mm.baseline, f"TransNetOCT (D {mm.dim}, M {mm.depth}, {mm.heads} heads)")
        src = ("ground truth, an oracle the paper does not have" if self.m.prior.mid_label_source == "gt" else
               f"a no-prior network's fovea slice ({self.m.prior.mid_model})")
        prior = (f"with prior (λ {self.m.prior.tolerance}, Ω {self.m.prior.max_window}; fovea labels: {src})"
                 if mm.prior else "without prior (5 B-scans only)")
        k = self.m.dataset.folds
        return (f"{net}, {prior}; input {self.m.dataset.img_size}²; "
                f"{'leave-one-patient-out' if k is None else f'{k}-fold'} split, fold {self.m.dataset.fold}.")

    def paper_kwargs(self, split, metrics):
        if self.m.model.prior and not self.m.model.baseline:
            return {}
        row = {"unet": "UNet (with prior)", "fpn": "FPN (with prior)"}.get(self.m.model.baseline,
                                                                           "TransNetOCT, no prior")
        vals = {r[0]: r for r in self._table("table1")["rows"]}.get(row)
        return {"expect": dict(zip(("dsc", "assd", "masd"), vals[1:4], strict=True)) if vals else {},
                "setting": row}

    def _table(self, name):
        from ..report import paper_data

        return paper_data(self.ctx.spec)["tables"][name]

    def paper_sections(self, metrics):
        layers = markdown_table(["layer", "DSC", "sens", "ASSD", "MASD"],
                                [[n, *[metrics[f"{k}_{n}"] for k in KEYS]] for n in LAYERS]
                                + [["average", *[metrics[k] for k in KEYS]]])
        return [f"## This run\n\n{self.describe()} {metrics['slices']} B-scans of {metrics['patients']} patient(s) "
                f"scored; majority-class ({metrics['majority_class']}) DSC {metrics['dsc_majority']:.4f}.",
                "## Per layer (this run)\n\n" + layers, paper_table(self.ctx.spec, "table1"),
                paper_table(self.ctx.spec, "table2"), paper_note(self.ctx.spec, "comparison")]

    # -- predict ----------------------------------------------------------------------------------------------
    def predict_items(self):
        src = self.m.predict.input
        if src:
            path = Path(src).expanduser()
            if not path.exists():
                raise DataError(f"predict.input not found: {path}", fix="-o predict.input=/path/to/patient_folders")
            return oct_layers.read(path, labelled=False)
        splits = self.patients()
        held = set(self.folds(splits)[self.m.dataset.fold].tolist())
        return [p for i, p in enumerate(splits) if i in held]

    def predict_rows(self, net, patients) -> list[dict]:
        rows = []
        for p in patients:
            vol, labels, affine, c = oct_layers.load(p, labelled=True)
            mid = self.mid_labels(vol, c)
            if self.m.model.prior and mid is None:
                if labels is None or not oct_layers.annotated(labels)[c]:
                    raise DataError(f"{p.oct.parent}: prior: true needs the fovea B-scan's labels (labels.nii.gz with "
                                    f"B-scan {c} annotated; prior.mid_label_source gt)",
                                    fix="add them, or predict with a train run of -o model.prior=false")
                mid = labels[c:c + 1]
            st = build_stack(p.id, p.oct, vol, None, c, self.m, mid, self.ctx.cache_dir)
            logits = torch.from_numpy(self.logits(net, [st])[0])  # (12, 5, S, S)
            h, w = vol.shape[1:]
            full = F.interpolate(logits.transpose(0, 1), size=(h, w), mode="bilinear", align_corners=False)
            pred = full.argmax(1).numpy().astype(np.uint8)  # (5, H, W)
            out = np.full(vol.shape, UNANNOTATED, np.uint8)
            out[c - 2:c + 3] = pred
            rel = f"predictions/{p.id}_labels.nii.gz"
            self.ctx.write_nifti(rel, out, affine)
            rows.append({"patient": p.id, "file": str(p.oct), "prediction": rel, "fovea_index": c,
                         **{f"frac_{n}": float((pred == i).mean()) for i, n in enumerate(LAYERS)}})
        return rows

    # -- extra stages -------------------------------------------------------------------------------------------
    def propagate(self) -> dict:
        from .propagate import run

        return run(self)

    def cv(self) -> dict:
        k = self.m.dataset.folds or len(self.patients())
        children = [Child(f"{v}-fold{i}", {**ov, "dataset.fold": i}, labels={"variant": v, "fold": i})
                    for v, ov in self.m.cv.variants.items() for i in range(k)]
        runs = self.ctx.sweep(children, title="variant × fold")
        rows = [r.row for r in runs]
        self.ctx.write_csv("per_fold.csv", rows)
        cols = [*KEYS, "dsc_majority", *[f"dsc_{n}" for n in LAYERS]]
        summary = summarise(rows, cols, by=["variant"])
        self.ctx.write_csv("summary.csv", summary)
        metrics = {"folds": k, "variants": len(self.m.cv.variants)}
        for s in summary:
            metrics.update({f"{s['variant']}_{key}": v for key, v in headline(s, [*KEYS, "dsc_majority"]).items()})
        first = next(iter(self.m.cv.variants))
        metrics.update({key: metrics[f"{first}_{key}"] for key in (*KEYS, "dsc_majority")})
        metrics["dsc_over_majority"] = metrics["dsc"] - metrics["dsc_majority"]
        metrics["min_dsc_over_majority"] = min(s["dsc"] - s["dsc_majority"] for s in summary)
        from .figures import cv_bars

        cv_bars(self.ctx, summary, LAYERS)
        table = markdown_table(["variant", "fold", *KEYS, "majority DSC", "run"],
                               [[r["variant"], r["fold"], *[r.get(c) for c in KEYS], r.get("dsc_majority"),
                                 r["run_id"]] for r in rows])
        self.ctx.write_text("paper.md", paper_md(self.ctx.spec, self.m, metrics, self.ctx,
                                                 title=f"TransNetOCT, {k}-fold patient-wise CV", sections=[
            f"## Folds × variants (each a train run of its own)\n\nHeadline = variant `{first}`. Fovea labels of the "
            f"prior maps: `{self.m.prior.mid_label_source}` (gt = the oracle).\n\n" + table,
            "## Mean over folds\n\n" + mean_sd_table(summary, KEYS, by=["variant"]),
            paper_table(self.ctx.spec, "table1"), paper_note(self.ctx.spec, "comparison")]))
        return metrics
