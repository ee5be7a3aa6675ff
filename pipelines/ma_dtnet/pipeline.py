"""ma-dtnet, the method (card: shared/papers/ma-dtnet.md).

Data: BUSI (``benign/``, ``malignant/``; ``normal/`` is not used; several masks of an image are OR-ed) or UDIAT
(``original/``, ``GT/``, labels from ``DatasetB.xlsx`` or ``.csv``) → grey images resized to ``img_size``²
(bilinear; masks nearest), repeated to 3 channels and normalised with the ImageNet mean / sd (so a user's
torchvision ImageNet encoder sees what it was trained on) → stratified k-fold (``cv.folds`` = 5, shuffled,
``cv.seed``). Every mask is checked when the data is loaded, before any training: a mask of another size than its
image, or with values other than 0 / 255 (or 0 / 1), stops the run with a DataError naming the file.

Network: ``models.madtnet.DualTaskNet`` (ResNet34 encoder from MONAI, C-SMA on f1..f5, SMP-style U-Net decoder
(128, 64, 32, 16, 8), classifier CA → GAP → 128 → 32 → 1). 22,787,554 parameters at the card's settings against
the paper's 22.95 M (−0.7 %); the encoder is randomly initialised unless ``model.encoder_weights`` names a
torchvision ``resnet34`` state dict (ImageNet weights cannot be downloaded here).

Loss (Eq. 10): λ·(BCE + Dice)(seg) + (1 − λ)·BCE(cls), λ = 0.8, with MONAI ``DiceCELoss(sigmoid=True)`` (Dice
per image, averaged over the batch) and ``binary_cross_entropy_with_logits``. A segmentation-only variant uses the
segmentation loss alone, a classification-only one the BCE alone.

Training: Adam, lr 1e-4, batch 8, up to ``train.epochs`` (the paper's "up to 1000"); augmentation by random
horizontal and vertical flips (p 0.5 each) and a rotation within ±15° (p 0.5; MONAI ``RandFlipd`` /
``RandRotated``, nearest for masks, seeded from the manifest seed). Checkpoint selection (the card's assumption):
with ``train.select: best_val`` the weights of the epoch with the best validation Dice + accuracy are kept, the
validation set being ``cv.val_fraction`` (10 %) of the fold's training part, stratified; ``last`` keeps the last
epoch. The best weights travel in ``last.ckpt`` so a resumed run keeps them.

Evaluation, on the held-out fold (``cv.fold`` for train / eval / predict; every fold for ``cv``), threshold 0.5:
per image Dice, IoU, sensitivity (``recall``), specificity, precision and HD95 in pixels at ``img_size``²
(``pipelines.segmentation.case_metrics``; an empty prediction of a non-empty mask has HD95 = inf and is left out
of the mean, the count reported as ``hd95_nonfinite_cases``), averaged over images; classification with
malignant = positive: accuracy, F1 (of the malignant class) and AUROC. ``cv`` reports mean ± sd over folds,
the paper's protocol (Tables 1–2).

``ablate`` (Tables 3–4): ``ablate.variants`` maps a name to dotted ``model.*`` / ``train.*`` overrides of this
manifest (e.g. the small U-Net with CBAM on its skips); each variant is trained and evaluated on ``ablate.folds``
inside the one ablate run directory; ``ablation.csv`` and ``paper.md`` hold one row per variant beside the
card's Table 3 / 4 figures, and ``ablate.compare`` runs the Wilcoxon signed-rank test on per-image Dice
(UNet-C-SMA vs UNet-CBAM in the paper).

Choices where the card is silent, besides those above: BUSI ``normal`` images are never used (the paper's 647
images are benign + malignant); ``dataset.classes`` and ``dataset.exclude`` filter cases, and a filter that
leaves a fold without training cases is a DataError; predictions written by ``predict`` are resized back to each
image's own size (nearest). The card's ``--encoder-weights PATH`` is ``-o model.encoder_weights=PATH`` (the CLI is
shared, so no pipeline-specific flag). The fixture manifests depart from the card's smoke settings (30 epochs
instead of 3, batch 4, lr 1e-3, λ 0.5, no classifier dropout, no validation split): with the card's 3 epochs
nothing is learnt from 12 training images, and with λ 0.8 and dropout 0.5 the classifier stayed at chance.
The ablation variants' architecture choices (MHSA placement, parameter counts against Table 3) are in
``models/madtnet.py``.
"""

from __future__ import annotations

import json
import math
import time
import warnings
from pathlib import Path

import lightning as L
import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset

from medrun.datasets import busi, udiat
from medrun.datasets.images import list_images
from medrun.datasets.ultrasound import CLASSES, Case
from medrun.errors import DataError, UsageError
from medrun.metrics import classification as cm
from medrun.models.madtnet import DualTaskNet, load_torchvision_encoder

from .. import training
from ..base import Pipeline
from ..report import learning_curves, markdown_table, paper_md
from ..tasks import segmentation as seg
from ..tasks.classification import stratified_split, write_csv
from .config import CLS_METRICS, SEG_METRICS, MaDtnetManifest, variant

warnings.filterwarnings("ignore", message=".*`validation_step` but have no `val_dataloader`.*")

_MEAN = np.array([0.485, 0.456, 0.406], dtype=np.float32)[:, None, None]
_STD = np.array([0.229, 0.224, 0.225], dtype=np.float32)[:, None, None]


def to_input(gray: np.ndarray) -> np.ndarray:
    """(N, H, W) or (H, W) grey in [0, 1] → (N, 3, H, W) / (3, H, W) ImageNet-normalised float32."""
    g = gray[:, None] if gray.ndim == 3 else gray[None]
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
    """Eq. 10 loss; validation Dice (per image, threshold 0.5) + accuracy; keeps the best epoch's weights."""

    def __init__(self, net: DualTaskNet, lr: float, lam: float, select: str = "best_val"):
        super().__init__()
        from monai.losses import DiceCELoss

        self.net, self.lr, self.lam, self.select = net, lr, lam, select
        self.seg_loss = DiceCELoss(sigmoid=True)
        self.best_state, self.best_score, self.best_epoch = None, -math.inf, None
        self.epoch_losses: list[float] = []
        self._val: list = []
        self._losses: list = []

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
        total, parts, _, _ = self.loss(x, y, label)
        self.log("train_loss", total, on_step=False, on_epoch=True, prog_bar=True, batch_size=len(x))
        self._losses.append(float(total.detach()) * len(x))
        self._seen = getattr(self, "_seen", 0) + len(x)
        return total

    def on_train_epoch_end(self):
        if self._losses:
            self.epoch_losses.append(sum(self._losses) / max(1, self._seen))
        self._losses, self._seen = [], 0

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
        if self.trainer.sanity_checking or not self._val:
            self._val = []
            return
        score = 0.0
        if self._val[0][0] is not None:
            d = torch.cat([v[0] for v in self._val]).mean()
            self.log("val_dice", d)
            score += float(d)
        if self._val[0][1] is not None:
            a = torch.cat([v[1] for v in self._val]).mean()
            self.log("val_acc", a)
            score += float(a)
        self._val = []
        if self.select == "best_val" and score > self.best_score:
            self.best_score, self.best_epoch = score, self.current_epoch
            self.best_state = {k: v.detach().cpu().clone() for k, v in self.net.state_dict().items()}

    def on_save_checkpoint(self, checkpoint):
        checkpoint["ma_dtnet"] = {"best_state": self.best_state, "best_score": self.best_score,
                                  "best_epoch": self.best_epoch, "epoch_losses": self.epoch_losses}

    def on_load_checkpoint(self, checkpoint):
        saved = checkpoint.get("ma_dtnet", {})
        self.best_state, self.best_score = saved.get("best_state"), saved.get("best_score", -math.inf)
        self.best_epoch, self.epoch_losses = saved.get("best_epoch"), list(saved.get("epoch_losses", []))

    def configure_optimizers(self):
        return torch.optim.Adam(self.net.parameters(), lr=self.lr)


class MaDtnet(Pipeline):
    def build_model(self, m: MaDtnetManifest | None = None) -> DualTaskNet:
        mm = (m or self.m).model
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
        found = busi.read(self.root) if d.name == "busi" else udiat.read(self.root)
        excluded = set(d.exclude)
        cases = [c for c in found if CLASSES[c.label] in d.classes and c.id not in excluded]
        unknown = sorted(excluded - {c.id for c in found})
        if unknown:
            self.ctx.log(f"warning: dataset.exclude names {len(unknown)} id(s) not in {self.root}: {', '.join(unknown[:3])}")
        k = self.m.cv.folds
        if len(cases) < k:
            raise DataError(f"{self.root}: {len(cases)} of {len(found)} cases are left after filtering "
                            f"(dataset.classes {d.classes}, {len(excluded)} excluded ids), so a fold of cv.folds={k} "
                            "would have an empty training split",
                            fix="keep more cases (dataset.classes / dataset.exclude) or lower cv.folds")
        counts = {c: sum(1 for x in cases if CLASSES[x.label] == c) for c in CLASSES}
        self.ctx.log(f"{d.name}: {len(cases)} images — " + ", ".join(f"{c} {n}" for c, n in counts.items()))
        return cases

    def fold_split(self, cases: list[Case], fold: int, m: MaDtnetManifest | None = None) -> dict[str, list[Case]]:
        from sklearn.model_selection import StratifiedKFold

        m = m or self.m
        labels = np.array([c.label for c in cases])
        k = m.cv.folds
        if len(set(labels.tolist())) > 1 and np.bincount(labels).min() >= k:
            splitter = StratifiedKFold(n_splits=k, shuffle=True, random_state=m.cv.seed)
        else:  # a single class kept, or too few of one: plain shuffled k-fold
            from sklearn.model_selection import KFold

            splitter = KFold(n_splits=k, shuffle=True, random_state=m.cv.seed)
        tr, te = list(splitter.split(np.zeros(len(labels)), labels))[fold - 1]
        train, test = [cases[i] for i in tr], [cases[i] for i in te]
        val: list[Case] = []
        if m.cv.val_fraction > 0:
            try:
                train, val = stratified_split(train, m.cv.val_fraction, m.cv.seed)
            except ValueError:  # too few cases to stratify
                n_val = max(1, round(len(train) * m.cv.val_fraction))
                train, val = train[n_val:], train[:n_val]
        if not train:
            raise DataError(f"{self.root}: fold {fold} has an empty training split after filtering",
                            fix="keep more cases (dataset.classes / dataset.exclude), lower cv.folds or cv.val_fraction")
        return {"train": train, "val": val, "test": test}

    def load(self, cases: list[Case]):
        size = self.m.dataset.img_size
        if not cases:
            return np.zeros((0, size, size), np.float32), np.zeros((0, size, size), np.uint8), np.zeros(0, np.int64)
        pairs = [busi.load(c, size) for c in cases]
        return (np.stack([p[0] for p in pairs]), np.stack([p[1] for p in pairs]),
                np.array([c.label for c in cases], dtype=np.int64))

    def _record_splits(self, splits: dict) -> None:
        lock = self.ctx.run.path / "data.lock.json"
        data = json.loads(lock.read_text())
        root = self.root.resolve()

        def rel(p: Path) -> str:
            p = Path(p).resolve()
            return p.relative_to(root).as_posix() if p.is_relative_to(root) else str(p)

        data["splits"] = {k: [rel(c.image) for c in v] for k, v in splits.items()}
        self.ctx.run.write_json("data.lock.json", data)

    # -- training -------------------------------------------------------------------------------------------
    def _fit(self, m: MaDtnetManifest, train, val, *, ckpt: bool = True, tag: str = ""):
        t = m.train
        tr_img, tr_mask, tr_lab = self.load(train)
        module = LitDualTask(self.build_model(m), t.lr, t.lam, t.select if val else "last")
        trainer = training.make_trainer(self.ctx, t.epochs, checkpoint=ckpt, logger=ckpt)
        train_dl = DataLoader(SegSet(tr_img, tr_mask, tr_lab, t.augment, t.rotate_degrees, m.seed),
                              batch_size=t.batch_size, shuffle=True, num_workers=t.num_workers,
                              persistent_workers=t.num_workers > 0)
        val_dl = None
        if val:
            val_dl = DataLoader(SegSet(*self.load(val)), batch_size=t.batch_size, shuffle=False)
        t0 = time.perf_counter()
        training.fit(trainer, module, train_dataloaders=train_dl, val_dataloaders=val_dl,
                     ckpt_path=training.resume_checkpoint(self.ctx.run) if ckpt else None)
        secs = time.perf_counter() - t0
        info = {"secs_per_epoch": round(secs / max(1, t.epochs), 3),
                "train_images_per_sec": round(len(train) * t.epochs / max(secs, 1e-9), 2)}
        if module.epoch_losses:
            info["train_loss_first"], info["train_loss_last"] = module.epoch_losses[0], module.epoch_losses[-1]
        if module.best_state is not None:
            module.net.load_state_dict(module.best_state)
            info["best_epoch"] = int(module.best_epoch) + 1
            self.ctx.log(f"{tag}kept epoch {info['best_epoch']} (val Dice + accuracy {module.best_score:.4f})")
        return module.net, info

    def train(self) -> dict:
        cases = self.cases()
        splits = self.fold_split(cases, self.m.cv.fold)
        self._record_splits(splits)
        self.ctx.log(f"fold {self.m.cv.fold}/{self.m.cv.folds}: train {len(splits['train'])} · val {len(splits['val'])} "
                     f"· test {len(splits['test'])} images")
        net, info = self._fit(self.m, splits["train"], splits["val"])
        training.save_weights(net, self.ctx.run.path / "checkpoints" / "model.safetensors",
                              {"pipeline": "ma-dtnet", "fold": self.m.cv.fold})
        learning_curves(self.ctx.run.path / "logs" / "metrics.csv", self.ctx.run.path / "figures" / "learning_curves.png")
        metrics = self._report(net, splits["test"], "test")
        metrics.update(info)
        metrics.update(training.count_params(net))
        return metrics

    # -- evaluation -----------------------------------------------------------------------------------------
    @torch.no_grad()
    def infer(self, net: DualTaskNet, images: np.ndarray, batch_size: int = 8):
        """(seg probabilities N×H×W or None, malignant probabilities N or None)."""
        net.eval()
        segs, clss = [], []
        for i in range(0, len(images), batch_size):
            s, c = net(torch.from_numpy(to_input(images[i:i + batch_size])))
            if s is not None:
                segs.append(torch.sigmoid(s)[:, 0].numpy())
            if c is not None:
                clss.append(torch.sigmoid(c).numpy())
        return (np.concatenate(segs) if segs else None), (np.concatenate(clss) if clss else None)

    def evaluate(self, net: DualTaskNet, cases: list[Case], m: MaDtnetManifest | None = None):
        """(summary metrics, per-case rows, (images, masks, seg probs, cls probs))."""
        m = m or self.m
        images, masks, labels = self.load(cases)
        seg_p, cls_p = self.infer(net, images, m.train.batch_size)
        thr = m.eval.threshold
        rows = []
        for i, c in enumerate(cases):
            row = {"case": c.id, "label": CLASSES[c.label]}
            if seg_p is not None:
                row.update(seg.case_metrics(seg_p[i] >= thr, masks[i], SEG_METRICS))
            if cls_p is not None:
                row.update({"prob_malignant": float(cls_p[i]), "pred": CLASSES[int(cls_p[i] >= thr)]})
            rows.append(row)
        metrics: dict = {"n_cases": len(cases)}
        if seg_p is not None:
            metrics.update(seg.summarise(rows, SEG_METRICS))
        if cls_p is not None:
            pred = (cls_p >= thr).astype(int)
            metrics["accuracy"] = cm.accuracy(labels, pred)
            metrics["f1"] = cm.precision_recall_f1(labels, pred, 2)["per_class"]["f1"][1]
            metrics["auroc"] = cm.auroc(labels, cls_p)
            metrics["confusion_matrix"] = cm.confusion_matrix(labels, pred, 2).tolist()
        return metrics, rows, (images, masks, seg_p, cls_p)

    def _report(self, net, cases, split: str) -> dict:
        metrics, rows, (images, masks, seg_p, cls_p) = self.evaluate(net, cases)
        metrics["split"] = split
        metrics["fold"] = self.m.cv.fold
        run = self.ctx.run
        seg.write_per_case(run, rows)
        if seg_p is not None:
            for i in _mixed(cases, self.m.eval.overlays):
                title = f"{cases[i].id}  Dice {rows[i]['dice']:.3f}"
                if cls_p is not None:
                    title += f"  p(malignant) {cls_p[i]:.2f} ({CLASSES[cases[i].label]})"
                seg.overlay_png(images[i], masks[i], seg_p[i] >= self.m.eval.threshold,
                                run.path / "figures" / "overlays" / f"{_safe(cases[i].id)}.png", title)
        shown = "  ".join(f"{k} {metrics[k]:.4f}" for k in (*SEG_METRICS, *CLS_METRICS) if isinstance(metrics.get(k), float))
        self.ctx.log(f"{split} (fold {self.m.cv.fold}): {shown}")
        run.write_text("paper.md", paper_md(self.ctx.spec, self.m, metrics, self.ctx, sections=[
            "## Per class\n\n" + _per_class(rows),
            f"Held-out fold {self.m.cv.fold} of {self.m.cv.folds} ({len(cases)} images); the paper reports the mean ± sd "
            "over five folds (run `medrun cv ma-dtnet` for that protocol).", _PAPER_NOTES]))
        return metrics

    def _trained(self) -> DualTaskNet:
        return self.trained_model()

    def eval(self) -> dict:
        cases = self.cases()
        splits = self.fold_split(cases, self.m.cv.fold)
        split = self.m.eval.split
        if split not in splits or not splits[split]:
            raise UsageError(f"split '{split}' is empty or unknown", fix="use --split test | val | train")
        return self._report(self._trained(), splits[split], split)

    def predict(self) -> dict:
        from PIL import Image

        net = self._trained()
        size = self.m.dataset.img_size
        if self.m.predict.input:
            folder = Path(self.m.predict.input)
            if not folder.is_dir():
                raise DataError(f"predict.input folder not found: {folder}", fix="-o predict.input=/path/to/images")
            paths = [p for p in list_images(folder) if "_mask" not in p.stem]
            if not paths:
                raise DataError(f"no images in {folder}", fix="point predict.input at a folder of .png/.jpg files")
            cases = [Case(p.stem, p, (), -1) for p in paths]
        else:
            cases = self.fold_split(self.cases(), self.m.cv.fold)["test"]
        images, sizes = [], []
        for c in cases:
            im, _ = busi.load(c, size)
            with Image.open(c.image) as raw:
                sizes.append(raw.size)
            images.append(im)
        seg_p, cls_p = self.infer(net, np.stack(images), self.m.train.batch_size)
        rows = []
        thr = self.m.eval.threshold
        for i, c in enumerate(cases):
            row = {"file": str(c.image)}
            if seg_p is not None:
                mask = Image.fromarray(((seg_p[i] >= thr) * 255).astype(np.uint8)).resize(sizes[i], Image.NEAREST)
                out = self.ctx.run.path / "predictions" / f"{_safe(c.id)}_mask.png"
                out.parent.mkdir(parents=True, exist_ok=True)
                mask.save(out)
                row["mask"] = out.relative_to(self.ctx.run.path).as_posix()
                row["lesion_pixels"] = int((np.asarray(mask) > 0).sum())
            if cls_p is not None:
                row.update({"prob_malignant": round(float(cls_p[i]), 6), "pred": CLASSES[int(cls_p[i] >= thr)]})
            rows.append(row)
        write_csv(self.ctx.run.path / "per_case.csv", rows)
        n_mal = sum(r.get("pred") == "malignant" for r in rows)
        self.ctx.log(f"predicted {len(rows)} images: {n_mal} malignant")
        return {"n": len(rows), "predicted_malignant": n_mal}

    # -- k-fold cross-validation (Tables 1–2) ----------------------------------------------------------------
    def cv(self) -> dict:
        cases = self.cases()
        k = self.m.cv.folds
        per_fold, rows = [], []
        for f in range(1, k + 1):
            sp = self.fold_split(cases, f)
            self.ctx.log(f"fold {f}/{k}: train {len(sp['train'])} · val {len(sp['val'])} · test {len(sp['test'])}")
            net, info = self._fit(self.m, sp["train"], sp["val"], ckpt=False, tag=f"fold {f}: ")
            training.save_weights(net, self.ctx.run.path / "checkpoints" / f"fold{f}.safetensors")
            m, case_rows, _ = self.evaluate(net, sp["test"])
            per_fold.append({"fold": f, **{key: m.get(key) for key in _KEYS}, "secs_per_epoch": info["secs_per_epoch"]})
            rows += [{"fold": f, **r} for r in case_rows]
        seg.write_per_case(self.ctx.run, rows)
        write_csv(self.ctx.run.path / "per_fold.csv", per_fold)
        metrics: dict = {"folds": k, **_mean_sd(per_fold, (*_KEYS, "secs_per_epoch"))}
        metrics.update(training.count_params(net))
        table = markdown_table(["fold", *_KEYS], [[r["fold"], *[r[key] for key in _KEYS]] for r in per_fold])
        self.ctx.run.write_text("paper.md", paper_md(self.ctx.spec, self.m, metrics, self.ctx,
                                title=f"MA-DTNet, {k}-fold CV", sections=[
                                    "## Mean ± sd over folds\n\n" + _pm_table(metrics, self.m.paper),
                                    "## Folds\n\n" + table, _PAPER_NOTES]))
        return metrics

    # -- ablations as manifests (Tables 3–4) -----------------------------------------------------------------
    def ablate(self) -> dict:
        a = self.m.ablate
        names = a.run or list(a.variants)
        if not names:
            raise UsageError("ablate.variants is empty", fix="list the variants in the manifest's ablate section")
        cases = self.cases()
        folds = a.folds or list(range(1, self.m.cv.folds + 1))
        summary, all_rows, dice_by_variant = [], [], {}
        for name in names:
            vm = variant(self.m, name)
            per_fold = []
            dice_by_variant[name] = []
            for f in folds:
                sp = self.fold_split(cases, f, vm)
                self.ctx.log(f"{name}, fold {f}: train {len(sp['train'])} · val {len(sp['val'])} · test {len(sp['test'])}")
                net, info = self._fit(vm, sp["train"], sp["val"], ckpt=False, tag=f"{name}, fold {f}: ")
                training.save_weights(net, self.ctx.run.path / "checkpoints" / f"{_safe(name)}-fold{f}.safetensors")
                mets, rows, _ = self.evaluate(net, sp["test"], vm)
                per_fold.append({key: mets.get(key) for key in _KEYS})
                all_rows += [{"variant": name, "fold": f, **r} for r in rows]
                dice_by_variant[name] += [r.get("dice", math.nan) for r in rows]
            params = training.count_params(net)["params_total"]
            summary.append({"variant": name, "params": params, **_mean_sd(per_fold, _KEYS),
                            "overrides": json.dumps(a.variants[name], sort_keys=True)})
            self.ctx.log(f"{name}: " + "  ".join(f"{k} {summary[-1][k]:.4f}" for k in _KEYS
                                                 if isinstance(summary[-1].get(k), float) and not math.isnan(summary[-1][k])))
        seg.write_per_case(self.ctx.run, _same_columns(all_rows))  # seg-only and multi-task rows differ
        write_csv(self.ctx.run.path / "ablation.csv", _same_columns(summary))
        metrics: dict = {"variants": len(names), "folds": len(folds)}
        for s in summary:
            metrics[f"{s['variant']}/params"] = s["params"]
            for k in _KEYS:
                if s.get(k) is not None and not (isinstance(s[k], float) and math.isnan(s[k])):
                    metrics[f"{s['variant']}/{k}"] = s[k]
        sections = ["## Ablation table\n\n" + _ablation_table(summary, self.m.dataset.name, len(folds))]
        if a.compare:
            x, y = a.compare
            p = _wilcoxon(dice_by_variant.get(x, []), dice_by_variant.get(y, []))
            metrics[f"wilcoxon_dice_{x}_vs_{y}_p"] = p
            sections.append(f"Wilcoxon signed-rank test on per-image Dice, {x} vs {y} "
                            f"({len(dice_by_variant.get(x, []))} paired images): p = {fmt(p)} "
                            "(the paper marks UNet-C-SMA vs UNet-CBAM significant).")
        sections.append(_ABLATION_NOTES)
        self.ctx.run.write_text("paper.md", paper_md(self.ctx.spec, self.m, {}, self.ctx,
                                                     title=f"MA-DTNet ablations ({a.table})", sections=sections))
        return metrics


# -- helpers ------------------------------------------------------------------------------------------------
_KEYS = (*SEG_METRICS, *CLS_METRICS)


def _safe(name: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in name)


def fmt(v) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "—"
    return f"{v:.4f}" if isinstance(v, float) else str(v)


def _same_columns(rows: list[dict]) -> list[dict]:
    """Rows with the union of their keys (first-seen order), missing cells empty, for one CSV."""
    keys = list(dict.fromkeys(k for r in rows for k in r))
    return [{k: r.get(k, "") for k in keys} for r in rows]


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


def _mean_sd(per_fold: list[dict], keys) -> dict:
    """Mean and sd over folds (NaN folds left out); with one fold, the sd is 0."""
    out: dict = {}
    for k in keys:
        vals = np.array([r.get(k) if r.get(k) is not None else np.nan for r in per_fold], dtype=float)
        vals = vals[np.isfinite(vals)]
        if vals.size:
            out[k] = float(vals.mean())
            out[f"{k}_sd"] = float(vals.std(ddof=1)) if vals.size > 1 else 0.0
    return out


def _wilcoxon(a: list[float], b: list[float]) -> float:
    from scipy.stats import wilcoxon

    x, y = np.asarray(a, float), np.asarray(b, float)
    if x.size != y.size or x.size == 0:
        return math.nan
    ok = np.isfinite(x) & np.isfinite(y)
    if not ok.any() or np.allclose(x[ok], y[ok]):
        return math.nan if not ok.any() else 1.0
    return float(wilcoxon(x[ok], y[ok]).pvalue)


def _pm_table(metrics: dict, paper) -> str:
    expect = paper.expect if paper else {}
    rows = []
    for k in _KEYS:
        if k in metrics:
            rows.append([k, f"{metrics[k]:.4f} ± {metrics.get(k + '_sd', 0):.4f}",
                         fmt(expect.get(k)) + (f" ± {expect[k + '_sd']:.4f}" if k + "_sd" in expect else "")])
    return markdown_table(["metric", "this run (mean ± sd)", "paper"], rows)


# The card's Table 3 (attention on the small U-Net's skips, segmentation only) and Table 4 (multi-task ablation),
# Dice / IoU / precision / recall in %, HD95 in pixels, accuracy in %; keyed by the variant names the repository's
# manifests use. Parameter counts are Table 3's.
PAPER_ABLATION = {
    "udiat": {
        "unet": {"params": 1.81e6, "dice": 79.98, "iou": 70.48, "precision": 80.20, "recall": 83.14, "hd95": 24.72},
        "unet-cbam": {"params": 1.82e6, "dice": 82.55, "iou": 73.10, "precision": 82.26, "recall": 86.13, "hd95": 19.68},
        "unet-mhsa": {"params": 3.31e6, "dice": 84.97, "iou": 75.87, "precision": 83.13, "recall": 88.80, "hd95": 16.91},
        "unet-ca": {"params": 1.95e6, "dice": 83.48, "iou": 74.31, "precision": 82.49, "recall": 86.43, "hd95": 18.41},
        "unet-sma": {"params": 1.98e6, "dice": 83.50, "iou": 74.49, "precision": 83.98, "recall": 87.74, "hd95": 19.43},
        "unet-csma": {"params": 1.99e6, "dice": 85.14, "iou": 75.95, "precision": 85.35, "recall": 87.34, "hd95": 15.38},
        "unet-encoder": {"accuracy": 90.21, "f1": 84.62, "auroc": 0.8886},
        "es-mtl": {"dice": 80.88, "iou": 71.34, "precision": 81.56, "recall": 84.37, "hd95": 24.21, "accuracy": 90.81,
                   "f1": 84.23, "auroc": 0.8831},
        "es-mtl-csma": {"dice": 84.99, "iou": 75.79, "precision": 86.98, "recall": 86.41, "hd95": 16.98,
                        "accuracy": 93.26, "f1": 89.27, "auroc": 0.9175},
        "es-mtl-csma-ca": {"dice": 85.33, "iou": 76.13, "precision": 84.54, "recall": 88.66, "hd95": 16.39,
                           "accuracy": 93.26, "f1": 89.63, "auroc": 0.9445},
    },
    "busi": {
        "unet": {"params": 1.81e6, "dice": 74.79, "iou": 65.92, "precision": 78.86, "recall": 76.65, "hd95": 36.00},
        "unet-cbam": {"params": 1.82e6, "dice": 78.63, "iou": 69.88, "precision": 81.42, "recall": 80.32, "hd95": 27.17},
        "unet-mhsa": {"params": 3.31e6, "dice": 79.61, "iou": 70.72, "precision": 80.58, "recall": 83.01, "hd95": 27.90},
        "unet-ca": {"params": 1.95e6, "dice": 78.88, "iou": 70.02, "precision": 80.19, "recall": 82.02, "hd95": 29.45},
        "unet-sma": {"params": 1.98e6, "dice": 76.87, "iou": 67.97, "precision": 79.54, "recall": 79.52, "hd95": 31.96},
        "unet-csma": {"params": 1.99e6, "dice": 79.73, "iou": 71.00, "precision": 81.92, "recall": 81.49, "hd95": 26.29},
        "unet-encoder": {"accuracy": 89.18, "f1": 81.86, "auroc": 0.9205},
        "es-mtl": {"dice": 75.65, "iou": 66.67, "precision": 78.39, "recall": 79.04, "hd95": 36.20, "accuracy": 91.97,
                   "f1": 87.46, "auroc": 0.9429},
        "es-mtl-csma": {"dice": 79.56, "iou": 70.73, "precision": 81.72, "recall": 81.42, "hd95": 27.15,
                        "accuracy": 92.12, "f1": 87.54, "auroc": 0.9441},
        "es-mtl-csma-ca": {"dice": 79.42, "iou": 70.78, "precision": 82.35, "recall": 80.67, "hd95": 25.51,
                           "accuracy": 93.20, "f1": 89.14, "auroc": 0.9521},
    },
}
_PERCENT = {"dice", "iou", "precision", "recall", "accuracy", "f1"}


def _ablation_table(summary: list[dict], dataset: str, n_folds: int) -> str:
    paper = PAPER_ABLATION.get(dataset, {})
    keys = ("dice", "iou", "precision", "recall", "hd95", "accuracy", "f1", "auroc")
    header = ["variant", "params", "paper params"] + [f"{k} (run / paper)" for k in keys]
    rows = []
    for s in summary:
        ref = paper.get(s["variant"], {})
        cells = [s["variant"], f"{s['params'] / 1e6:.3f} M", f"{ref['params'] / 1e6:.2f} M" if "params" in ref else "—"]
        for k in keys:
            ours = s.get(k)
            if ours is not None and k in _PERCENT:
                ours = 100 * ours
            theirs = ref.get(k)
            ours_s = "—" if ours is None or (isinstance(ours, float) and math.isnan(ours)) else (
                f"{ours:.2f}" + (f" ± {100 * s[k + '_sd'] if k in _PERCENT else s[k + '_sd']:.2f}" if n_folds > 1 else ""))
            cells.append(f"{ours_s} / {theirs if theirs is not None else '—'}")
        rows.append(cells)
    return ("Dice, IoU, precision, recall, accuracy and F1 in %, HD95 in pixels, AUROC in 0–1; "
            + ("mean ± sd over folds. " if n_folds > 1 else "one held-out fold. ")
            + "Paper: the card's Table 3 (attention variants, segmentation only) and Table 4 (multi-task).\n\n"
            + markdown_table(header, rows))


_PAPER_NOTES = """## Notes on the comparison

- The paper's figures are mean ± sd over 5-fold CV with an ImageNet-pretrained ResNet34 trained "up to 1000
  epochs"; this pipeline starts from random weights unless `model.encoder_weights` is given.
- Checkpoint selection on validation Dice + accuracy (10 % of each fold's training part) is the card's assumption;
  the paper gives no rule.
- The UDIAT accuracy of MA-DTNet was lost in the text extraction of Table 1 (the card's "(lost)"); it is not
  compared."""

_ABLATION_NOTES = """## Notes

- Variants are dotted overrides of this run's manifest (`ablate.variants`), so every row is the same pipeline,
  data and folds with one component changed.
- Parameter counts: our small U-Net (MONAI BasicUNet blocks, 16…256, non-trainable upsampling) has 1,815,265
  parameters (paper 1.81 M) and +CBAM 1,818,377 (paper 1.82 M). With the card's block definitions CA, SMA and
  C-SMA add only 3–20 k parameters, not the paper's 0.14–0.18 M, and our MHSA on the three deepest maps adds
  0.35 M, not 1.5 M: the paper's implementation of those variants is not specified closely enough to match.
- The paper's UNet-MHSA UDIAT HD95 "316.91" is taken as 16.91 (the card's correction)."""

