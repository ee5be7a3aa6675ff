"""superpixel-label, the method (card: docs/papers/superpixel-label.md).

Superpixel-based sparse labelling (Table 1–3 of the paper): superpixels on each training image, a simulated
annotator who labels only the superpixels that lie wholly inside (lesion) or wholly outside (background) the
ground truth and skips those on the boundary, the gap filled (or ignored), and a U-Net trained on the result.

Stages: ``annotate`` and ``gap-stats`` (``annotate.py``: pseudo-GT PNGs and figures; Tables 2–3), ``train`` /
``eval`` (here, on the Supervised template), ``table1`` (``table1.py``: Table 1 as a sweep of train runs, plus a
gap-stats child). The card's ``make-fixture`` is ``medrun fixture isic2018|cxr|busi``.

Data: ``isic2018`` (``datasets/isic2018.py``, RGB), ``cxr`` (``datasets/cxr_lung.py``, the Kaggle Montgomery +
Shenzhen mask collection, grey), ``busi`` (``datasets/busi.py``, grey; extra ``_mask_k`` files OR-ed; normal images
kept with empty masks). Every image and mask is resized to ``dataset.img_size`` (256; bilinear / nearest), nothing
else (no hair removal, no augmentation: the paper names none). Splits: ``random`` (default) draws train / val /
test with ``dataset.fractions`` (70/20/10 as the card) from one pool with ``split_seed``; ``official`` (isic2018
only) splits the Training part 80/20 and tests on the official Test part. The split is recorded in data.lock.json.

Method choices (card, "Method"; where it is silent):
- Superpixels (``method.py``): SLIC (skimage, n_segments 800, compactness 10; Lab for RGB; grey images on their
  [0, 1] values with ``channel_axis=None`` as the card says, where compactness 10 makes the spatial term dominate
  and the superpixels nearly a regular grid — ``superpixel.grey_as_rgb: true`` runs SLIC in Lab on three equal
  channels instead, as a reader that loads every PNG as colour would; on the speckled BUSI fixture that merges
  everything into one or two superpixels, which is why it is not the default), SEEDS (OpenCV contrib
  ``createSuperpixelSEEDS``, 800, 4 levels, prior 2, 5 bins, 4 iterations; on the Lab image for RGB; exit 4 naming
  opencv-contrib-python-headless when the installed OpenCV lacks ``ximgproc``), SNIC (``pysnic``, a dependency,
  on the Lab image; where it is missing, or with ``snic_impl: watershed``, a SNIC-like seeded region growing:
  skimage's compact watershed of the Lab gradient from a regular grid of n_segments seeds, compactness 0.001 —
  recorded as ``snic_backend`` in the metrics). The fixture manifests scale n_segments by area (800·S²/256²).
- Pseudo labels are computed in the train run itself (about 0.25 s per 256² image with SLIC and the distance fill),
  not read from an annotate run, so a train run depends on nothing but its manifest and the data.
- Annotator: f_s = |s ∩ G|/|s| from integer counts, so purity is exact; ``superpixel.purity_tol`` (default 0)
  relaxes it.
- Fills: ``nofill`` keeps 255 = ignore; ``dist`` compares the Euclidean distance to the nearest labelled lesion
  and background pixel (tie → background); ``rw`` is skimage's random walker (beta 130, ``cg_j``, image in [0, 1]).
  With one seed class only, the gap takes that class.
- Networks (``model.net``): the classic U-Net (``models/unet_classic.py``, 64 → 1024, 2×[3×3 conv-BN-ReLU],
  transposed-conv upsampling, Dropout2d 0.1 at the bottleneck; 31,037,633 parameters at 3 input channels), one logit
  channel; grey images are one input channel; input = pixel / 255. DuAT (``models/duat.py``, the official code's
  structure: PVTv2-B2 encoder, GLSA on stages 2–4 with dim 32 as the official default, SBA decoder; 24,968,265
  parameters): grey repeated to RGB, ImageNet mean/sd; trained on both of its logit maps (the masked loss of each,
  summed, as the official Train.py), evaluated on their sum (as its Test.py). Its encoder is ImageNet-pretrained in
  the official code: ``model.encoder_checkpoint`` loads ``pvt_v2_b2`` weights (weights-only); without it the encoder
  is random and the DuAT numbers are not comparable with the paper's (paper.md says so).
- Loss: BCE + soft Dice (per image, smooth 1), both over the labelled pixels only (``masked_loss``; pixels with 255
  get exactly zero gradient). AdamW (lr 1e-4, weight decay 0.01, torch's default), batch 8, 50 epochs, early stopping
  after 10 epochs without a lower validation loss (Lightning ``EarlyStopping``); the last epoch's weights are kept.
  Validation uses the same pseudo labels as training; test is always against the original GT.
- Metrics: threshold 0.5, per-image Dice, IoU, precision, sensitivity averaged over images; an image where both
  masks are empty scores 1 (``medrun.metrics.segmentation``); ``dice_all_foreground`` is the chance level.
"""

from __future__ import annotations

import lightning as L
import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from medrun.errors import DataError

from ..report import paper_note, paper_table
from ..tasks import segmentation as seg
from ..tasks.segmentation import Cases
from ..tasks.supervised import Supervised
from . import method

METRICS = ("dice", "iou", "precision", "sensitivity")


def params(m) -> method.Params:
    s = m.superpixel
    return method.Params(n_segments=s.n_segments, compactness=s.compactness, seeds_levels=s.seeds_levels,
                         seeds_prior=s.seeds_prior, seeds_bins=s.seeds_bins, seeds_iterations=s.seeds_iterations,
                         snic_impl=s.snic_impl, watershed_compactness=s.watershed_compactness,
                         purity_tol=s.purity_tol, grey_as_rgb=s.grey_as_rgb, rw_beta=s.rw_beta)


# -- loss and module --------------------------------------------------------------------------------------------
def masked_loss(logits: torch.Tensor, target: torch.Tensor, smooth: float = 1.0) -> tuple[torch.Tensor, dict]:
    """BCE + (1 − soft Dice) over the labelled pixels of (B, 1, H, W) targets in {0, 1, 255}; 255 = ignore.

    BCE is the mean over labelled pixels; soft Dice is per image over labelled pixels (smooth 1), averaged over
    the batch. Ignored pixels enter neither term, so their logits get zero gradient."""
    valid = (target != method.IGNORE).to(logits.dtype)
    t = torch.where(target == method.IGNORE, torch.zeros_like(target), target).to(logits.dtype)
    bce = (F.binary_cross_entropy_with_logits(logits, t, reduction="none") * valid).sum() / valid.sum().clamp(min=1)
    p = torch.sigmoid(logits) * valid
    dims = tuple(range(1, logits.ndim))
    soft = (2 * (p * t).sum(dims) + smooth) / (p.sum(dims) + (t * valid).sum(dims) + smooth)
    dice = 1 - soft.mean()
    return bce + dice, {"bce": bce.detach(), "dice": dice.detach()}


class DuATNet(torch.nn.Module):
    """DuAT on [0, 1] images: grey repeated to RGB, ImageNet mean/sd (as the official loaders); training returns
    both logit maps (deep supervision, as the official Train.py), eval their sum (as its Test.py)."""

    MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)

    def __init__(self, dim: int = 32):
        super().__init__()
        from medrun.models.duat import DuAT

        self.duat = DuAT(3, dim)
        self.register_buffer("mean", torch.tensor(self.MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(self.STD).view(1, 3, 1, 1), persistent=False)

    def forward(self, x):
        x = (x.expand(-1, 3, -1, -1) - self.mean) / self.std
        p1, p2 = self.duat(x)
        return (p1, p2) if self.training else p1 + p2


def load_encoder(net: DuATNet, path: str) -> int:
    """ImageNet PVTv2-B2 weights into DuAT's encoder (keys as the official ``pvt_v2_b2.pth``, with or without a
    ``backbone.`` prefix; the classification head is skipped). Returns the number of tensors loaded."""
    from pathlib import Path

    from medrun.errors import EnvError, UsageError

    from .. import training

    if not Path(path).is_file():
        raise EnvError(f"model.encoder_checkpoint not found: {path}",
                       fix="give the ImageNet pvt_v2_b2 weights (pvt_v2_b2.pth of the PVT release), or drop the key "
                           "for a random-init encoder")
    state = training.load_state(Path(path))
    own = net.duat.backbone.state_dict()
    state = {k.removeprefix("backbone."): v for k, v in state.items()}
    hits = {k: v for k, v in state.items() if k in own and own[k].shape == v.shape}
    if len(hits) < len(own) // 2:
        raise UsageError(f"{path} matches {len(hits)} of the {len(own)} PVTv2-B2 encoder tensors",
                         fix="pass the pvt_v2_b2 ImageNet state dict")
    net.duat.backbone.load_state_dict(hits, strict=False)
    return len(hits)


class LitSegmenter(L.LightningModule):
    def __init__(self, net: torch.nn.Module, train):
        super().__init__()
        self.net, self.cfg = net, train

    def forward(self, x):
        return self.net(x)

    def training_step(self, batch, _):
        x, y = batch
        out = self.net(x)
        loss = sum(masked_loss(o, y)[0] for o in out) if isinstance(out, tuple) else masked_loss(out, y)[0]
        self.log("train_loss", loss, on_step=False, on_epoch=True, prog_bar=True, batch_size=len(x))
        return loss

    def validation_step(self, batch, _):
        x, y = batch
        loss, _ = masked_loss(self.net(x), y)
        self.log("val_loss", loss, on_epoch=True, prog_bar=True, batch_size=len(x))

    def configure_optimizers(self):
        return torch.optim.AdamW(self.net.parameters(), lr=self.cfg.lr, weight_decay=self.cfg.weight_decay)


# -- data -------------------------------------------------------------------------------------------------------
def to_tensor(images: np.ndarray) -> torch.Tensor:
    """(N, S, S[, 3]) uint8 → (N, C, S, S) float32 in [0, 1]."""
    x = torch.from_numpy(np.ascontiguousarray(images)).float() / 255.0
    return x[:, None] if x.ndim == 3 else x.permute(0, 3, 1, 2).contiguous()


class SegData(Dataset):
    def __init__(self, images: np.ndarray, labels: np.ndarray):
        self.x, self.y = to_tensor(images), torch.from_numpy(labels.astype(np.float32))[:, None]

    def __len__(self):
        return len(self.x)

    def __getitem__(self, i):
        return self.x[i], self.y[i]


def read_cases(name: str, root, size: int, part: str = "Training", limit: int | None = None, log=print) -> Cases:
    """Every case of a dataset at size×size: images uint8 (RGB for isic2018, grey otherwise), masks {0, 1}."""
    if name == "isic2018":
        from medrun.datasets import isic2018 as ds

        found = ds.read(root, part)
        load = ds.load
    elif name == "cxr":
        from medrun.datasets import cxr_lung as ds

        found = ds.read(root, log)
        load = ds.load
    else:
        from medrun.datasets import busi as ds

        found = ds.read(root, (*ds.CLASSES, "normal"))

        def load(c, s):
            img, m = ds.load(c, s)
            return np.round(img * 255).astype(np.uint8), m
    found = found[:limit] if limit else found
    pairs = [load(c, size) for c in found]
    return Cases([c.id for c in found], [str(c.image) for c in found], np.stack([p[0] for p in pairs]),
                 np.stack([p[1] for p in pairs]).astype(np.uint8))


def pseudo_labels(cases: Cases, labels: str, how_method: str, p: method.Params) -> np.ndarray:
    """(N, S, S) uint8 training targets: the original masks, or the chosen fill of the simulated sparse labels."""
    if labels == "original":
        return cases.masks.copy()
    return np.stack([method.annotate(img, gt, how_method, (labels,), p)[labels]
                     for img, gt in zip(cases.images, cases.masks, strict=True)])


class SuperpixelLabel(Supervised):
    report_split = "test"

    def build_model(self) -> torch.nn.Module:
        from medrun.models.unet_classic import ClassicUNet

        mm = self.m.model
        if mm.net == "duat":
            net = DuATNet(mm.duat_dim)
            if mm.encoder_checkpoint and self.ctx is not None and self.ctx.stage != "eval":
                self.ctx.log(f"DuAT encoder: {load_encoder(net, mm.encoder_checkpoint)} tensors from "
                             f"{mm.encoder_checkpoint}")
            return net
        return ClassicUNet(3 if self.m.dataset.name == "isic2018" else 1, 1, base=mm.base, dropout=mm.dropout)

    # -- data ---------------------------------------------------------------------------------------------------
    def splits(self) -> dict[str, Cases]:
        d = self.m.dataset
        root = self.ctx.data_roots[d.name]
        cases = read_cases(d.name, root, d.img_size, limit=d.limit, log=self.ctx.log)
        rng = np.random.default_rng(d.split_seed)
        if d.split == "official":
            test = read_cases(d.name, root, d.img_size, part="Test", limit=d.limit)
            order = rng.permutation(len(cases))
            n_val = max(1, round(0.2 * len(cases)))
            splits = {"train": cases.take(sorted(order[n_val:])), "val": cases.take(sorted(order[:n_val])),
                      "test": test}
        else:
            order = rng.permutation(len(cases))
            n_val = max(1, round(d.fractions[1] * len(cases)))
            n_test = max(1, round(d.fractions[2] * len(cases)))
            if len(cases) - n_val - n_test < 1:
                raise DataError(f"{len(cases)} case(s) in {root} leave no training image after the "
                                f"{d.fractions[1]:.0%} / {d.fractions[2]:.0%} val / test hold-outs",
                                fix="point at more data or raise dataset.limit")
            splits = {"train": cases.take(sorted(order[n_val + n_test:])),
                      "val": cases.take(sorted(order[:n_val])), "test": cases.take(sorted(order[n_val:n_val + n_test]))}
        self.ctx.record_splits({k: v.files for k, v in splits.items()})
        return splits

    def targets(self, cases: Cases) -> np.ndarray:
        return pseudo_labels(cases, self.m.train.labels, self.m.superpixel.method, params(self.m))

    def dataset(self, cases: Cases, train: bool):
        return SegData(cases.images, self.targets(cases))  # validation: the same kind of labels as training

    def lit_module(self, net):
        return LitSegmenter(net, self.m.train)

    def trainer_kwargs(self) -> dict:
        from lightning.pytorch.callbacks import EarlyStopping

        return {"callbacks": [EarlyStopping(monitor="val_loss", patience=self.m.train.patience, mode="min")]}

    def weights_metadata(self) -> dict:
        return {"pipeline": self.ctx.spec.slug, "labels": self.m.train.labels, "superpixel": self.m.superpixel.method,
                "net": self.m.model.net}

    # -- evaluation ---------------------------------------------------------------------------------------------
    def probs(self, net, images: np.ndarray) -> np.ndarray:
        bs = self.m.train.batch_size
        out = [torch.sigmoid(self.predictor(net, to_tensor(images[i:i + bs])))[:, 0].numpy()
               for i in range(0, len(images), bs)]
        return np.concatenate(out) if out else np.zeros((0, *images.shape[1:3]), np.float32)

    def evaluate(self, net, cases: Cases):
        self._pred = pred = self.probs(net, cases.images) > self.m.eval.threshold
        rows = []
        for cid, p, g in zip(cases.ids, pred, cases.masks, strict=True):
            s = seg.case_metrics(p, g, ("dice", "iou", "precision", "recall"))
            rows.append({"case": cid, "dice": s["dice"], "iou": s["iou"], "precision": s["precision"],
                         "sensitivity": s["recall"], "fg_pred": float(p.mean()), "fg_true": float(g.mean())})
        metrics = seg.summarise(rows, METRICS)
        metrics["dice_all_foreground"] = float(np.mean([seg.case_metrics(np.ones_like(g), g, ("dice",))["dice"]
                                                        for g in cases.masks]))
        metrics["labels"] = self.m.train.labels
        metrics["superpixel"] = self.m.superpixel.method if self.m.train.labels != "original" else "none"
        if metrics["superpixel"] == "snic":
            metrics["snic_backend"] = method.snic_backend(params(self.m))
        return metrics, rows

    def figures(self, net, cases: Cases, metrics, rows, split):
        for i in range(min(self.m.eval.overlays, len(cases))):
            seg.overlay(self.ctx, f"overlay_{cases.ids[i]}", cases.images[i], cases.masks[i], self._pred[i],
                        title=f"{cases.ids[i]}  Dice {rows[i]['dice']:.3f} (green GT, red prediction)")

    def summary_line(self, split, metrics):
        return (f"{split}: Dice {metrics['dice']:.4f}  IoU {metrics['iou']:.4f}  precision {metrics['precision']:.4f}"
                f"  sensitivity {metrics['sensitivity']:.4f}  (all-foreground Dice "
                f"{metrics['dice_all_foreground']:.4f})")

    def paper_kwargs(self, split, metrics):
        from .table1 import paper_row

        mm = self.m.model
        row = paper_row(self.ctx.spec, self.m.dataset.name, self.m.train.labels, self.m.superpixel.method, mm.net)
        labels = self.m.train.labels
        setting = "original GT" if labels == "original" else f"{labels} fill of {self.m.superpixel.method.upper()}"
        net = "U-Net" if mm.net == "unet" else ("DuAT (ImageNet encoder)" if mm.encoder_checkpoint else
                                                "DuAT (random-init encoder: not comparable with the paper's)")
        return {"expect": row or {}, "table": "Table 1",
                "setting": f"{self.m.dataset.name}: {net} trained on {setting}; test vs original GT"}

    def paper_sections(self, metrics):
        return [paper_table(self.ctx.spec, f"table1_{self.m.dataset.name}"), paper_note(self.ctx.spec, "table1")]

    # -- the extra stages ---------------------------------------------------------------------------------------
    def annotate(self) -> dict:
        from .annotate import annotate

        return annotate(self)

    def gap_stats(self) -> dict:
        from .annotate import gap_stats

        return gap_stats(self)

    def table1(self) -> dict:
        from .table1 import table1

        return table1(self)
