"""sc-unext, the method (card: shared/papers/sc-unext.md).

Data: ISIC 2018 Task 1 (official folders or the UNeXt repo layout, ``datasets/isic2018.py``) or the Montgomery CXR
set as the public stand-in for the private "Haut" set (``datasets/montgomery.py``; target = left ∪ right lung).
Every case is read once, checked (mask size = image size, mask values 0/255 only), resized to ``img_size``
(bilinear image, nearest mask) and kept in memory. ``dataset.include`` (id globs) and ``dataset.limit`` filter the
cases; then one random 80/20 split (sklearn ``train_test_split``, ``random_state = split_seed`` = 41 as UNeXt's
train.py). The card's "80/20 × 3 seeds" protocol is the ``repeat`` stage (below).

Network (``models/unext.py``): UNeXt-small (253,561 params) with the SC-UNeXt flags ``model.cbam``, ``model.sc_skip``,
``model.pfm`` (all on: 261,817 params); ``model.size: paper`` gives the 1.47 M UNeXt; ``model.arch: unet`` the U-Net
baseline (MONAI ``BasicUNet``, widths 64-64-128-256-512-64 = 7.90 M params, the nearest to the paper's "9.04 MB";
ResUNet++ is dropped, as the card allows).

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

Stages beyond train/eval/predict:
- ``ablate`` (Table 2): ``ablate.variants`` maps a name to dotted overrides of the ``model`` and ``loss`` sections
  (validated with the manifest). ``ablate.subset`` cases (120 as the paper's "ISIC 207" subset; which images is not
  stated, so a random draw with ``split_seed``) are split into ``ablate.folds`` folds (KFold, shuffled,
  ``split_seed``); every variant trains on k−1 folds and is scored on the held-out fold, from the same seed. Writes
  ``per_fold.csv``, ``ablation.csv`` (mean, population variance and sd of the fold Dice per variant) and paper.md
  with the card's Table 2 beside it. "+skip" is CBAM + SC skip (the attention-filtered multiplicative skip), so
  "all three" is the full SC-UNeXt.
- ``complexity``: parameters (and in the paper's 1024-units) and MACs at 256² and 512²
  (``torch.utils.flop_counter.FlopCounterMode``, FLOPs/2) for the models in ``complexity.models``, beside Table 1.
- ``repeat``: the card's "80/20 random split × 3": one training per ``repeat.split_seeds`` (41, 42, 43), each
  scored on its own 20 %; ``per_repeat.csv`` and the mean and population variance over the repeats.
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
import json
import math
import time
from dataclasses import dataclass
from pathlib import Path

import lightning as L
import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset

from medrun.datasets import isic2018, montgomery
from medrun.errors import DataError, UsageError

from .. import training
from ..base import Pipeline
from ..report import learning_curves, markdown_table, paper_md
from ..tasks.segmentation import case_metrics, overlay_png, summarise, write_per_case

MEAN = np.array([0.485, 0.456, 0.406], np.float32) * 255
STD = np.array([0.229, 0.224, 0.225], np.float32) * 255

# Table 1 (ISIC 2018, 80/20): params as printed, FLOPs as printed, Dice %, IoU %.
PAPER_TABLE1 = [("U-Net", "9.04 M", "25.06 G", 84.84, 76.37), ("ResUNet++", "7.67 M", "19.31 G", 85.73, 77.12),
                ("UNeXt", "247.62 K", "0.10 G", 86.64, 78.71), ("SC-UNeXt", "243.63 K", "0.13 G", 87.12, 79.13)]
# Table 2 (5-fold DSC % on a 120-image ISIC subset): mean, variance as printed.
PAPER_TABLE2 = {"unext": (85.89, 0.14), "edge": (86.14, 0.03), "skip": (86.53, 0.13), "fuse": (86.17, 0.10),
                "edge+skip": (86.90, 0.05), "edge+fuse": (86.98, 0.20), "skip+fuse": (85.90, 0.07),
                "all": (87.29, 0.08)}


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
@dataclass
class Cases:
    ids: list[str]
    files: list[str]  # the image files, for data.lock.json and per_case.csv
    images: np.ndarray  # (N, S, S, 3) uint8
    masks: np.ndarray  # (N, S, S) uint8 in {0, 1}

    def take(self, idx) -> Cases:
        idx = list(idx)
        return Cases([self.ids[i] for i in idx], [self.files[i] for i in idx], self.images[idx], self.masks[idx])

    def __len__(self):
        return len(self.ids)


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


@torch.no_grad()
def predict_probs(net: torch.nn.Module, images: np.ndarray, batch_size: int) -> np.ndarray:
    net.eval()
    out = [torch.sigmoid(net(normalise(images[i:i + batch_size])))[:, 0].numpy()
           for i in range(0, len(images), batch_size)]
    return np.concatenate(out) if out else np.zeros((0, *images.shape[1:3]), np.float32)


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


class ScUnext(Pipeline):
    def build_model(self) -> torch.nn.Module:
        return build_net(self.m.model)

    # -- data ---------------------------------------------------------------------------------------------------
    def _root(self) -> Path:
        return self.ctx.data_roots[self.m.dataset.name]

    def read_cases(self) -> Cases:
        d, root = self.m.dataset, self._root()
        found = isic2018.read(root, d.part) if d.name == "isic2018" else montgomery.read(root)
        kept = [c for c in found if d.include is None or any(fnmatch.fnmatchcase(c.id, g) for g in d.include)]
        kept = kept[:d.limit] if d.limit else kept
        if not kept:
            raise DataError(f"no cases left in {root} after filtering ({len(found)} found; dataset.include="
                            f"{d.include}, dataset.limit={d.limit})", fix="widen -o dataset.include=[...] or drop it")
        images, masks = [], []
        for c in kept:
            if d.name == "isic2018":
                img, m = isic2018.load(c, d.img_size)
            else:
                gray, m = montgomery.load(c, d.img_size)
                img = np.repeat(np.round(gray * 255).astype(np.uint8)[..., None], 3, axis=-1)
            images.append(img)
            masks.append(m)
        self.ctx.log(f"{d.name}: {len(kept)} cases at {d.img_size}×{d.img_size}"
                     + (f" ({len(found) - len(kept)} filtered out)" if len(kept) < len(found) else ""))
        return Cases([c.id for c in kept], [str(c.image) for c in kept], np.stack(images), np.stack(masks))

    def splits(self, cases: Cases | None = None, seed: int | None = None, record: bool = True) -> dict[str, Cases]:
        from sklearn.model_selection import train_test_split

        d = self.m.dataset
        seed = d.split_seed if seed is None else seed
        cases = self.read_cases() if cases is None else cases
        n_val = math.ceil(d.val_fraction * len(cases))
        if len(cases) - n_val < 1 or n_val < 1:
            raise DataError(f"the training split is empty: {len(cases)} case(s) in {self._root()} after filtering "
                            f"(dataset.include={d.include}, dataset.limit={d.limit}) leave none for training "
                            f"after a {d.val_fraction:.0%} validation hold-out",
                            fix="widen -o dataset.include=[...], raise dataset.limit, or point at more data")
        tr, va = train_test_split(list(range(len(cases))), test_size=d.val_fraction, random_state=seed)
        splits = {"train": cases.take(sorted(tr)), "val": cases.take(sorted(va))}
        if record:
            self._record_splits(splits)
        return splits

    def _record_splits(self, splits: dict[str, Cases], merge: bool = False) -> None:
        lock = self.ctx.run.path / "data.lock.json"
        data = json.loads(lock.read_text())
        old = data.get("splits", {}) if merge else {}
        root = self._root().resolve()

        def rel(p: str) -> str:
            p = Path(p).resolve()
            return p.relative_to(root).as_posix() if p.is_relative_to(root) else str(p)

        data["splits"] = {**old, **{k: [rel(f) for f in v.files] for k, v in splits.items()}}
        self.ctx.run.write_json("data.lock.json", data)

    # -- training -----------------------------------------------------------------------------------------------
    def _fit(self, net, train: Cases, val: Cases, loss=None, *, ckpt: bool = True, resume: bool = True,
             epochs: int | None = None):
        t = self.m.train if epochs is None else self.m.train.model_copy(update={"epochs": epochs})
        module = LitSegmenter(net, loss or self.m.loss, t, self.m.eval.threshold)
        trainer = training.make_trainer(self.ctx, t.epochs, checkpoint=ckpt, logger=ckpt)
        train_dl = training.ResumableLoader(SegData(train, t.augment), t.batch_size, self.m.seed,
                                            num_workers=t.num_workers, persistent_workers=t.num_workers > 0)
        val_dl = DataLoader(SegData(val, False), batch_size=t.batch_size, shuffle=False)
        t0 = time.perf_counter()
        training.fit(trainer, module, train_dataloaders=train_dl, val_dataloaders=val_dl,
                     ckpt_path=training.resume_checkpoint(self.ctx.run) if resume else None)
        return module.net, (time.perf_counter() - t0) / max(1, t.epochs)

    def train(self) -> dict:
        splits = self.splits()
        self.ctx.log(f"train {len(splits['train'])} · val {len(splits['val'])} cases")
        net, secs = self._fit(self.build_model(), splits["train"], splits["val"])
        run = self.ctx.run
        training.save_weights(net, run.path / "checkpoints" / "model.safetensors", {"pipeline": "sc-unext"})
        learning_curves(run.path / "logs" / "metrics.csv", run.path / "figures" / "learning_curves.png")
        metrics = self._report(net, splits["val"], "val")
        metrics["secs_per_epoch"] = round(secs, 3)
        return metrics

    # -- evaluation ---------------------------------------------------------------------------------------------
    def _scores(self, net, cases: Cases) -> tuple[dict, list[dict], np.ndarray]:
        e, bs = self.m.eval, self.m.train.batch_size
        pred = predict_probs(net, cases.images, bs) > e.threshold
        rows = [{"case": cid, **case_metrics(p, g, ("dice", "iou")), "fg_pred": float(p.mean()), "fg_true": float(g.mean())}
                for cid, p, g in zip(cases.ids, pred, cases.masks, strict=True)]
        metrics = summarise(rows, ("dice", "iou"))
        metrics["dice_batch"], metrics["iou_batch"] = batch_pooled(pred, cases.masks, bs)
        metrics["dice_all_foreground"] = float(np.mean([case_metrics(np.ones_like(g), g, ("dice",))["dice"]
                                                        for g in cases.masks]))
        return metrics, rows, pred

    def _report(self, net, cases: Cases, split: str) -> dict:
        metrics, rows, pred = self._scores(net, cases)
        metrics["split"] = split
        metrics.update(training.count_params(net))
        run = self.ctx.run
        write_per_case(run, rows)
        for i in range(min(self.m.eval.overlays, len(cases))):
            overlay_png(cases.images[i], cases.masks[i], pred[i], run.path / "figures" / f"overlay_{cases.ids[i]}.png",
                        title=f"{cases.ids[i]}  Dice {rows[i]['dice']:.3f}")
        self.ctx.log(f"{split}: Dice {metrics['dice']:.4f}  IoU {metrics['iou']:.4f}  (per batch: Dice "
                     f"{metrics['dice_batch']:.4f}, IoU {metrics['iou_batch']:.4f}; all-foreground Dice "
                     f"{metrics['dice_all_foreground']:.4f})")
        run.write_text("paper.md", paper_md(self.ctx.spec, self.m, metrics, self.ctx, sections=[
            self._model_section(metrics), _table1(), _PAPER_NOTES]))
        return metrics

    def _model_section(self, metrics: dict) -> str:
        mm = self.m.model
        desc = (f"U-Net baseline (MONAI BasicUNet {tuple(mm.unet_features)})" if mm.arch == "unet" else
                f"UNeXt-{mm.size}" + "".join(f" +{k}" for k in ("cbam", "sc_skip", "pfm") if getattr(mm, k))
                + (f" (sc_f {mm.sc_f})" if mm.sc_skip else ""))
        n = metrics["params_total"]
        return (f"## This run\n\nModel: {desc}; loss: {self.m.loss.bce}·BCE + {self.m.loss.dice}·(1 − softDice)"
                f" + {self.m.loss.edge}·edge. Parameters: {n:,} ({n / 1024:.2f} K in the paper's 1024-units).\n\n"
                f"Split `{metrics['split']}`: {metrics['n_cases']} images. Dice averaged per batch as UNeXt's code: "
                f"{metrics['dice_batch']:.4f} (IoU {metrics['iou_batch']:.4f}). Predicting all foreground scores "
                f"Dice {metrics['dice_all_foreground']:.4f}.")

    def eval(self) -> dict:
        splits = self.splits()
        split = self.m.eval.split
        if split not in splits:
            raise UsageError(f"unknown split '{split}'", fix=f"use --split {' | '.join(splits)}")
        return self._report(self.trained_model(), splits[split], split)

    def predict(self) -> dict:
        from PIL import Image

        from medrun.artifacts import atomic_write
        from medrun.datasets.images import list_images

        net, size, bs = self.trained_model(), self.m.dataset.img_size, self.m.train.batch_size
        if self.m.predict.input:
            folder = Path(self.m.predict.input)
            if not folder.is_dir():
                raise DataError(f"predict.input folder not found: {folder}", fix="-o predict.input=/path/to/images")
            files = list_images(folder)
            if not files:
                raise DataError(f"no images in {folder}", fix="point predict.input at a folder of .jpg/.png files")
            originals = []
            for f in files:
                try:
                    with Image.open(f) as im:
                        originals.append(im.convert("RGB"))
                except OSError as e:
                    raise DataError(f"cannot read {f}: {e}", fix="replace or delete the file") from None
            images = np.stack([np.asarray(im.resize((size, size), Image.BILINEAR)) for im in originals])
            sizes = [im.size for im in originals]
            names = [f.stem for f in files]
        else:
            cases = self.splits()[self.m.eval.split]
            images, names, files = cases.images, cases.ids, [Path(f) for f in cases.files]
            sizes = [(size, size)] * len(names)
        probs = predict_probs(net, images, bs)
        rows = []
        for name, f, p, wh in zip(names, files, probs, sizes, strict=True):
            full = np.asarray(Image.fromarray(p.astype(np.float32)).resize(wh, Image.BILINEAR)) > self.m.eval.threshold
            import io

            buf = io.BytesIO()
            Image.fromarray(full.astype(np.uint8) * 255).save(buf, format="PNG")
            atomic_write(self.ctx.run.path / "predictions" / f"{name}_segmentation.png", buf.getvalue())
            rows.append({"file": str(f), "mask": f"predictions/{name}_segmentation.png", "width": wh[0], "height": wh[1],
                         "foreground_fraction": round(float(full.mean()), 6)})
        write_per_case(self.ctx.run, rows)
        self.ctx.log(f"predicted {len(rows)} masks into {self.ctx.run.path / 'predictions'}")
        return {"n": len(rows), "mean_foreground_fraction": float(np.mean([r["foreground_fraction"] for r in rows]))}

    # -- the paper's protocol: the random 80/20 split repeated -------------------------------------------------
    def repeat(self) -> dict:
        """Train and evaluate once per ``repeat.split_seeds`` (the card's "80/20 × 3"); mean and variance."""
        seeds = self.m.repeat.split_seeds
        cases = self.read_cases()
        rows = []
        for i, seed in enumerate(seeds):
            sp = self.splits(cases, seed, record=False)
            self._record_splits({f"{k}@{seed}": v for k, v in sp.items()}, merge=i > 0)
            L.seed_everything(self.m.seed, workers=True, verbose=False)
            self.ctx.log(f"split_seed {seed} ({i + 1}/{len(seeds)}): train {len(sp['train'])} · val {len(sp['val'])}")
            net, secs = self._fit(self.build_model(), sp["train"], sp["val"], ckpt=False, resume=False)
            training.save_weights(net, self.ctx.run.path / "checkpoints" / f"split{seed}.safetensors")
            m, _, _ = self._scores(net, sp["val"])
            rows.append({"split_seed": seed, "dice": m["dice"], "iou": m["iou"], "dice_batch": m["dice_batch"],
                         "iou_batch": m["iou_batch"], "n_val": m["n_cases"], "secs_per_epoch": round(secs, 3)})
        write_per_case(self.ctx.run, rows, "per_repeat.csv")
        metrics: dict = {"repeats": len(rows)}
        for k in ("dice", "iou", "dice_batch", "iou_batch"):
            v = np.array([r[k] for r in rows], dtype=float)
            metrics[k], metrics[f"{k}_var"] = float(v.mean()), float(v.var())
        metrics.update(training.count_params(self.build_model()))
        table = markdown_table(["split_seed", "Dice", "IoU", "Dice (per batch)", "IoU (per batch)", "val images"],
                               [[r["split_seed"], r["dice"], r["iou"], r["dice_batch"], r["iou_batch"], r["n_val"]]
                                for r in rows])
        self.ctx.run.write_text("paper.md", paper_md(self.ctx.spec, self.m, metrics, self.ctx, sections=[
            f"## {len(rows)} random 80/20 splits\n\nMean over splits in the table above; population variance "
            f"of Dice {metrics['dice_var']:.6f}, of IoU {metrics['iou_var']:.6f}.\n\n" + table, _table1(), _PAPER_NOTES]))
        return metrics

    # -- Table 2: ablation as manifest variants -----------------------------------------------------------------
    def _variant(self, overrides: dict):
        from .config import apply_variant

        return apply_variant(self.m, overrides)

    def ablate(self) -> dict:
        from sklearn.model_selection import KFold

        a, d = self.m.ablate, self.m.dataset
        if not a.variants:
            raise UsageError("ablate.variants is empty", fix="list variants (name: {model.pfm: false, …}) in the "
                                                               "manifest's ablate section")
        variants = {name: self._variant(ov) for name, ov in a.variants.items()}
        cases = self.read_cases()
        if a.subset and a.subset < len(cases):
            pick = np.random.default_rng(d.split_seed).choice(len(cases), a.subset, replace=False)
            cases = cases.take(sorted(pick.tolist()))
        if len(cases) < a.folds:
            raise DataError(f"{len(cases)} case(s) in {self._root()} after filtering cannot make {a.folds} folds",
                            fix="lower -o ablate.folds or widen dataset.include / dataset.limit")
        folds = list(KFold(a.folds, shuffle=True, random_state=d.split_seed).split(np.zeros(len(cases))))
        self.ctx.log(f"ablation: {len(variants)} variants × {a.folds} folds on {len(cases)} cases")
        per_fold = []
        for name, (mm, loss) in variants.items():
            for k, (tr, te) in enumerate(folds):
                L.seed_everything(self.m.seed, workers=True, verbose=False)
                net = build_net(mm)
                self.ctx.log(f"{name}, fold {k + 1}/{a.folds}: train {len(tr)} · test {len(te)}")
                net, secs = self._fit(net, cases.take(tr), cases.take(te), loss, ckpt=False, resume=False,
                                      epochs=a.epochs)
                if a.save_weights:
                    training.save_weights(net, self.ctx.run.path / "checkpoints" / f"{name}_fold{k + 1}.safetensors")
                m, _, _ = self._scores(net, cases.take(te))
                per_fold.append({"variant": name, "fold": k + 1, "dice": m["dice"], "iou": m["iou"],
                                 "dice_batch": m["dice_batch"], "params": training.count_params(net)["params_total"],
                                 "secs_per_epoch": round(secs, 3)})
        write_per_case(self.ctx.run, per_fold, "per_fold.csv")
        summary, table = {}, []
        for name in variants:
            rows = [r for r in per_fold if r["variant"] == name]
            dice = np.array([r["dice"] for r in rows]) * 100
            iou = np.array([r["iou"] for r in rows]) * 100
            paper = PAPER_TABLE2.get(name, (None, None))
            summary[name] = {"dice_mean": float(dice.mean()) / 100, "dice_var_pct2": float(dice.var()),
                             "dice_sd": float(dice.std(ddof=1)) / 100, "iou_mean": float(iou.mean()) / 100,
                             "params": rows[0]["params"]}
            table.append({"variant": name, "params": rows[0]["params"], "dice_mean_pct": round(float(dice.mean()), 2),
                          "dice_var_pct2": round(float(dice.var()), 3), "dice_sd_pct": round(float(dice.std(ddof=1)), 3),
                          "iou_mean_pct": round(float(iou.mean()), 2), "folds": ";".join(f"{v:.2f}" for v in dice),
                          "paper_dice_mean_pct": paper[0], "paper_dice_var": paper[1]})
        write_per_case(self.ctx.run, table, "ablation.csv")
        md = markdown_table(["variant", "params", "Dice % (mean)", "var", "sd", "IoU %", "folds", "paper Dice %", "paper var"],
                            [[r["variant"], r["params"], r["dice_mean_pct"], r["dice_var_pct2"], r["dice_sd_pct"],
                              r["iou_mean_pct"], r["folds"], r["paper_dice_mean_pct"], r["paper_dice_var"]] for r in table])
        overrides = "\n".join(f"- `{n}`: " + (", ".join(f"`{k}={v}`" for k, v in ov.items()) or "the manifest as is")
                              for n, ov in a.variants.items())
        # the headline row: the full model ("all") against Table 2's 87.29
        full = summary.get("all")
        m2 = self.m.model_copy(update={
            "eval": self.m.eval.model_copy(update={"metrics": []}),
            "paper": self.m.paper.model_copy(update={
                "table": "Table 2", "setting": "5-fold CV on a 120-image ISIC 2018 subset, full SC-UNeXt ('all')",
                "expect": {"dice": 0.8729} if full else {}}) if self.m.paper else None})
        head = {"dice": full["dice_mean"]} if full else {}
        self.ctx.run.write_text("paper.md", paper_md(self.ctx.spec, m2, head, self.ctx, title="SC-UNeXt ablation (Table 2)",
                                                     sections=[f"## Ablation, {a.folds}-fold CV on {len(cases)} cases\n\n"
                                                               "Variance is the population variance of the fold Dice "
                                                               "in %² (the paper's is not reproducible from its folds).\n\n"
                                                               + md, "## Variants\n\n" + overrides, _TABLE2_NOTES]))
        best = max(summary, key=lambda n: summary[n]["dice_mean"])
        return {"folds": a.folds, "n_cases": len(cases), "best_variant": best, "variants": summary}

    # -- complexity (Table 1's Params / FLOPs columns) --------------------------------------------------------------
    def complexity(self) -> dict:
        from torch.utils.flop_counter import FlopCounterMode

        c = self.m.complexity
        rows, out = [], {}
        for name in c.models:
            if name not in _COMPLEXITY_MODELS:
                raise UsageError(f"unknown complexity model '{name}'", fix=f"choose from {', '.join(_COMPLEXITY_MODELS)}")
            net = build_net(self.m.model.model_copy(update=_COMPLEXITY_MODELS[name])).eval()
            n = sum(p.numel() for p in net.parameters())
            row = {"model": name, "params": n, "params_k1024": round(n / 1024, 2)}
            for s in c.sizes:
                with FlopCounterMode(display=False) as counter, torch.no_grad():
                    net(torch.zeros(1, 3, s, s))
                row[f"gmac_{s}"] = round(counter.get_total_flops() / 2e9, 4)
            rows.append(row)
            out[name] = row
        write_per_case(self.ctx.run, rows, "complexity.csv")
        md = markdown_table(list(rows[0]), [list(r.values()) for r in rows])
        self.ctx.run.write_text("paper.md", paper_md(self.ctx.spec, self.m, {}, self.ctx, title="SC-UNeXt complexity",
                                                     sections=["## Measured (MACs = FLOPs/2, batch 1)\n\n" + md,
                                                               _table1(), _COMPLEXITY_NOTES]))
        self.ctx.log("\n".join(f"{r['model']}: {r['params']:,} params, "
                               + ", ".join(f"{r[f'gmac_{s}']} GMAC @{s}²" for s in c.sizes) for r in rows))
        return {"models": out}


_COMPLEXITY_MODELS = {
    "unext": {"arch": "unext", "size": "small", "cbam": False, "sc_skip": False, "pfm": False},
    "unext+cbam": {"arch": "unext", "size": "small", "cbam": True, "sc_skip": False, "pfm": False},
    "unext+skip": {"arch": "unext", "size": "small", "cbam": True, "sc_skip": True, "pfm": False},
    "unext+pfm": {"arch": "unext", "size": "small", "cbam": False, "sc_skip": False, "pfm": True},
    "sc-unext": {"arch": "unext", "size": "small", "cbam": True, "sc_skip": True, "pfm": True, "sc_f": "depthwise"},
    "sc-unext-full-f": {"arch": "unext", "size": "small", "cbam": True, "sc_skip": True, "pfm": True, "sc_f": "full"},
    "unext-paper": {"arch": "unext", "size": "paper", "cbam": False, "sc_skip": False, "pfm": False},
    "unet": {"arch": "unet"},
}


def _table1() -> str:
    return "## Paper, Table 1 (ISIC 2018, 80/20 split)\n\n" + markdown_table(
        ["method", "params", "FLOPs", "Dice %", "IoU %"], [[m, p, f, f"{d:.2f}", f"{i:.2f}"] for m, p, f, d, i in PAPER_TABLE1])


_PAPER_NOTES = """## Notes on the comparison

- The paper's IoU formula is wrong; IoU here is the Jaccard index TP/(TP+FP+FN) (card, ambiguity 1).
- The text's differences to the baselines do not match Table 1 (ambiguity 2); compare with the table.
- The paper reports SC-UNeXt smaller than UNeXt (243.63 K vs 247.62 K) although it adds modules; the measured
  count is reported as is (ambiguity 4). Its FLOPs correspond to 256² input although it trains at 512².
- The paper's split is one random 80/20 of the 2,594 training images, repeated 3 times; this run is one of them."""

_TABLE2_NOTES = """## Notes

- The paper's "ISIC 207" 120-image subset is not identified; this run draws `ablate.subset` cases at random.
- Table 2's means do not match its printed folds except for UNeXt and the full model, and the variances do not
  follow from the folds (card, ambiguity 3)."""

_COMPLEXITY_NOTES = """## Notes

- UNeXt-small has exactly 253,561 parameters = 247.62 K in 1024-units, the paper's UNeXt figure; its 0.10 "GFLOPs"
  are MACs at 256².
- SC-UNeXt adds CBAM 3,112 + SC depthwise f 1,440 + PFM 3,704 parameters (261,817 = 255.7 K), not fewer as printed."""
