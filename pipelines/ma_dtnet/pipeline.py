"""ma-dtnet, the method (card: docs/papers/ma-dtnet.md).

Data: BUSI (``benign/``, ``malignant/``; ``normal/`` unused; several masks of an image OR-ed), UDIAT
(``original/``, ``GT/``, labels from ``DatasetB.xlsx`` or ``.csv``) or GlaS (Table 6: ``datasets.glas``, colour
images, the official split train / Test A + Test B instead of folds, object Dice and object Hausdorff from
``metrics.objects`` per test part; ``cv`` refuses it) → grey images (GlaS: RGB) resized to ``img_size``²
(bilinear; masks nearest), repeated to 3 channels, ImageNet mean / sd (what a torchvision encoder expects) →
stratified k-fold (``dataset.folds`` = 5, shuffled, ``dataset.split_seed``). Every mask is checked on loading,
before training: another size than its image, or values other than 0 / 255 (or 0 / 1), is a DataError.

Network: ``models.madtnet.DualTaskNet`` (ResNet34 encoder from MONAI, C-SMA on f1..f5, SMP-style U-Net decoder
(128, 64, 32, 16, 8), classifier CA → GAP → 128 → 32 → 1). 22,787,554 parameters at the card's settings against
the paper's 22.95 M (−0.7 %); the encoder is randomly initialised unless ``model.encoder_weights`` names a
torchvision ``resnet34`` state dict (ImageNet weights cannot be downloaded here).

Loss (Eq. 10): λ·(BCE + Dice)(seg) + (1 − λ)·BCE(cls), λ = 0.8 (MONAI ``DiceCELoss(sigmoid=True)``, Dice per
image); a segmentation-only variant uses the first term alone, a classification-only one the BCE alone.

Training: Adam, lr 1e-4, batch 8, up to ``train.epochs`` (the paper's "up to 1000"); random h / v flips (p 0.5
each) and a rotation within ±15° (p 0.5; MONAI, nearest for masks, seeded). Checkpoint selection (the card's
assumption): with ``train.select: best_val`` Lightning's ``ModelCheckpoint`` keeps the epoch with the best
validation Dice + accuracy (``val_score``; ``checkpoints/best.ckpt``, whose weights become the run's; its state
travels in ``last.ckpt``, so a resumed run keeps it), validating on ``dataset.val_fraction`` (10 %) of the fold's
training part, stratified; ``last`` keeps the last epoch.

Evaluation, on the held-out fold (``dataset.fold``), threshold 0.5: per image Dice, IoU, sensitivity
(``recall``), specificity, precision and HD95 in pixels at ``img_size``² (an empty prediction of a lesion has HD95
= inf, left out of the mean and counted in ``hd95_nonfinite_cases``), averaged over images; malignant = positive
for accuracy, F1 and AUROC. ``predict`` writes ``predictions/<id>_mask.png`` (0/255) at each image's own size
(nearest) and p(malignant).

``cv`` (Tables 1–2, ``cv.py``) and ``ablate`` (Tables 3–4, ``ablate.py``) are sweeps of train runs: one per fold
(``dataset.fold``), and one per variant × fold (``model.variant`` applies ``ablate.variants[name]``, dotted
``model.*`` / ``train.*`` overrides), each reused when complete; summaries with mean ± sd (ddof 1) and the 95 %
t-interval, beside the paper's tables, and ``ablate.compare``'s Wilcoxon signed-rank test on per-image Dice.

Choices where the card is silent, besides those above: BUSI ``normal`` images are never used (the paper's 647
images are benign + malignant); ``dataset.classes`` and ``dataset.exclude`` filter cases, and a filter that
leaves a fold without training cases is a DataError. The card's ``--encoder-weights PATH`` is
``-o model.encoder_weights=PATH``. The fixture manifests depart from the card's smoke settings (30 epochs, batch 4,
lr 1e-3, λ 0.5, no classifier dropout, no validation split): with 3 epochs nothing is learnt from 12 training
images, and with λ 0.8 and dropout 0.5 the classifier stayed at chance. The ablation variants' architecture
choices (MHSA placement, parameter counts against Table 3) are in ``models/madtnet.py``.
"""

from __future__ import annotations

import math
import warnings
from pathlib import Path

import lightning as L
import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from medrun.datasets import busi, glas, udiat
from medrun.datasets.ultrasound import CLASSES, Case
from medrun.errors import DataError, UsageError
from medrun.metrics import classification as cm
from medrun.models.madtnet import DualTaskNet, load_torchvision_encoder

from .. import training
from ..report import markdown_table, paper_note, read_series
from ..tasks import segmentation as seg
from ..tasks.classification import stratified_split
from ..tasks.supervised import Supervised
from .config import CLS_METRICS, SEG_METRICS

warnings.filterwarnings("ignore", message=".*`validation_step` but have no `val_dataloader`.*")  # val_fraction 0

_MEAN = np.array([0.485, 0.456, 0.406], dtype=np.float32)[:, None, None]
_STD = np.array([0.229, 0.224, 0.225], dtype=np.float32)[:, None, None]
KEYS = (*SEG_METRICS, *CLS_METRICS)


def to_input(image: np.ndarray) -> np.ndarray:
    """(N, H, W) / (H, W) grey, or (N, H, W, 3) / (H, W, 3) colour (GlaS), in [0, 1] → (N, 3, H, W) / (3, H, W)
    ImageNet-normalised float32. Grey is repeated to three channels."""
    if image.shape[-1] == 3 and image.ndim in (3, 4):
        return ((np.moveaxis(image, -1, -3) - _MEAN) / _STD).astype(np.float32)
    g = image[:, None] if image.ndim == 3 else image[None]
    return ((np.repeat(g, 3, axis=-3) - _MEAN) / _STD).astype(np.float32)


class SegSet(Dataset):
    """Preloaded (image, mask, label) arrays → (3×H×W input, 1×H×W mask, label), optionally augmented."""

    def __init__(self, images: np.ndarray, masks: np.ndarray, labels: np.ndarray, augment: bool = False,
                 degrees: float = 15.0, seed: int = 0):
        self.images, self.masks, self.labels = images, masks, labels
        self.aug = None
        if augment:
            from monai.transforms import Compose, RandFlipd, RandRotated

            keys = ("image", "mask")
            self.aug = Compose([
                RandFlipd(keys, prob=0.5, spatial_axis=0),
                RandFlipd(keys, prob=0.5, spatial_axis=1),
                RandRotated(keys, range_x=math.radians(degrees), prob=0.5, mode=("bilinear", "nearest"),
                            padding_mode="zeros", keep_size=True),
            ]).set_random_state(seed)

    def __len__(self):
        return len(self.images)

    def __getitem__(self, i):
        x = torch.from_numpy(to_input(self.images[i]))
        y = torch.from_numpy(self.masks[i][None].astype(np.float32))
        if self.aug is not None:
            d = self.aug({"image": x, "mask": y})
            x, y = torch.as_tensor(d["image"]).float(), torch.as_tensor(d["mask"]).float()
        return x, y, torch.tensor(float(self.labels[i]))


class LitDualTask(L.LightningModule):
    """Eq. 10 loss; logs validation Dice (per image, threshold 0.5), accuracy and their sum ``val_score``, which
    a ``ModelCheckpoint`` monitors for ``train.select: best_val``."""

    def __init__(self, net: DualTaskNet, lr: float, lam: float):
        super().__init__()
        from monai.losses import DiceCELoss

        self.net, self.lr, self.lam = net, lr, lam
        self.seg_loss = DiceCELoss(sigmoid=True)
        self._val: list = []

    def loss(self, x, y, label):
        seg_logits, cls_logit = self.net(x)
        parts = {}
        if seg_logits is not None:
            parts["seg"] = self.seg_loss(seg_logits, y)
        if cls_logit is not None:
            parts["cls"] = F.binary_cross_entropy_with_logits(cls_logit, label)
        if len(parts) == 2:
            total = self.lam * parts["seg"] + (1 - self.lam) * parts["cls"]
        else:
            total = next(iter(parts.values()))
        return total, parts, seg_logits, cls_logit

    def training_step(self, batch, _):
        x, y, label = batch
        total, _, _, _ = self.loss(x, y, label)
        self.log("train_loss", total, on_step=False, on_epoch=True, prog_bar=True, batch_size=len(x))
        return total

    def validation_step(self, batch, _):
        x, y, label = batch
        total, _, seg_logits, cls_logit = self.loss(x, y, label)
        self.log("val_loss", total, on_step=False, on_epoch=True, batch_size=len(x))
        dice = None
        if seg_logits is not None:
            p, g = (seg_logits > 0).float(), (y > 0.5).float()
            inter, sums = (p * g).sum((1, 2, 3)), p.sum((1, 2, 3)) + g.sum((1, 2, 3))
            dice = torch.where(sums > 0, 2 * inter / sums.clamp_min(1e-8), torch.ones_like(sums))
        correct = ((cls_logit > 0).float() == label).float() if cls_logit is not None else None
        self._val.append((dice, correct))

    def on_validation_epoch_end(self):
        score, parts, self._val = 0.0, self._val, []
        for i, name in ((0, "val_dice"), (1, "val_acc")):
            if parts and parts[0][i] is not None:
                v = torch.cat([p[i] for p in parts]).mean()
                self.log(name, v)
                score += float(v)
        if parts:
            self.log("val_score", score)

    def configure_optimizers(self):
        return torch.optim.Adam(self.net.parameters(), lr=self.lr)


class MaDtnet(Supervised):
    report_split = "test"  # the held-out fold

    def build_model(self) -> DualTaskNet:
        mm = self.m.model
        net = DualTaskNet(mm.encoder, 3, mm.skip_attention, mm.cls_head, mm.seg_head, mm.decoder_widths,
                          mm.unet_features, mm.rates, mm.se_size, mm.dropout)
        if mm.encoder_weights:
            if mm.encoder != "resnet34":
                raise UsageError("model.encoder_weights needs model.encoder resnet34",
                                 fix="drop model.encoder_weights for the small U-Net")
            try:
                load_torchvision_encoder(net.encoder, training.load_state(Path(mm.encoder_weights)))
            except ValueError as e:
                raise UsageError(f"{mm.encoder_weights}: {e}", fix="pass torchvision's resnet34 state dict") from None
        return net

    # -- data -----------------------------------------------------------------------------------------------
    @property
    def root(self) -> Path:
        return self.ctx.data_roots[self.m.dataset.name]

    def cases(self) -> list[Case]:
        d = self.m.dataset
        found = {"busi": busi.read, "udiat": udiat.read, "glas": glas.read}[d.name](self.root)
        excluded = set(d.exclude)
        cases = [c for c in found if CLASSES[c.label] in d.classes and c.id not in excluded]
        unknown = sorted(excluded - {c.id for c in found})
        if unknown:
            self.ctx.log(f"warning: dataset.exclude names {len(unknown)} id(s) not in {self.root}: "
                         f"{', '.join(unknown[:3])}")
        if len(cases) < d.folds:
            raise DataError(f"{self.root}: {len(cases)} of {len(found)} cases are left after filtering "
                            f"(dataset.classes {d.classes}, {len(excluded)} excluded ids), so a fold of "
                            f"dataset.folds={d.folds} would have an empty training split",
                            fix="keep more cases (dataset.classes / dataset.exclude) or lower dataset.folds")
        counts = {c: sum(1 for x in cases if CLASSES[x.label] == c) for c in CLASSES}
        self.ctx.log(f"{d.name}: {len(cases)} images — " + ", ".join(f"{c} {n}" for c, n in counts.items()))
        return cases

    def splits(self) -> dict[str, list[Case]]:
        """The held-out ``dataset.fold`` (stratified k-fold) as test; ``val_fraction`` of the rest as val."""
        from sklearn.model_selection import KFold, StratifiedKFold

        d, cases = self.m.dataset, self.cases()
        labels = np.array([c.label for c in cases])
        if d.name == "glas":  # the official split: train_* to train on, testA_* and testB_* held out
            return self._record(d, [c for c in cases if glas.part_of(c.id) == "train"],
                                [c for c in cases if glas.part_of(c.id) != "train"])
        if len(set(labels.tolist())) > 1 and np.bincount(labels).min() >= d.folds:
            splitter = StratifiedKFold(n_splits=d.folds, shuffle=True, random_state=d.split_seed)
        else:  # a single class kept, or too few of one: plain shuffled k-fold
            splitter = KFold(n_splits=d.folds, shuffle=True, random_state=d.split_seed)
        tr, te = list(splitter.split(np.zeros(len(labels)), labels))[d.fold - 1]
        return self._record(d, [cases[i] for i in tr], [cases[i] for i in te])

    def _record(self, d, train: list[Case], test: list[Case]) -> dict[str, list[Case]]:
        """``val_fraction`` of the training part as val (stratified where possible); the splits recorded."""
        val: list[Case] = []
        if d.val_fraction > 0:
            try:
                train, val = stratified_split(train, d.val_fraction, d.split_seed)
            except ValueError:  # too few cases to stratify
                n_val = max(1, round(len(train) * d.val_fraction))
                train, val = train[n_val:], train[:n_val]
        if not train:
            raise DataError(f"{self.root}: fold {d.fold} has an empty training split after filtering",
                            fix="keep more cases (dataset.classes / dataset.exclude), lower dataset.folds or "
                                "dataset.val_fraction")
        splits = {"train": train, "val": val, "test": test}
        self.ctx.record_splits(splits)
        where = "official split" if d.name == "glas" else f"fold {d.fold}/{d.folds}"
        self.ctx.log(f"{where}: " + " · ".join(f"{k} {len(v)}" for k, v in splits.items()))
        return splits

    def split_of(self, splits: dict, name: str | None = None):
        data = super().split_of(splits, name)
        if not data:
            raise UsageError(f"split '{name or self.m.eval.split}' is empty",
                             fix="use --split test (a val split needs dataset.val_fraction > 0)")
        return data

    def load(self, cases: list[Case]):
        size = self.m.dataset.img_size
        if not cases:
            return np.zeros((0, size, size), np.float32), np.zeros((0, size, size), np.uint8), np.zeros(0, np.int64)
        pairs = [(glas if self.m.dataset.name == "glas" else busi).load(c, size) for c in cases]
        return (np.stack([p[0] for p in pairs]), np.stack([p[1] for p in pairs]),
                np.array([c.label for c in cases], dtype=np.int64))

    # -- training: the template's, plus the best validation epoch through Lightning's ModelCheckpoint ------------
    def dataset(self, cases, train: bool):
        t = self.m.train
        return SegSet(*self.load(cases), augment=train and t.augment, degrees=t.rotate_degrees, seed=self.m.seed)

    def val_loader(self, splits: dict):
        return super().val_loader(splits) if splits.get("val") else None

    def lit_module(self, net):
        return LitDualTask(net, self.m.train.lr, self.m.train.lam)

    def trainer_kwargs(self) -> dict:
        return {"callbacks": [self._best]} if self._best is not None else {}

    def fit(self, splits: dict, net=None, *, checkpoint: bool = True):
        self._best = None
        if self.m.train.select == "best_val" and splits.get("val"):
            self._best = training.ModelCheckpoint(
                dirpath=self.ctx.path / "checkpoints", filename="best", monitor="val_score", mode="max",
                save_top_k=1, save_weights_only=True, enable_version_counter=False)
        net, secs = super().fit(splits, net, checkpoint=checkpoint)
        self.fit_info = {"train_images_per_sec": round(len(splits["train"]) / max(secs, 1e-9), 2)}
        losses = [v for _, v in read_series(self.ctx.path / "logs" / "metrics.csv").get("train_loss", [])]
        self.fit_info.update({"train_loss_first": losses[0], "train_loss_last": losses[-1]} if losses else {})
        if self._best is not None and self._best.best_model_path:
            best = Path(self._best.best_model_path)
            training.load_weights(net, best, prefix="net.")
            epoch = torch.load(best, map_location="cpu", weights_only=True)["epoch"]
            self.fit_info["best_epoch"] = int(epoch) + 1
            self.ctx.log(f"kept epoch {epoch + 1} (val Dice + accuracy {float(self._best.best_model_score):.4f})")
        return net, secs

    def train(self) -> dict:
        return {**super().train(), **self.fit_info}

    def weights_metadata(self) -> dict:
        return {"pipeline": "ma-dtnet", "fold": self.m.dataset.fold}

    # -- evaluation -----------------------------------------------------------------------------------------
    def infer(self, net: DualTaskNet, images: np.ndarray):
        """(seg probabilities N×H×W or None, malignant probabilities N or None), through the predictor."""
        bs, net = self.m.train.batch_size, self.predictor.setup(net)
        segs, clss = [], []
        for i in range(0, len(images), bs):
            s, c = self.predictor(net, torch.from_numpy(to_input(images[i:i + bs])))
            if s is not None:
                segs.append(torch.sigmoid(s)[:, 0].numpy())
            if c is not None:
                clss.append(torch.sigmoid(c).numpy())
        return (np.concatenate(segs) if segs else None), (np.concatenate(clss) if clss else None)

    def evaluate(self, net: DualTaskNet, cases: list[Case]):
        images, masks, labels = self.load(cases)
        seg_p, cls_p = self.infer(net, images)
        thr = self.m.eval.threshold
        rows = []
        for i, c in enumerate(cases):
            row = {"case": c.id, "label": CLASSES[c.label]}
            if seg_p is not None:
                row.update(seg.case_metrics(seg_p[i] >= thr, masks[i], SEG_METRICS))
            if cls_p is not None:
                row.update({"prob_malignant": float(cls_p[i]), "pred": CLASSES[int(cls_p[i] >= thr)]})
            rows.append(row)
        metrics: dict = {"n_cases": len(cases), "fold": self.m.dataset.fold}
        if seg_p is not None:
            metrics.update(seg.summarise(rows, SEG_METRICS))
            if self.m.dataset.name == "glas":
                metrics.update(self.object_metrics(cases, seg_p >= thr, rows))
        if cls_p is not None:
            pred = (cls_p >= thr).astype(int)
            metrics["accuracy"] = cm.accuracy(labels, pred)
            metrics["f1"] = cm.precision_recall_f1(labels, pred, 2)["per_class"]["f1"][1]
            metrics["auroc"] = cm.auroc(labels, cls_p)
            metrics["confusion_matrix"] = cm.confusion_matrix(labels, pred, 2).tolist()
        self._shown = (images, masks, seg_p, cls_p, rows)
        return metrics, rows

    def object_metrics(self, cases: list[Case], preds: np.ndarray, rows: list[dict]) -> dict:
        """GlaS (Table 6): object Dice and object Hausdorff (``metrics.objects``, the challenge's definitions) per
        image at ``img_size``², the prediction's 8-connected components against the annotated glands; their means
        over Test A, Test B and both. An image with no predicted gland has object Hausdorff inf: left out of the
        mean and counted in ``object_hausdorff_nonfinite_cases``, as HD95."""
        from medrun.metrics.objects import object_dice, object_hausdorff

        size = self.m.dataset.img_size
        for c, pred, row in zip(cases, preds, rows, strict=True):
            truth = glas.load(c, size, instances=True)[1]
            row.update({"part": glas.part_of(c.id), "object_dice": object_dice(pred, truth),
                        "object_hausdorff": object_hausdorff(pred, truth)})
        out: dict = {}
        for part in ("testA", "testB", None):
            sub = [r for r in rows if part in (None, r["part"])]
            if not sub:
                continue
            tag = f"_{part}" if part else ""
            finite = [r["object_hausdorff"] for r in sub if math.isfinite(r["object_hausdorff"])]
            out[f"object_dice{tag}"] = float(np.mean([r["object_dice"] for r in sub]))
            out[f"object_hausdorff{tag}"] = float(np.mean(finite)) if finite else math.nan
            out[f"object_hausdorff{tag}_nonfinite_cases"] = len(sub) - len(finite)
        return out

    def figures(self, net, cases, metrics, rows, split):
        images, masks, seg_p, cls_p, _ = self._shown
        if seg_p is None:
            return
        for i in _mixed(cases, self.m.eval.overlays):
            title = f"{cases[i].id}  Dice {rows[i]['dice']:.3f}"
            if cls_p is not None:
                title += f"  p(malignant) {cls_p[i]:.2f} ({CLASSES[cases[i].label]})"
            seg.overlay(self.ctx, f"overlays/{_safe(cases[i].id)}", images[i], masks[i],
                        seg_p[i] >= self.m.eval.threshold, title)

    def summary_line(self, split, metrics):
        shown = "  ".join(f"{k} {metrics[k]:.4f}" for k in KEYS if isinstance(metrics.get(k), float))
        return f"{split} (fold {self.m.dataset.fold}): {shown}"

    def paper_sections(self, metrics):
        d = self.m.dataset
        if d.name == "glas":
            return ["## Per class\n\n" + _per_class(self._shown[-1]), _glas_table(metrics),
                    paper_note(self.ctx.spec, "glas")]
        return ["## Per class\n\n" + _per_class(self._shown[-1]),
                f"Held-out fold {d.fold} of {d.folds} ({metrics['n_cases']} images); the paper reports the mean ± sd "
                "over five folds (run `medrun cv ma-dtnet` for that protocol).",
                paper_note(self.ctx.spec, "comparison")]

    # -- predict: masks at each image's own size and p(malignant) ---------------------------------------------
    def predict_items(self):
        if self.m.predict.input:
            paths = [p for p in self.ctx.predict_inputs(self.m.predict.input)
                     if "_mask" not in p.stem and not p.stem.endswith("_anno")]  # BUSI masks, GlaS annotations
            if not paths:
                raise DataError(f"no images in {self.m.predict.input} besides masks (*_mask*)",
                                fix="point predict.input at the images, not their masks")
            return [Case(p.stem, p, (), -1) for p in paths]
        return super().predict_items()

    def predict_rows(self, net, cases) -> list[dict]:
        from medrun.datasets.images import open_image

        images, sizes = [], []
        for c in cases:
            images.append((glas if self.m.dataset.name == "glas" else busi).load(c, self.m.dataset.img_size)[0])
            with open_image(c.image, decode=False) as raw:
                sizes.append(raw.size)
        seg_p, cls_p = self.infer(net, np.stack(images))
        thr, rows = self.m.eval.threshold, []
        for i, c in enumerate(cases):
            row = {"file": str(c.image)}
            if seg_p is not None:
                row["mask"] = rel = f"predictions/{_safe(c.id)}_mask.png"
                row["lesion_pixels"] = int(seg.write_mask(self.ctx, rel, seg_p[i] >= thr, sizes[i]).sum())
            if cls_p is not None:
                row.update({"prob_malignant": round(float(cls_p[i]), 6), "pred": CLASSES[int(cls_p[i] >= thr)]})
            rows.append(row)
        return rows

    def predict_summary(self, rows):
        n_mal = sum(r.get("pred") == "malignant" for r in rows)
        self.ctx.log(f"predicted {len(rows)} images: {n_mal} malignant")
        return {"predicted_malignant": n_mal}

    # -- export -----------------------------------------------------------------------------------------------
    def bundle_parts(self) -> dict:
        """A MONAI bundle: the network, eval's preprocessing (8 bits by bit depth, grey, bilinear resize to
        img_size, /255, three channels, ImageNet mean / sd; GlaS: RGB instead of grey) and per file p(malignant) and
        the mask at img_size."""
        mm, size, thr = self.m.model, self.m.dataset.img_size, self.m.eval.threshold
        rgb = self.m.dataset.name == "glas"
        keys = {"encoder", "skip_attention", "cls_head", "seg_head", "decoder_widths", "unet_features", "rates",
                "se_size", "dropout"}
        mask = seg.mask_entry(f"torch.sigmoid(o[0])[0, 0].cpu() >= {thr}")
        predict = (f"(lambda o: {{**({mask} if o[0] is not None else {{}}), **({{'prob_malignant': "
                   "float(torch.sigmoid(o[1])[0])} if o[1] is not None else {})})(@network(x))")
        return seg.bundle_parts(
            task="breast-ultrasound lesion segmentation and benign / malignant classification of one image",
            network_def={"_target_": "medrun.models.create", "name": "madtnet", "in_channels": 3,
                         **mm.model_dump(mode="json", include=keys)},
            preprocessing=[
                {"_target_": "LoadImage", "reader": "PILReader", "reverse_indexing": False, "image_only": True,
                 "converter": f"$lambda im: {seg.TO_8BIT}(im).convert('{'RGB' if rgb else 'L'}').resize(({size}, "
                              f"{size}), PIL.Image.BILINEAR)"},
                {"_target_": "EnsureChannelFirst", "channel_dim": -1 if rgb else "no_channel"},
                {"_target_": "EnsureType", "dtype": "$torch.float32", "track_meta": False},
                {"_target_": "Lambda", "func": "$lambda x: x / 255.0"},
                *([] if rgb else [{"_target_": "RepeatChannel", "repeats": 3}]),
                {"_target_": "NormalizeIntensity", "subtrahend": _MEAN.ravel().tolist(),
                 "divisor": _STD.ravel().tolist(), "channel_wise": True}],
            predict=predict, in_channels=3, size=size, labels={0: "background", 1: "lesion"}, classes=CLASSES,
            modality="colon histology" if rgb else "breast ultrasound",
            readme=f"Input: one {'H&E histology' if rgb else 'ultrasound'} image per file (any size; "
                   f"{'RGB' if rgb else 'grey'}, resized to {size}×{size}). Output, per "
                   f"file: p(malignant) and the lesion mask at {size}×{size} (rows of 0/1, σ(logit) ≥ {thr}).")

    # -- stages beyond train/eval/predict ---------------------------------------------------------------------
    def cv(self) -> dict:
        from .cv import cv

        if self.m.dataset.name == "glas":
            raise UsageError("GlaS has an official split (train / Test A / Test B), so there are no folds to "
                             "cross-validate", fix="run `medrun train ma-dtnet --dataset glas`, which scores both "
                                                  "test parts")
        return cv(self)

    def ablate(self) -> dict:
        from .ablate import ablate

        return ablate(self)


# -- helpers ------------------------------------------------------------------------------------------------
def _safe(name: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in name)


def _mixed(cases: list[Case], n: int) -> list[int]:
    """Indices of up to n cases, benign and malignant alternating (so the overlays show both classes)."""
    by = [[i for i, c in enumerate(cases) if c.label == k] for k in (0, 1)]
    out = [i for pair in zip(*by, strict=False) for i in pair] + by[0][len(by[1]):] + by[1][len(by[0]):]
    return out[:n]


def _per_class(rows: list[dict]) -> str:
    """Mean Dice / IoU / HD95 and the share classified correctly, per true class."""
    out = []
    for cls in CLASSES:
        sub = [r for r in rows if r["label"] == cls]
        if not sub:
            continue
        cells = [cls, len(sub)]
        for k in ("dice", "iou", "hd95"):
            vals = [r[k] for r in sub if k in r and math.isfinite(r[k])]
            cells.append(float(np.mean(vals)) if vals else None)
        cells.append(float(np.mean([r["pred"] == cls for r in sub])) if "pred" in sub[0] else None)
        out.append(cells)
    return markdown_table(["class", "images", "dice", "iou", "hd95", "classified correctly"], out)


def _glas_table(metrics: dict) -> str:
    """Table 6's GlaS columns: object Dice (%) and object Hausdorff (pixels) on Test A / Test B, ours beside the
    paper's (MA-DTNet and MTUNet), and accuracy / F1 over both parts."""
    def cell(key, scale=1.0):
        v = metrics.get(key)
        return "—" if v is None or not math.isfinite(v) else f"{scale * v:.2f}"

    rows = [["this run", f"{cell('object_dice_testA', 100)} / {cell('object_dice_testB', 100)}",
             f"{cell('object_hausdorff_testA')} / {cell('object_hausdorff_testB')}", cell("f1", 100),
             cell("accuracy", 100)],
            ["MA-DTNet (paper)", "92.99 / 91.51", "19.89 / 21.08", "100.00", "100.00"],
            ["MTUNet (paper)", "95.60 / 90.90", "23.17 / 71.53", "97.77", "97.50"]]
    return ("## GlaS, Table 6 (Test A / Test B)\n\n" + markdown_table(
        ["model", "object Dice % (A / B)", "object Hausdorff px (A / B)", "F1 %", "accuracy %"], rows))
