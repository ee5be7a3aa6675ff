"""sc-unext, the method (card: docs/papers/sc-unext.md).

Data: ISIC 2018 Task 1 (official folders or the UNeXt repo layout, ``datasets/isic2018.py``) or the Montgomery CXR
set as the public stand-in for the private "Haut" set (``datasets/montgomery.py``; target = left ∪ right lung).
Every case is read once, checked (mask size = image size, mask values 0/255 only), resized to ``img_size``
(bilinear image, nearest mask) and kept in memory. ``dataset.include`` (id globs) and ``dataset.limit`` filter the
cases; then one random 80/20 split (sklearn ``train_test_split``, ``random_state = split_seed`` = 41 as UNeXt's
train.py). The card's "80/20 × 3 seeds" protocol is the ``repeat`` stage (below).

Network (``models/unext.py``): UNeXt-small (253,561 params) with the SC-UNeXt flags ``model.cbam``,
``model.sc_skip``, ``model.pfm`` (all on: 261,817 params); ``model.size: paper`` gives the 1.47 M UNeXt;
``model.arch: unet`` the U-Net baseline (MONAI ``BasicUNet``, widths 64-64-128-256-512-64 = 7.90 M params, the
nearest to the paper's "9.04 MB"; ResUNet++ is dropped, as the card allows).

Loss (card, "Joint loss"): ``0.5·BCEWithLogits + (1 − softDice(σ(z), y)) + λ_e·BCE(E(σ(z)), E(y))`` with softDice
per image (smooth 1e-5, averaged over the batch, as UNeXt's BCEDiceLoss) and ``E(p) = maxpool3(p) + maxpool3(−p)``
(the morphological gradient, stride 1, padding 1). λ_e = 1.

Training: Adam (lr 1e-4, β 0.9/0.999 — the paper's "momentum 0.9" is β1 — weight decay 1e-4), CosineAnnealingLR
(T_max = epochs, eta_min 1e-5, stepped per epoch), batch 8, 400 epochs; the last epoch's weights are evaluated
(UNeXt keeps the best validation epoch; the card does not say which, and the last epoch needs no selection on the
reported split). Augmentation (train only): RandomRotate90 (k uniform in 0..3), horizontal and vertical flips
each with p 0.5, then ImageNet normalisation (albumentations' ``Normalize()`` defaults, as UNeXt). Grayscale
Montgomery images are repeated to three channels so the network (and its parameter count) is the card's.

Evaluation: threshold 0.5 on σ(z); Dice = 2TP/(2TP+FP+FN) and IoU = TP/(TP+FP+FN) per image, averaged over images
(``dice``, ``iou``; an image where both masks are empty scores 1). UNeXt's own figure — counts pooled over each
batch of ``batch_size`` images, IoU with smooth 1e-5 and Dice = 2·IoU/(IoU+1), averaged over batches weighted by
their size — is logged as ``dice_batch``/``iou_batch``. ``dice_all_foreground`` is the score of predicting every
pixel as lesion (the chance level the smoke threshold is read against). The train stage evaluates the validation
split at its last epoch, so a train run's ``metrics.json`` holds validation metrics (the paper reports its 20 %).
``predict`` writes ``predictions/<name>_segmentation.png`` (0/255) at each input's own size: the probability map
is resized bilinearly, then thresholded.

Stages beyond train/eval/predict, each a sweep of train runs (reused when complete):
- ``repeat``: the card's "80/20 random split × 3": one train run per ``repeat.split_seeds`` (41, 42, 43, as
  ``dataset.split_seed``), each scored on its own 20 %; ``per_repeat.csv``, mean, sample sd and variance (ddof 1)
  and the 95 % t-interval over the repeats.
- ``ablate`` (Table 2, ``ablate.py``): ``ablate.variants`` maps a name to dotted overrides of the ``model`` and
  ``loss`` sections (validated with the manifest). ``ablate.subset`` cases (120 as the paper's "ISIC 207" subset;
  which images is not stated, so a random draw with ``split_seed``: ``dataset.subset``) are split into
  ``dataset.folds`` folds (KFold, shuffled, ``split_seed``); every variant × fold is a train run
  (``dataset.fold``) on k−1 folds, validated on the held-out fold, from the same seed. Writes ``per_fold.csv``,
  ``ablation.csv`` (mean, sample variance and sd of the fold Dice per variant) and paper.md with Table 2 beside it.
  "+skip" is CBAM + SC skip (the attention-filtered multiplicative skip), so "all three" is the full SC-UNeXt.
- ``complexity`` (``complexity.py``): parameters (and in the paper's 1024-units) and MACs at 256² and 512²
  (``torch.utils.flop_counter.FlopCounterMode``, FLOPs/2) for the models in ``complexity.models``, beside Table 1.
- The card's ``make-fixture`` verb is ``medrun fixture isic2018 --out DIR`` (shared for every dataset).

The card's command-line plan maps onto manifests: ``--isic-root``/``--cxr-root`` is ``--data-dir`` with
``--dataset isic2018|montgomery``; ``--model unext|sc-unext|unet`` and ``--cbam --sc-skip --pfm --edge-loss`` are
``-o model.arch=…``, ``-o model.cbam=…``, ``-o model.sc_skip=…``, ``-o model.pfm=…``, ``-o loss.edge=…``;
``--unext-size paper`` is ``-o model.size=paper``; ``--sc-f full`` is ``-o model.sc_f=full``.

Other choices where the card is silent:
- All cases are decoded once into memory at ``img_size`` (the real ISIC training set at 512² is about 2 GB of
  uint8); every mask is checked before training starts, so a bad file fails the run before any epoch.
- The edge term's BCE is on probabilities (torch clamps its logarithms at −100); E(y) of a binary mask is 0/1.
- In ``ablate`` the held-out fold is also the Lightning validation set, for the learning curves only; nothing is
  selected on it. ``ablate.epochs`` (default ``train.epochs``) sets the epochs per fold.
- The fixture manifests (the card's smoke run: 64², 5 epochs) use batch 4 and lr 1e-2 (cosine to 1e-3) instead
  of batch 8 and 1e-4: 15 Adam steps at batch 8 leave validation Dice between 0.1 and 0.7 depending on the seed.
"""

from __future__ import annotations

import fnmatch
import math
from pathlib import Path

import lightning as L
import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from medrun.datasets import isic2018, montgomery, pairs
from medrun.datasets.imageio import stem
from medrun.errors import DataError

from .. import training
from ..report import markdown_table, paper_md, paper_note, paper_table
from ..sweep import Child, headline, mean_sd_table, summarise
from ..tasks import segmentation as seg
from ..tasks.segmentation import Cases
from ..tasks.supervised import Supervised

MEAN = np.array([0.485, 0.456, 0.406], np.float32) * 255
STD = np.array([0.229, 0.224, 0.225], np.float32) * 255
REPEAT_KEYS = ("dice", "iou", "dice_batch", "iou_batch")


# -- network and loss -------------------------------------------------------------------------------------------
def build_net(mm) -> torch.nn.Module:
    """The manifest's ``model`` section → network (3 input channels, 1 logit channel)."""
    if mm.arch == "unet":
        from monai.networks.nets import BasicUNet

        return BasicUNet(spatial_dims=2, in_channels=3, out_channels=1, features=tuple(mm.unet_features))
    from medrun.models.unext import unext_paper, unext_small

    factory = unext_small if mm.size == "small" else unext_paper
    return factory(3, 1, cbam=mm.cbam, sc_skip=mm.sc_skip, sc_f=mm.sc_f, pfm=mm.pfm)


def edge_map(p: torch.Tensor) -> torch.Tensor:
    """E(p) = maxpool3×3(p) + maxpool3×3(−p): the 3×3 morphological gradient (dilation − erosion)."""
    return F.max_pool2d(p, 3, stride=1, padding=1) + F.max_pool2d(-p, 3, stride=1, padding=1)


def joint_loss(logits: torch.Tensor, target: torch.Tensor, bce: float = 0.5, dice: float = 1.0, edge: float = 1.0,
               smooth: float = 1e-5) -> tuple[torch.Tensor, dict]:
    """``bce·BCEWithLogits + dice·(1 − softDice per image) + edge·BCE(E(σ(z)), E(y))`` on (B, 1, H, W)."""
    loss_bce = F.binary_cross_entropy_with_logits(logits, target)
    p = torch.sigmoid(logits)
    dims = tuple(range(1, p.ndim))
    soft = (2 * (p * target).sum(dims) + smooth) / (p.sum(dims) + target.sum(dims) + smooth)
    loss_dice = 1 - soft.mean()
    total = bce * loss_bce + dice * loss_dice
    parts = {"bce": loss_bce.detach(), "dice": loss_dice.detach()}
    if edge > 0:
        loss_edge = F.binary_cross_entropy(edge_map(p), edge_map(target))
        total = total + edge * loss_edge
        parts["edge"] = loss_edge.detach()
    return total, parts


class LitSegmenter(L.LightningModule):
    def __init__(self, net: torch.nn.Module, loss, train, threshold: float = 0.5):
        super().__init__()
        self.net = net
        self.loss_cfg, self.train_cfg, self.threshold = loss, train, threshold

    def forward(self, x):
        return self.net(x)

    def _loss(self, logits, y):
        c = self.loss_cfg
        return joint_loss(logits, y, c.bce, c.dice, c.edge, c.smooth)

    def training_step(self, batch, _):
        x, y = batch
        loss, parts = self._loss(self.net(x), y)
        self.log("train_loss", loss, on_step=False, on_epoch=True, prog_bar=True, batch_size=len(x))
        for k, v in parts.items():
            self.log(f"train_{k}_loss", v, on_step=False, on_epoch=True, batch_size=len(x))
        return loss

    def validation_step(self, batch, _):
        x, y = batch
        logits = self.net(x)
        loss, _ = self._loss(logits, y)
        pred = (torch.sigmoid(logits) > self.threshold).float()
        inter, total = (pred * y).sum((1, 2, 3)), pred.sum((1, 2, 3)) + y.sum((1, 2, 3))
        dice = torch.where(total > 0, 2 * inter / total.clamp(min=1), torch.ones_like(total))
        self.log("val_loss", loss, on_epoch=True, batch_size=len(x))
        self.log("val_dice", dice.mean(), on_epoch=True, prog_bar=True, batch_size=len(x))

    def configure_optimizers(self):
        t = self.train_cfg
        opt = torch.optim.Adam(self.net.parameters(), lr=t.lr, betas=tuple(t.betas), weight_decay=t.weight_decay)
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=t.epochs, eta_min=t.eta_min)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "epoch"}}


# -- data -------------------------------------------------------------------------------------------------------
def normalise(images: np.ndarray) -> torch.Tensor:
    """(N, H, W, 3) uint8 → (N, 3, H, W) float32, ImageNet mean/std on 0–255 values."""
    x = (images.astype(np.float32) - MEAN) / STD
    return torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2)))


class SegData(Dataset):
    """In-memory cases → (image 3×S×S normalised, mask 1×S×S float); train-time RandomRotate90 + flips."""

    def __init__(self, cases: Cases, augment: bool):
        self.c, self.augment = cases, augment

    def __len__(self):
        return len(self.c)

    def __getitem__(self, i):
        img, m = self.c.images[i], self.c.masks[i]
        if self.augment:
            k = int(torch.randint(4, (1,)))
            img, m = np.rot90(img, k, (0, 1)), np.rot90(m, k, (0, 1))
            if torch.rand(1) < 0.5:
                img, m = img[:, ::-1], m[:, ::-1]
            if torch.rand(1) < 0.5:
                img, m = img[::-1], m[::-1]
        x = normalise(np.ascontiguousarray(img)[None])[0]
        return x, torch.from_numpy(np.ascontiguousarray(m, dtype=np.float32)[None])


def batch_pooled(pred: np.ndarray, gt: np.ndarray, batch_size: int, smooth: float = 1e-5) -> tuple[float, float]:
    """UNeXt's ``iou_score`` per batch (counts pooled over the batch, smooth 1e-5, Dice = 2·IoU/(IoU+1)), averaged
    over batches weighted by their size (its AverageMeter)."""
    ious, dices, weights = [], [], []
    for i in range(0, len(pred), batch_size):
        p, g = pred[i:i + batch_size] > 0, gt[i:i + batch_size] > 0
        iou = ((p & g).sum() + smooth) / ((p | g).sum() + smooth)
        ious.append(iou)
        dices.append(2 * iou / (iou + 1))
        weights.append(len(p))
    if not weights:
        return math.nan, math.nan
    return float(np.average(dices, weights=weights)), float(np.average(ious, weights=weights))


class ScUnext(Supervised):
    report_split = "val"  # the paper scores its random 20 %

    def build_model(self) -> torch.nn.Module:
        return build_net(self.m.model)

    # -- data ---------------------------------------------------------------------------------------------------
    def _root(self) -> Path:
        return self.ctx.data_roots[self.m.dataset.name]

    def read_cases(self) -> Cases:
        d, root = self.m.dataset, self._root()
        found = {"isic2018": lambda: isic2018.read(root, d.part), "montgomery": lambda: montgomery.read(root),
                 "pairs": lambda: pairs.read(root)}[d.name]()
        kept = [c for c in found if d.include is None or any(fnmatch.fnmatchcase(c.id, g) for g in d.include)]
        kept = kept[:d.limit] if d.limit else kept
        if not kept:
            raise DataError(f"no cases left in {root} after filtering ({len(found)} found; dataset.include="
                            f"{d.include}, dataset.limit={d.limit})", fix="widen -o dataset.include=[...] or drop it")
        images, masks = [], []
        for c in kept:
            if d.name == "isic2018":
                img, m = isic2018.load(c, d.img_size)
            elif d.name == "pairs":
                img, m = pairs.load_rgb8(c, d.img_size, d.intensity)
            else:
                gray, m = montgomery.load(c, d.img_size)
                img = np.repeat(np.round(gray * 255).astype(np.uint8)[..., None], 3, axis=-1)
            images.append(img)
            masks.append(m)
        self.ctx.log(f"{d.name}: {len(kept)} cases at {d.img_size}×{d.img_size}"
                     + (f" ({len(found) - len(kept)} filtered out)" if len(kept) < len(found) else ""))
        return Cases([c.id for c in kept], [str(c.image) for c in kept], np.stack(images), np.stack(masks))

    def splits(self) -> dict[str, Cases]:
        """``dataset.subset`` drawn first (ablate); then the held-out ``dataset.fold`` of ``dataset.folds`` (KFold)
        or the random 80/20 split, both with ``split_seed``."""
        from sklearn.model_selection import KFold, train_test_split

        d = self.m.dataset
        cases = self.read_cases()
        if d.subset and d.subset < len(cases):
            pick = np.random.default_rng(d.split_seed).choice(len(cases), d.subset, replace=False)
            cases = cases.take(sorted(pick.tolist()))
        if d.fold is not None:
            if len(cases) < d.folds:
                raise DataError(f"{len(cases)} case(s) in {self._root()} after filtering cannot make {d.folds} folds",
                                fix="lower -o dataset.folds or widen dataset.include / dataset.limit")
            folds = KFold(d.folds, shuffle=True, random_state=d.split_seed).split(np.zeros(len(cases)))
            tr, va = list(folds)[d.fold]
        else:
            n_val = math.ceil(d.val_fraction * len(cases))
            if len(cases) - n_val < 1 or n_val < 1:
                raise DataError(f"the training split is empty: {len(cases)} case(s) in {self._root()} after filtering "
                                f"(dataset.include={d.include}, dataset.limit={d.limit}) leave none for training "
                                f"after a {d.val_fraction:.0%} validation hold-out",
                                fix="widen -o dataset.include=[...], raise dataset.limit, or point at more data")
            tr, va = train_test_split(list(range(len(cases))), test_size=d.val_fraction, random_state=d.split_seed)
        splits = {"train": cases.take(sorted(tr)), "val": cases.take(sorted(va))}
        self.ctx.record_splits({k: v.files for k, v in splits.items()})
        return splits

    # -- the template's hooks -----------------------------------------------------------------------------------
    def dataset(self, cases: Cases, train: bool):
        return SegData(cases, train and self.m.train.augment)

    def lit_module(self, net):
        return LitSegmenter(net, self.m.loss, self.m.train, self.m.eval.threshold)

    def probs(self, net, images: np.ndarray) -> np.ndarray:
        """σ(logits) (N, S, S) of (N, S, S, 3) uint8 images, in batches of ``train.batch_size``, via the predictor."""
        bs = self.m.train.batch_size
        out = [torch.sigmoid(self.predictor(net, normalise(images[i:i + bs])))[:, 0].numpy()
               for i in range(0, len(images), bs)]
        return np.concatenate(out) if out else np.zeros((0, *images.shape[1:3]), np.float32)

    def evaluate(self, net, cases: Cases):
        e, bs = self.m.eval, self.m.train.batch_size
        self._pred = pred = self.probs(net, cases.images) > e.threshold
        rows = [{"case": cid, **seg.case_metrics(p, g, ("dice", "iou")), "fg_pred": float(p.mean()),
                 "fg_true": float(g.mean())} for cid, p, g in zip(cases.ids, pred, cases.masks, strict=True)]
        metrics = seg.summarise(rows, ("dice", "iou"))
        metrics["dice_batch"], metrics["iou_batch"] = batch_pooled(pred, cases.masks, bs)
        metrics["dice_all_foreground"] = float(np.mean([seg.case_metrics(np.ones_like(g), g, ("dice",))["dice"]
                                                        for g in cases.masks]))
        metrics.update(training.count_params(net))
        return metrics, rows

    def figures(self, net, cases: Cases, metrics, rows, split):
        for i in range(min(self.m.eval.overlays, len(cases))):
            seg.overlay(self.ctx, f"overlay_{cases.ids[i]}", cases.images[i], cases.masks[i], self._pred[i],
                        title=f"{cases.ids[i]}  Dice {rows[i]['dice']:.3f}")

    def summary_line(self, split, metrics):
        return (f"{split}: Dice {metrics['dice']:.4f}  IoU {metrics['iou']:.4f}  (per batch: Dice "
                f"{metrics['dice_batch']:.4f}, IoU {metrics['iou_batch']:.4f}; all-foreground Dice "
                f"{metrics['dice_all_foreground']:.4f})")

    def paper_sections(self, metrics):
        mm = self.m.model
        desc = (f"U-Net baseline (MONAI BasicUNet {tuple(mm.unet_features)})" if mm.arch == "unet" else
                f"UNeXt-{mm.size}" + "".join(f" +{k}" for k in ("cbam", "sc_skip", "pfm") if getattr(mm, k))
                + (f" (sc_f {mm.sc_f})" if mm.sc_skip else ""))
        n = metrics["params_total"]
        run = (f"## This run\n\nModel: {desc}; loss: {self.m.loss.bce}·BCE + {self.m.loss.dice}·(1 − softDice)"
               f" + {self.m.loss.edge}·edge. Parameters: {n:,} ({n / 1024:.2f} K in the paper's 1024-units).\n\n"
               f"Split `{metrics['split']}`: {metrics['n_cases']} images. Dice averaged per batch as UNeXt's code: "
               f"{metrics['dice_batch']:.4f} (IoU {metrics['iou_batch']:.4f}). Predicting all foreground scores "
               f"Dice {metrics['dice_all_foreground']:.4f}.")
        return [run, paper_table(self.ctx.spec, "table1"), paper_note(self.ctx.spec, "comparison")]

    # -- predict: masks at each input's own size ----------------------------------------------------------------
    def predict_items(self):
        src = self.m.predict.input
        if src and self.m.dataset.name == "pairs":  # own data: every format imageio reads, DICOM included
            return self.ctx.predict_inputs(src, pairs.IMAGES)
        return super().predict_items()

    def predict_rows(self, net, items) -> list[dict]:
        size = self.m.dataset.img_size
        if isinstance(items, Cases):
            images, names, files, sizes = items.images, items.ids, items.files, [(size, size)] * len(items)
        else:
            from PIL import Image

            from medrun.datasets.images import open_image, to_8bit

            mode, arrays, sizes = ("L" if self.m.dataset.name == "montgomery" else "RGB"), [], []
            for f in items:  # as the readers: 8 bits by the image's own depth, grey CXRs through "L"
                if self.m.dataset.name == "pairs":  # any format imageio reads, scaled by dataset.intensity
                    full = pairs.load_image(f, 3, self.m.dataset.intensity)
                    sizes.append((full.shape[1], full.shape[0]))
                    arrays.append(pairs.to_rgb8(full, size))
                    continue
                with open_image(f) as im:
                    im = to_8bit(im, f).convert(mode).convert("RGB")
                sizes.append(im.size)
                arrays.append(np.asarray(im.resize((size, size), Image.BILINEAR), dtype=np.uint8))
            images, names, files = np.stack(arrays), [stem(f) for f in items], [str(f) for f in items]
        rows = []
        for name, f, p, wh in zip(names, files, self.probs(net, images), sizes, strict=True):
            rel = f"predictions/{name}_segmentation.png"
            mask = seg.write_mask(self.ctx, rel, p, wh, threshold=self.m.eval.threshold)
            rows.append({"file": str(f), "mask": rel, "width": wh[0], "height": wh[1],
                         "foreground_fraction": round(float(mask.mean()), 6),
                         "nifti": seg.write_like_dicom(self.ctx, f"predictions/{name}_segmentation", mask, f) or ""})
        return rows

    def predict_summary(self, rows):
        return {"mean_foreground_fraction": float(np.mean([r["foreground_fraction"] for r in rows]))}

    # -- export ---------------------------------------------------------------------------------------------------
    def bundle_parts(self) -> dict:
        """A MONAI bundle: the network, eval's preprocessing (8 bits by bit depth, RGB — CXRs through grey —,
        bilinear resize to img_size, ImageNet mean/sd on 0–255) and the thresholded σ(logit) mask at img_size."""
        mm, size, thr = self.m.model, self.m.dataset.img_size, self.m.eval.threshold
        net = ({"_target_": "monai.networks.nets.BasicUNet", "spatial_dims": 2, "features": list(mm.unet_features)}
               if mm.arch == "unet" else
               {"_target_": "medrun.models.create", "name": f"unext-{mm.size}", "cbam": mm.cbam, "sc_skip": mm.sc_skip,
                "sc_f": mm.sc_f, "pfm": mm.pfm})
        mode = "L" if self.m.dataset.name == "montgomery" else "RGB"
        load = {"_target_": "LoadImage", "reader": "PILReader", "reverse_indexing": False, "image_only": True,
                "converter": f"$lambda im: {seg.TO_8BIT}(im).convert('{mode}').convert('RGB')"
                             f".resize(({size}, {size}), PIL.Image.BILINEAR)"}
        return seg.bundle_parts(
            task="binary lesion / lung-field segmentation of one 2D image",
            network_def={**net, "in_channels": 3, "out_channels": 1},
            preprocessing=[load, {"_target_": "EnsureChannelFirst", "channel_dim": -1},
                           {"_target_": "EnsureType", "dtype": "$torch.float32", "track_meta": False},
                           {"_target_": "NormalizeIntensity", "subtrahend": MEAN.tolist(), "divisor": STD.tolist(),
                            "channel_wise": True}],
            predict=seg.mask_entry(f"torch.sigmoid(@network(x))[0, 0].cpu() > {thr}"), in_channels=3, size=size,
            labels={0: "background", 1: "foreground"}, modality="dermoscopy or chest X-ray",
            readme=f"Input: one image per file (any size; resized to {size}×{size}). Output, per file: the mask at "
                   f"{size}×{size} (rows of 0/1, σ(logit) > {thr}) and its foreground fraction.")

    # -- the paper's protocol: the random 80/20 split repeated (one train run per split seed) -------------------
    def repeat(self) -> dict:
        seeds = self.m.repeat.split_seeds
        runs = self.ctx.sweep([Child(f"split{s}", {"dataset.split_seed": s}, labels={"split_seed": s}) for s in seeds],
                              title="split")
        rows = [r.row for r in runs]
        self.ctx.write_csv("per_repeat.csv", rows)
        summary = summarise(rows, REPEAT_KEYS)[0]
        metrics = {"repeats": len(rows), **headline(summary, REPEAT_KEYS),
                   **{f"{k}_var": summary[f"{k}_sd"] ** 2 for k in ("dice", "iou")},
                   "params_total": rows[0].get("params_total")}
        header = ["split_seed", "Dice", "IoU", "Dice (per batch)", "IoU (per batch)", "val images", "run"]
        table = markdown_table(header, [[r["split_seed"], *[r.get(k) for k in REPEAT_KEYS], r.get("n_cases"),
                                         r["run_id"]] for r in rows])
        self.ctx.write_text("paper.md", paper_md(self.ctx.spec, self.m, metrics, self.ctx, sections=[
            f"## {len(rows)} random 80/20 splits (each a train run of its own)\n\n" + table,
            "## Mean over splits\n\n" + mean_sd_table([summary], REPEAT_KEYS)
            + f" Sample variance of Dice {metrics['dice_var']:.6f}, of IoU {metrics['iou_var']:.6f}.",
            paper_table(self.ctx.spec, "table1"), paper_note(self.ctx.spec, "comparison")]))
        return metrics

    def ablate(self) -> dict:
        from .ablate import ablate

        return ablate(self)

    def complexity(self) -> dict:
        from .complexity import complexity

        return complexity(self)
