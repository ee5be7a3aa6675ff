"""cmu-net, the method (card: shared/papers/cmu-net.md).

Data: an nnU-Net v2 raw dataset (``datasets/nnunet_raw.py``): ``imagesTr``/``labelsTr`` (+ ``imagesTs``/``labelsTs``).
Labels are checked against the image (same shape) and against dataset.json's label values. Every image is
z-scored on its own (nnU-Net's per-image normalisation for non-CT data). Split: when ``labelsTs`` holds labels,
imagesTr trains and the labelled imagesTs cases test; otherwise a fixed 80/20 train/test split of imagesTr with
seed 0 (the card's option "a fixed 80/20 train/test split (seed 0)"; not nnU-Net's 5-fold CV). ``dataset.cases``
(regex) and ``dataset.exclude`` filter the cases first. The split is recorded in ``data.lock.json`` and, in nnU-Net's
``splits_final.json`` form, in the run directory (never in the user's data folder, whose content is fingerprinted).

Training (nnU-Net v2 trainer as the card describes it): ``train.epochs`` × ``train.iters_per_epoch`` (150 × 250)
iterations of ``batch_size`` random ``patch_size``² crops (zero-padded when an image is smaller) with random
horizontal/vertical flips, random rotation (p 0.2, any angle) and 2D elastic deformation (p 0.2, MONAI
``Rand2DElastic``). Loss: soft Dice (foreground, batch Dice, smooth 1e-5) + cross-entropy, weights 1:1 (MONAI
``DiceCELoss``, nnU-Net's ``DC_and_CE``), with deep supervision over the decoder heads: weights 1, 1/2, 1/4, …,
lowest resolution dropped, normalised; targets downsampled by nearest neighbour. SGD momentum 0.99, Nesterov,
weight decay 3e-5, lr 0.01 annealed by a per-iteration cosine to 1e-5; gradient norm clipped at 12 (nnU-Net).

Network: ``models/cmunet.py`` (5 stages 32–512, each 2 × conv-IN-LeakyReLU → MambaLayer → CBAM, max-pool,
transposed-conv decoder, deep-supervision heads). ``model.name`` picks the ablation variant (``unet``, ``umamba``
= U-Net + Mamba, ``unet-cbam``, ``cmunet``) on one code path, or a MONAI baseline (``segresnet``, ``unetr``,
``swinunetr``, 2D, one output, no deep supervision). The selective scan defaults to ``scan: ssd`` with T = 64
(``models/selective_scan.py``: every chunk at once, activation checkpointing per group of chunks), the fastest
pure-PyTorch scan on a CPU; on a CUDA machine with ``mamba_ssm`` installed, ``-o model.scan=auto`` uses its kernel.

Evaluation: sliding-window inference (MONAI, roi = the training patch, Gaussian weighting, overlap 0.5; an image
smaller than the patch is padded), argmax. Per image: F1 = Dice = 2TP/(2TP+FP+FN) and IoU = TP/(TP+FP+FN) of the
foreground, 2-class mIoU = mean of foreground and background IoU, precision, recall; the run reports per-image
means (the card: "average per image"; the paper's IoU is inconsistent with its F1, see paper.md).

Morphology (card, Fig. 5–6): connected components (8-connectivity, scikit-image ``label``/``regionprops``) of the
ground truth and of the prediction, classed by area: dot < 100 px, rod 100–500 px, network > 500 px (500 itself
counts as network); count and total area per class. The train stage reports it for its test split; the
``morphology`` stage does it for any split of a finished train run and draws a bar chart. On the fixture the
generator's drawn counts (``fixture_truth.json``) are checked: ``morph_truth_exact`` is 1 when every case matches.

Ablation (Table 5) is a manifest list, not a code fork: the ``ablate`` stage trains ``ablate.variants`` one
after another with the manifest's settings (only ``model.name`` changes), evaluates each on the test split and
writes one table (``ablation.csv``, ``paper.md`` beside the paper's rows from ``ablate.expect``).

Fixture smoke run (the card's settings: channels 8–64, d_state 4, batch 4, 200 iterations, lr 0.01 cosine): flips
only, no rotation or elastic deformation, so that 200 steps learn. The tests' learning check trains 40 iterations
with lr 0.1 and momentum 0.9 instead of 0.99 (nnU-Net's momentum needs ~60 steps before the loss moves).

Choices where the card is silent: no validation loop (the card's protocol evaluates the final model on the test
split; the train stage's ``metrics.json`` therefore holds test metrics); no foreground oversampling in the patch
sampler (nnU-Net samples 33 % of patches around foreground); elastic deformation with control-point spacing 20 px
and magnitude 1–2; rotations use bilinear interpolation for images and nearest for labels; the MONAI baselines
use SegResNet(init_filters 32), UNETR(feature_size 16, ViT-B widths, img_size = patch) and SwinUNETR(feature_size
24); the Mamba/CBAM defaults of ``models/cmunet.py`` (no Mamba residual, r = 16, Mamba at every stage).
"""

from __future__ import annotations

import json
import math
import re
import time
from pathlib import Path

import lightning as L
import numpy as np
import torch
import torch.nn.functional as F

from medrun.datasets import nnunet_raw
from medrun.datasets.images import list_images
from medrun.errors import DataError, UsageError
from medrun.metrics import segmentation as segm
from medrun.models.cmunet import VARIANTS, CMUNet, deep_supervision_weights

from .. import training
from ..base import Pipeline
from ..report import learning_curves, markdown_table, paper_md, save_figure
from ..tasks import segmentation as seg

CLASSES = tuple(nnunet_raw.MORPH_BINS)  # dot, rod, network


def build_network(mm, patch_size: int):
    """The network of a manifest's model section (``mm``)."""
    if mm.name in VARIANTS:
        return CMUNet(1, mm.num_classes, mm.channels, mm.name, mm.d_state, mm.expand, mm.mamba_residual,
                      mm.cbam_reduction, mm.deep_supervision, mm.scan, mm.chunk_size)
    from monai.networks import nets

    if mm.name == "segresnet":
        return nets.SegResNet(spatial_dims=2, in_channels=1, out_channels=mm.num_classes, init_filters=32)
    if mm.name == "unetr":
        return nets.UNETR(1, mm.num_classes, img_size=(patch_size, patch_size), feature_size=16, spatial_dims=2)
    return nets.SwinUNETR(1, mm.num_classes, feature_size=24, spatial_dims=2)


# -- data --------------------------------------------------------------------------------------------------------
class Loaded:
    """One case in memory: z-scored image (float32 H×W), label (uint8 or None), the raw image for figures."""

    def __init__(self, case: nnunet_raw.Case, labels: dict):
        raw, self.label = nnunet_raw.load(case, labels)
        self.case, self.raw = case, raw
        self.image = zscore(raw)


def zscore(img: np.ndarray) -> np.ndarray:
    img = img.astype(np.float32)
    return (img - img.mean()) / max(float(img.std()), 1e-8)


class PatchSampler(torch.utils.data.Dataset):
    """``length`` random patches (with replacement over cases) with the card's augmentations."""

    def __init__(self, cases: list[Loaded], patch: int, length: int, aug, seed: int):
        from monai.transforms import Rand2DElastic, RandRotate

        self.cases, self.patch, self.length, self.aug = cases, patch, length, aug
        self.rng = np.random.default_rng(seed)
        self.rotate = RandRotate(range_x=math.pi, prob=1.0, keep_size=True) if aug.rotate_prob > 0 else None
        self.elastic = (Rand2DElastic(spacing=(20, 20), magnitude_range=(1, 2), prob=1.0, padding_mode="zeros")
                        if aug.elastic_prob > 0 else None)
        for t in (self.rotate, self.elastic):
            if t is not None:
                t.set_random_state(seed)

    def __len__(self):
        return self.length

    def _crop(self, c: Loaded):
        p = self.patch
        img, lab = c.image, c.label
        ph, pw = max(0, p - img.shape[0]), max(0, p - img.shape[1])
        if ph or pw:
            pad = ((ph // 2, ph - ph // 2), (pw // 2, pw - pw // 2))
            img, lab = np.pad(img, pad), np.pad(lab, pad)
        y = int(self.rng.integers(0, img.shape[0] - p + 1))
        x = int(self.rng.integers(0, img.shape[1] - p + 1))
        return img[y:y + p, x:x + p], lab[y:y + p, x:x + p]

    def __getitem__(self, i):
        c = self.cases[int(self.rng.integers(len(self.cases)))]
        img, lab = self._crop(c)
        img, lab = torch.from_numpy(img.copy())[None], torch.from_numpy(lab.astype(np.float32))[None]
        a = self.aug
        if a.flip:
            for axis in (1, 2):
                if self.rng.random() < 0.5:
                    img, lab = img.flip(axis), lab.flip(axis)
        if self.rotate is not None and self.rng.random() < a.rotate_prob:
            self.rotate.randomize(None)
            img = self.rotate(img, mode="bilinear", randomize=False)
            lab = self.rotate(lab, mode="nearest", randomize=False)
        if self.elastic is not None and self.rng.random() < a.elastic_prob:
            self.elastic.randomize(img.shape[1:])
            img = self.elastic(img, mode="bilinear", randomize=False)
            lab = self.elastic(lab, mode="nearest", randomize=False)
        return torch.as_tensor(img, dtype=torch.float32), torch.as_tensor(lab).round().long()


# -- training ----------------------------------------------------------------------------------------------------
class DeepSupervisionLoss(torch.nn.Module):
    """nnU-Net's DC_and_CE (soft Dice of the foreground, batch Dice, + cross-entropy, 1:1) over every head."""

    def __init__(self):
        super().__init__()
        from monai.losses import DiceCELoss

        self.dc_ce = DiceCELoss(include_background=False, to_onehot_y=True, softmax=True, batch=True,
                                smooth_nr=1e-5, smooth_dr=1e-5, lambda_dice=1.0, lambda_ce=1.0)

    def forward(self, outputs, target: torch.Tensor) -> torch.Tensor:
        outputs = outputs if isinstance(outputs, (list, tuple)) else [outputs]
        total = outputs[0].new_zeros(())
        for w, out in zip(deep_supervision_weights(len(outputs)), outputs, strict=True):
            if w == 0:
                continue
            t = target if out.shape[-2:] == target.shape[-2:] else F.interpolate(target.float(), out.shape[-2:], mode="nearest").long()
            total = total + w * self.dc_ce(out, t)
        return total


class LitSeg(L.LightningModule):
    def __init__(self, net, t, total_steps: int):
        super().__init__()
        self.net, self.t, self.total_steps = net, t, max(1, total_steps)
        self.loss = DeepSupervisionLoss()

    def training_step(self, batch, _):
        x, y = batch
        loss = self.loss(self.net(x), y)
        self.log("train_loss", loss, on_step=False, on_epoch=True, prog_bar=True, batch_size=x.shape[0])
        return loss

    def configure_optimizers(self):
        t = self.t
        opt = torch.optim.SGD(self.net.parameters(), lr=t.lr, momentum=t.momentum, nesterov=t.nesterov,
                              weight_decay=t.weight_decay)
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=self.total_steps, eta_min=t.lr_min)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}


# -- inference, metrics, morphology ------------------------------------------------------------------------------
@torch.no_grad()
def predict_mask(net, image: np.ndarray, patch: int, overlap: float = 0.5) -> np.ndarray:
    """argmax of sliding-window logits (roi = patch; smaller images are padded by MONAI)."""
    from monai.inferers import sliding_window_inference

    net.eval()
    device = next(net.parameters()).device  # wherever the Trainer left the network
    x = torch.from_numpy(np.ascontiguousarray(image, dtype=np.float32))[None, None].to(device)

    def forward(t):
        out = net(t)
        return out[0] if isinstance(out, (list, tuple)) else out

    logits = sliding_window_inference(x, (patch, patch), 4, forward, overlap=overlap, mode="gaussian")
    return logits[0].argmax(0).cpu().numpy().astype(np.uint8)


def overlap_metrics(pred: np.ndarray, gt: np.ndarray) -> dict:
    out = seg.case_metrics(pred, gt, ("dice", "iou", "precision", "recall"))
    iou_bg = float(segm.iou(gt == 0, pred == 0))
    return {"f1": out["dice"], "dice": out["dice"], "iou": out["iou"], "iou_bg": iou_bg,
            "miou": (out["iou"] + iou_bg) / 2, "precision": out["precision"], "recall": out["recall"]}


def components(mask: np.ndarray) -> list[int]:
    """Areas (px) of the 8-connected components of a binary mask."""
    from skimage.measure import label, regionprops

    return [int(p.area) for p in regionprops(label(np.asarray(mask) > 0, connectivity=2))]


def morphology(mask: np.ndarray) -> dict:
    """{class}_n and {class}_area for dot / rod / network."""
    out = {f"{c}_{k}": 0 for c in CLASSES for k in ("n", "area")}
    for a in components(mask):
        c = nnunet_raw.morph_class(a)
        out[f"{c}_n"] += 1
        out[f"{c}_area"] += a
    return out


METRIC_NAMES = ("f1", "dice", "iou", "miou", "precision", "recall")


class CmuNet(Pipeline):
    def build_model(self):
        return build_network(self.m.model, self.m.train.patch_size)

    # -- data ------------------------------------------------------------------------------------------------
    @property
    def root(self) -> Path:
        return Path(self.ctx.data_roots["data"])

    def splits(self) -> tuple[dict[str, list[nnunet_raw.Case]], dict]:
        d = self.m.dataset
        cases, meta = nnunet_raw.read(self.root)
        kept = [c for c in cases if c.id not in set(d.exclude) and (d.cases is None or re.search(d.cases, c.id))]
        tr = [c for c in kept if c.split == "Tr"]
        ts = [c for c in kept if c.split == "Ts" and c.label is not None]
        if ts:
            splits = {"train": tr, "test": ts}
        else:
            order = np.random.default_rng(d.split_seed).permutation(len(tr))
            n_test = max(1, round(len(tr) * d.test_fraction)) if len(tr) > 1 else 0
            test_idx = set(order[:n_test].tolist())
            splits = {"train": [c for i, c in enumerate(tr) if i not in test_idx],
                      "test": [c for i, c in enumerate(tr) if i in test_idx]}
        if not splits["train"]:
            filt = ", ".join(f for f in (f"dataset.cases={d.cases!r}" if d.cases else "",
                                         f"dataset.exclude ({len(d.exclude)} ids)" if d.exclude else "") if f)
            raise UsageError(f"{self.root / 'imagesTr'}: the training split is empty after filtering"
                             f" ({filt or 'no filter'}; {sum(c.split == 'Tr' for c in cases)} training cases before)",
                             fix="loosen dataset.cases / dataset.exclude so some imagesTr cases remain")
        self._record_splits(splits)
        return splits, meta

    def _record_splits(self, splits: dict) -> None:
        lock = self.ctx.run.path / "data.lock.json"
        data = json.loads(lock.read_text())
        data["splits"] = {k: [c.image.relative_to(self.root).as_posix() for c in v] for k, v in splits.items()}
        self.ctx.run.write_json("data.lock.json", data)
        # nnU-Net's splits_final.json form (a list of folds), here the one fixed split
        self.ctx.run.write_json("splits_final.json", [{"train": [c.id for c in splits["train"]],
                                                       "val": [c.id for c in splits["test"]]}])

    def load(self, cases, meta) -> list[Loaded]:
        return [Loaded(c, meta["labels"]) for c in cases]

    # -- training --------------------------------------------------------------------------------------------
    def _fit(self, train: list[Loaded], model_section=None, ckpt: bool = True):
        t = self.m.train
        net = build_network(model_section or self.m.model, t.patch_size)
        total = t.epochs * t.iters_per_epoch
        module = LitSeg(net, t, total)
        trainer = training.make_trainer(self.ctx, t.epochs, checkpoint=ckpt, logger=ckpt,
                                        gradient_clip_val=t.grad_clip, gradient_clip_algorithm="norm")
        data = PatchSampler(train, t.patch_size, t.iters_per_epoch * t.batch_size, t.augment, self.m.seed)
        loader = torch.utils.data.DataLoader(data, batch_size=t.batch_size, shuffle=False, num_workers=t.num_workers,
                                             persistent_workers=t.num_workers > 0)
        losses: list[float] = []

        class _Losses(training.Callback):
            def on_train_epoch_end(self, trainer, pl_module):
                if "train_loss" in trainer.callback_metrics:
                    losses.append(float(trainer.callback_metrics["train_loss"]))

        trainer.callbacks.append(_Losses())
        t0 = time.perf_counter()
        training.fit(trainer, module, train_dataloaders=loader,
                     ckpt_path=training.resume_checkpoint(self.ctx.run) if ckpt else None)
        secs = time.perf_counter() - t0
        return module.net, {"secs_per_epoch": round(secs / max(1, t.epochs), 3),
                            "train_images_per_sec": round(total * t.batch_size / secs, 3) if secs > 0 else None,
                            "train_loss_first": round(losses[0], 5) if losses else None,
                            "train_loss_last": round(losses[-1], 5) if losses else None}

    def train(self) -> dict:
        splits, meta = self.splits()
        self.ctx.log(f"{self.m.dataset.name}: train {len(splits['train'])} · test {len(splits['test'])} images; "
                     f"model {self.m.model.name}")
        train = self.load(splits["train"], meta)
        net, fit_info = self._fit(train)
        training.save_weights(net, self.ctx.run.path / "checkpoints" / "model.safetensors",
                              {"pipeline": "cmu-net", "model": self.m.model.name})
        learning_curves(self.ctx.run.path / "logs" / "metrics.csv", self.ctx.run.path / "figures" / "learning_curves.png")
        metrics = self._report(net, self.load(splits["test"], meta), "test")
        metrics.update(fit_info)
        metrics.update(training.count_params(net))
        return metrics

    # -- evaluation ------------------------------------------------------------------------------------------
    def _evaluate(self, net, cases: list[Loaded]) -> tuple[list[dict], list[np.ndarray]]:
        rows, preds = [], []
        for c in cases:
            pred = predict_mask(net, c.image, self.m.train.patch_size, self.m.eval.sw_overlap)
            row = {"case": c.case.id, **overlap_metrics(pred, c.label)}
            row.update({f"gt_{k}": v for k, v in morphology(c.label).items()})
            row.update({f"pred_{k}": v for k, v in morphology(pred).items()})
            rows.append(row)
            preds.append(pred)
        return rows, preds

    def _morph_totals(self, rows: list[dict]) -> dict:
        out = {}
        for who in ("gt", "pred"):
            for c in CLASSES:
                for k in ("n", "area"):
                    out[f"morph_{who}_{c}_{k}"] = int(sum(r[f"{who}_{c}_{k}"] for r in rows))
        truth_file = self.root / "fixture_truth.json"
        if truth_file.is_file():  # the fixture's drawn counts: the read-out must reproduce them exactly
            truth = json.loads(truth_file.read_text())["cases"]
            ok = all(all(r[f"gt_{c}_n"] == truth[r["case"]][c] for c in CLASSES) for r in rows if r["case"] in truth)
            out["morph_truth_exact"] = 1.0 if ok else 0.0
        return out

    def _report(self, net, cases: list[Loaded], split: str) -> dict:
        run = self.ctx.run
        rows, preds = self._evaluate(net, cases)
        metrics = seg.summarise(rows, METRIC_NAMES)
        metrics["split"] = split
        metrics.update(self._morph_totals(rows))
        seg.write_per_case(run, rows)
        for c, pred in list(zip(cases, preds, strict=True))[: self.m.eval.overlays]:
            seg.overlay_png(c.raw, c.label, pred, run.path / "figures" / f"overlay_{c.case.id}.png",
                            f"{c.case.id}: F1 {overlap_metrics(pred, c.label)['f1']:.3f} (green truth, red prediction)")
        self.ctx.log(f"{split}: F1 {metrics['f1']:.4f}  IoU {metrics['iou']:.4f}  mIoU {metrics['miou']:.4f} "
                     f"({metrics['n_cases']} images)")
        run.write_text("paper.md", paper_md(self.ctx.spec, self.m, metrics, self.ctx, sections=[
            _paper_table(self.m.dataset.name), _morph_section(metrics), _NOTES]))
        return metrics

    def _split(self, name: str):
        splits, meta = self.splits()
        if name not in splits:
            raise UsageError(f"unknown split '{name}'", fix=f"use --split {' | '.join(splits)}")
        return self.load(splits[name], meta)

    def eval(self) -> dict:
        return self._report(self.trained_model(), self._split(self.m.eval.split), self.m.eval.split)

    # -- prediction ------------------------------------------------------------------------------------------
    def predict(self) -> dict:
        from PIL import Image

        net = self.trained_model()
        if self.m.predict.input:
            folder = Path(self.m.predict.input)
            if not folder.is_dir():
                raise DataError(f"predict.input folder not found: {folder}", fix="-o predict.input=/path/to/images")
            items = [(re.sub(r"_0000$", "", p.stem), p, None) for p in list_images(folder)]
            if not items:
                raise DataError(f"no images in {folder}", fix="point predict.input at a folder of .png/.tif files")
            loaded = [(cid, zscore(nnunet_raw._read_array(p).astype(np.float32))) for cid, p, _ in items]
        else:
            loaded = [(c.case.id, c.image) for c in self._split(self.m.eval.split)]
        rows = []
        out_dir = self.ctx.run.path / "predictions"
        out_dir.mkdir(parents=True, exist_ok=True)
        for cid, image in loaded:
            pred = predict_mask(net, image, self.m.train.patch_size, self.m.eval.sw_overlap)
            Image.fromarray(pred).save(out_dir / f"{cid}.png")  # nnU-Net's output naming: <case>.png, 0/1
            rows.append({"case": cid, "foreground_fraction": float(pred.mean()), **morphology(pred)})
        seg.write_per_case(self.ctx.run, rows)
        self.ctx.log(f"predicted {len(rows)} masks into {out_dir}")
        return {"n": len(rows), "foreground_fraction": float(np.mean([r["foreground_fraction"] for r in rows]))}

    # -- morphology read-out (Fig. 5–6) ---------------------------------------------------------------------
    def morphology(self) -> dict:
        split = self.m.morphology.split
        net = self.trained_model()
        cases = self._split(split)
        rows, preds = self._evaluate(net, cases)
        comp_rows = []
        for c, pred in zip(cases, preds, strict=True):
            for who, mask in (("gt", c.label), (self.m.model.name, pred)):
                comp_rows += [{"case": c.case.id, "mask": who, "area_px": a, "class": nnunet_raw.morph_class(a)}
                              for a in components(mask)]
        seg.write_per_case(self.ctx.run, rows)
        seg.write_per_case(self.ctx.run, comp_rows, "components.csv")
        metrics = {"split": split, "n_cases": len(rows), **self._morph_totals(rows)}
        _morph_figure(metrics, self.m.model.name, self.ctx.run.path / "figures" / "morphology.png")
        self.ctx.log("morphology (gt → pred): " + ", ".join(
            f"{c} {metrics[f'morph_gt_{c}_n']} → {metrics[f'morph_pred_{c}_n']}" for c in CLASSES))
        self.ctx.run.write_text("paper.md", paper_md(self.ctx.spec, self.m, metrics, self.ctx,
                                                     title="CMU-Net morphology read-out (Fig. 5–6)",
                                                     sections=[_morph_section(metrics), _MORPH_NOTES]))
        return metrics

    # -- ablation (Table 5) ---------------------------------------------------------------------------------
    def ablate(self) -> dict:
        splits, meta = self.splits()
        train, test = self.load(splits["train"], meta), self.load(splits["test"], meta)
        table, all_rows, metrics = [], [], {"variants": list(self.m.ablate.variants)}
        for v in self.m.ablate.variants:
            section = self.m.model.model_copy(update={"name": v})
            self.ctx.log(f"ablation: {v} (train {len(train)} · test {len(test)})")
            training.apply_determinism(self.m.determinism, self.m.seed)  # every variant starts from the same seed
            net, fit_info = self._fit(train, section, ckpt=False)
            training.save_weights(net, self.ctx.run.path / "checkpoints" / f"{v}.safetensors", {"model": v})
            rows, _ = self._evaluate(net, test)
            s = seg.summarise(rows, METRIC_NAMES)
            morph = self._morph_totals(rows)
            all_rows += [{"variant": v, **r} for r in rows]
            exp = self.m.ablate.expect.get(v, {})
            table.append({"variant": v, "f1": s["f1"], "iou": s["iou"], "miou": s["miou"],
                          "paper_f1": exp.get("f1"), "paper_iou": exp.get("iou"),
                          "params": training.count_params(net)["params_total"], **fit_info,
                          **{k: morph[f"morph_pred_{k}_n"] for k in CLASSES}})
            for k in ("f1", "iou", "miou"):
                metrics[f"{v}.{k}"] = s[k]
        seg.write_per_case(self.ctx.run, all_rows)
        seg.write_per_case(self.ctx.run, table, "ablation.csv")
        cols = ["variant", "f1", "paper_f1", "iou", "paper_iou", "miou", "params", "train_loss_last", *CLASSES]
        md = markdown_table(cols, [[r[c] for c in cols] for r in table])
        self.ctx.run.write_text("paper.md", paper_md(
            self.ctx.spec, self.m, {k: metrics.get(f"cmunet.{k}") for k in ("f1", "iou", "miou")}, self.ctx,
            title="CMU-Net ablation (Table 5)",
            sections=["## Ablation: this run beside the paper's Table 5\n\n" + md
                      + "\n\ndot / rod / network: predicted component counts on the test split.", _NOTES]))
        return metrics


# -- reports -----------------------------------------------------------------------------------------------------
_PAPER = {  # the card's "Headline results" (Tables 2–4; * rows of B and C reconstructed from Table 5)
    "sekh-mito": ("A (Table 2)", {"nnU-Net": (0.7593, 0.7228), "SegResNet": (0.7590, 0.7214), "UNETR": (0.7532, 0.7118),
                                  "Swin UNETR": (0.7573, 0.7194), "U-Mamba": (0.7598, 0.7231), "CMU-Net": (0.7883, 0.7420)}),
    "luo-er": ("B (Table 3)", {"nnU-Net": (0.8438, 0.7312), "SegResNet": (0.8405, 0.7267), "UNETR": (0.8447, 0.7330),
                               "Swin UNETR": (0.8449, 0.7328), "U-Mamba": (0.8404, 0.7259), "CMU-Net": (0.8669, 0.7559)}),
    "luo-mito": ("C (Table 4)", {"nnU-Net": (0.8175, 0.6949), "SegResNet": (0.8163, 0.6938), "UNETR": (0.8039, 0.6765),
                                 "Swin UNETR": (0.8203, 0.6990), "U-Mamba": (0.8232, 0.7028), "CMU-Net": (0.8358, 0.7255)}),
}


def _paper_table(dataset: str) -> str:
    label, rows = _PAPER[dataset]
    return (f"## The paper's table for dataset {label}\n\n"
            + markdown_table(["method", "F1/DSC", "IoU"], [[k, *v] for k, v in rows.items()])
            + "\n\nB and C baseline rows are approximate (the seed's Tables 3–4 are garbled; the card reconstructs them).")


def _morph_section(m: dict) -> str:
    rows = [[c, m[f"morph_gt_{c}_n"], m[f"morph_pred_{c}_n"], m[f"morph_gt_{c}_area"], m[f"morph_pred_{c}_area"]]
            for c in CLASSES]
    text = ("## Morphology (8-connected components; dot < 100 px, rod 100–500 px, network > 500 px)\n\n"
            + markdown_table(["class", "count GT", "count pred", "area GT (px)", "area pred (px)"], rows))
    if "morph_truth_exact" in m:
        text += (f"\n\nFixture check: the ground-truth read-out {'matches' if m['morph_truth_exact'] else 'does NOT match'}"
                 " the generator's drawn counts (fixture_truth.json) in every case.")
    return text


def _morph_figure(m: dict, name: str, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(8, 3.2))
    x = np.arange(len(CLASSES))
    for ax, k, title in ((axes[0], "n", "count"), (axes[1], "area", "total area (px)")):
        ax.bar(x - 0.2, [m[f"morph_gt_{c}_{k}"] for c in CLASSES], 0.4, label="ground truth")
        ax.bar(x + 0.2, [m[f"morph_pred_{c}_{k}"] for c in CLASSES], 0.4, label=name)
        ax.set_xticks(x, CLASSES)
        ax.set_title(title)
    axes[0].legend()
    fig.tight_layout()
    save_figure(fig, path)


_NOTES = """## Notes on the comparison

- F1 = Dice and IoU are foreground, per-image means; mIoU averages foreground and background IoU. The paper's IoU
  cannot come from the same confusion matrix as its F1 (A: F1 0.7883 implies IoU ≤ 0.651, it reports 0.7420); it
  may be a mean over images or include background, so compare the paper's IoU with both `iou` and `miou`.
- Split: labelled imagesTs when the dataset has it, else a fixed 80/20 split of imagesTr (seed 0), not nnU-Net's
  5-fold CV; the paper states no split."""

_MORPH_NOTES = """## Notes

The paper shows the morphology read-out only as figures (Fig. 5–6, no numbers), so the comparison is qualitative:
counts and areas per class for the ground truth and this run's model. Run it on a `-o model.name=unet` train run
for the paper's U-Net column."""
