"""cmu-net, the method (card: docs/papers/cmu-net.md).

Data: an nnU-Net v2 raw dataset (``datasets/nnunet_raw.py``): ``imagesTr``/``labelsTr`` (+ ``imagesTs``/``labelsTs``).
Labels are checked against the image (same shape) and against dataset.json's label values. Every image is
z-scored on its own (nnU-Net's per-image normalisation for non-CT data). Split: when ``labelsTs`` holds labels,
imagesTr trains and the labelled imagesTs cases test; otherwise a fixed 80/20 train/test split of imagesTr with
seed 0 (the card's option "a fixed 80/20 train/test split (seed 0)"; not nnU-Net's 5-fold CV). ``dataset.cases``
(regex) and ``dataset.exclude`` filter the cases first. The split is recorded in ``data.lock.json`` and, in
nnU-Net's ``splits_final.json`` form, in the run directory (never in the user's data folder, whose content is
fingerprinted).

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

Evaluation: sliding-window inference through the predictor on the manifest's hardware (MONAI
``SlidingWindowInferer`` from the ``inference:`` section: roi = the training patch unless ``inference.roi_size``,
Gaussian weighting, overlap 0.5, 4 windows a batch; an image smaller than the window is padded), argmax. Per
image: F1 = Dice = 2TP/(2TP+FP+FN) and IoU = TP/(TP+FP+FN) of the foreground, 2-class mIoU = mean of foreground
and background IoU, precision, recall; the run reports per-image means (the card: "average per image"; the
paper's IoU is inconsistent with its F1, see paper.md). ``predict`` writes ``predictions/<case>.png`` (0/1, the
image's own size: nnU-Net's output naming).

Morphology (card, Fig. 5–6): connected components (8-connectivity, scikit-image ``label``/``regionprops``) of the
ground truth and of the prediction, classed by area: dot < 100 px, rod 100–500 px, network > 500 px (500 itself
counts as network); count and total area per class. The train stage reports it for its test split; the
``morphology`` stage (``morphology.py``) does it for any split of a finished train run and draws a bar chart. On
the fixture the generator's drawn counts (``fixture_truth.json``) are checked: ``morph_truth_exact`` is 1 when
every case matches.

Ablation (Table 5) is a manifest list, not a code fork: ``ablate`` is a sweep with one train run per
``ablate.variants`` entry (only ``model.name`` changes; each reused when complete), then one table
(``ablation.csv``, ``paper.md`` beside the paper's rows of Table 5 from ``paper.yaml``).

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
from pathlib import Path

import lightning as L
import numpy as np
import torch
import torch.nn.functional as F

from medrun.datasets import nnunet_raw
from medrun.errors import UsageError
from medrun.metrics import segmentation as segm
from medrun.models.cmunet import VARIANTS, deep_supervision_weights

from ..report import markdown_table, paper_data, paper_md, paper_note, paper_table, read_series
from ..sweep import Child
from ..tasks import segmentation as seg
from ..tasks.supervised import Supervised

CLASSES = tuple(nnunet_raw.MORPH_BINS)  # dot, rod, network


MONAI_BASELINES = {"segresnet": ("SegResNet", {"init_filters": 32}), "unetr": ("UNETR", {"feature_size": 16}),
                   "swinunetr": ("SwinUNETR", {"feature_size": 24})}


def network_def(mm, patch_size: int) -> dict:
    """The network of a manifest's model section (``mm``) as a ``_target_`` config (what a MONAI bundle holds)."""
    if mm.name in VARIANTS:
        keys = {"num_classes", "channels", "d_state", "expand", "mamba_residual", "cbam_reduction",
                "deep_supervision", "scan", "chunk_size"}
        return {"_target_": "medrun.models.create", "name": "cmunet", "in_channels": 1, "variant": mm.name,
                **mm.model_dump(mode="json", include=keys)}
    cls, kw = MONAI_BASELINES[mm.name]
    return {"_target_": f"monai.networks.nets.{cls}", "spatial_dims": 2, "in_channels": 1,
            "out_channels": mm.num_classes, **kw, **({"img_size": [patch_size] * 2} if mm.name == "unetr" else {})}


def build_network(mm, patch_size: int):
    """The network of a manifest's model section (``mm``): ``network_def`` built."""
    cfg = network_def(mm, patch_size)
    target = cfg.pop("_target_")
    if target == "medrun.models.create":
        from medrun.models import create

        return create(**cfg)
    from monai.networks import nets

    return getattr(nets, target.rsplit(".", 1)[1])(**cfg)


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
            t = (target if out.shape[-2:] == target.shape[-2:]
                 else F.interpolate(target.float(), out.shape[-2:], mode="nearest").long())
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


# -- metrics, morphology ----------------------------------------------------------------------------------------
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


class CmuNet(Supervised):
    report_split = "test"
    val_split = None  # the card's protocol: no validation loop, the final model is scored on the test split

    def build_model(self):
        return build_network(self.m.model, self.m.train.patch_size)

    # -- data ------------------------------------------------------------------------------------------------
    @property
    def root(self) -> Path:
        return Path(self.ctx.data_roots["data"])

    def splits(self) -> dict[str, list[nnunet_raw.Case]]:
        d = self.m.dataset
        cases, self.meta = nnunet_raw.read(self.root)
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
        self.ctx.record_splits(splits)
        # nnU-Net's splits_final.json form (a list of folds), here the one fixed split
        self.ctx.write_json("splits_final.json", [{"train": [c.id for c in splits["train"]],
                                                   "val": [c.id for c in splits["test"]]}])
        return splits

    def load(self, cases) -> list[Loaded]:
        return [Loaded(c, self.meta["labels"]) for c in cases]

    # -- training: the template's, with the card's patch sampler and gradient clipping ---------------------------
    def train_loader(self, splits: dict):
        t = self.m.train
        data = PatchSampler(self.load(splits["train"]), t.patch_size, t.iters_per_epoch * t.batch_size, t.augment,
                            self.m.seed)
        return torch.utils.data.DataLoader(data, batch_size=t.batch_size, shuffle=False, num_workers=t.num_workers,
                                           persistent_workers=t.num_workers > 0)

    def lit_module(self, net):
        t = self.m.train
        return LitSeg(net, t, t.epochs * t.iters_per_epoch)

    def trainer_kwargs(self) -> dict:
        return {"gradient_clip_val": self.m.train.grad_clip, "gradient_clip_algorithm": "norm"}

    def weights_metadata(self) -> dict:
        return {"pipeline": "cmu-net", "model": self.m.model.name}

    def train(self) -> dict:
        metrics = super().train()
        t, secs = self.m.train, metrics["secs_per_epoch"]
        losses = read_series(self.ctx.path / "logs" / "metrics.csv").get("train_loss", [])
        metrics.update(train_images_per_sec=round(t.iters_per_epoch * t.batch_size / secs, 3) if secs > 0 else None,
                       train_loss_first=round(losses[0][1], 5) if losses else None,
                       train_loss_last=round(losses[-1][1], 5) if losses else None)
        return metrics

    # -- evaluation ------------------------------------------------------------------------------------------
    def predict_mask(self, net, image: np.ndarray) -> np.ndarray:
        """argmax of the sliding-window logits on the manifest's hardware (roi: the training patch by default)."""
        x = torch.from_numpy(np.ascontiguousarray(image, dtype=np.float32))[None, None]
        patch = self.m.train.patch_size
        roi = {} if self.m.inference.roi_size else {"roi_size": [patch, patch]}
        return self.predictor.sliding_window(net, x, **roi)[0].argmax(0).numpy().astype(np.uint8)

    def score(self, net, cases: list[Loaded]) -> tuple[list[dict], list[np.ndarray]]:
        rows, preds = [], []
        for c in self.ctx.track(cases, "scoring"):
            pred = self.predict_mask(net, c.image)
            row = {"case": c.case.id, **overlap_metrics(pred, c.label)}
            row.update({f"gt_{k}": v for k, v in morphology(c.label).items()})
            row.update({f"pred_{k}": v for k, v in morphology(pred).items()})
            rows.append(row)
            preds.append(pred)
        return rows, preds

    def morph_totals(self, rows: list[dict]) -> dict:
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
            # the model's read-out against the drawn counts: |predicted − drawn| / drawn per class, over the cases
            known = [r for r in rows if r["case"] in truth]
            for c in CLASSES:
                drawn = sum(truth[r["case"]][c] for r in known)
                out[f"morph_pred_{c}_count_err"] = abs(sum(r[f"pred_{c}_n"] for r in known) - drawn) / max(drawn, 1)
            out["morph_pred_count_err"] = float(np.mean([out[f"morph_pred_{c}_count_err"] for c in CLASSES]))
        return out

    def evaluate(self, net, cases):
        loaded = self.load(cases)
        rows, preds = self.score(net, loaded)
        self._shown = list(zip(loaded, preds, rows, strict=True))
        return {**seg.summarise(rows, METRIC_NAMES), **self.morph_totals(rows)}, rows

    def figures(self, net, cases, metrics, rows, split):
        for c, pred, row in self._shown[: self.m.eval.overlays]:
            seg.overlay(self.ctx, f"overlay_{c.case.id}", c.raw, c.label, pred,
                        f"{c.case.id}: F1 {row['f1']:.3f} (green truth, red prediction)")

    def summary_line(self, split, metrics):
        return (f"{split}: F1 {metrics['f1']:.4f}  IoU {metrics['iou']:.4f}  mIoU {metrics['miou']:.4f} "
                f"({metrics['n_cases']} images)")

    def paper_sections(self, metrics):
        name = self.m.dataset.name
        table = paper_table(self.ctx.spec, name)
        if name != "sekh-mito":
            table += "\n\n" + paper_note(self.ctx.spec, "approximate")
        return [table, morph_section(metrics), paper_note(self.ctx.spec, "comparison")]

    # -- predict: masks at the image's own size --------------------------------------------------------------------
    def predict_items(self):
        if self.m.predict.input:
            return self.ctx.predict_inputs(self.m.predict.input, nnunet_raw.SUFFIXES)
        return super().predict_items()

    def predict_rows(self, net, items) -> list[dict]:
        rows = []
        for item in self.ctx.track(items, "predicting"):
            if isinstance(item, Path):  # a user's image: <case>_0000.png as in imagesTs, or any name
                cid, image = re.sub(r"_0000$", "", item.stem), zscore(nnunet_raw._read_array(item))
            else:
                cid, image = item.id, self.load([item])[0].image
            pred = self.predict_mask(net, image)
            seg.write_mask(self.ctx, f"predictions/{cid}.png", pred, foreground=1)  # nnU-Net's naming, 0/1
            rows.append({"case": cid, "foreground_fraction": float(pred.mean()), **morphology(pred)})
        return rows

    def predict_summary(self, rows):
        return {"foreground_fraction": float(np.mean([r["foreground_fraction"] for r in rows]))}

    # -- export -------------------------------------------------------------------------------------------------
    def bundle_parts(self) -> dict:
        """A MONAI bundle: the network, eval's preprocessing (medrun's reader, per-image z-score) and eval's
        sliding-window inference (the ``inference:`` settings); per file the argmax mask at the image's size."""
        inf, patch = self.m.inference, self.m.train.patch_size
        roi = list(inf.roi_size or [patch, patch])
        sw = (f"monai.inferers.SlidingWindowInferer(roi_size={roi}, sw_batch_size={inf.sw_batch_size}, "
              f"overlap={inf.overlap}, mode='{inf.mode}')")
        reader = "__import__('medrun.datasets.nnunet_raw', fromlist=['_read_array'])._read_array"
        return seg.bundle_parts(
            task="binary organelle segmentation of one 2D fluorescence image",
            network_def=network_def(self.m.model, patch), suffixes=nnunet_raw.SUFFIXES,
            preprocessing=[{"_target_": "Lambda", "func": f"$lambda f: {reader}(__import__('pathlib').Path(f))"},
                           {"_target_": "Lambda", "func": "$lambda a: torch.from_numpy((lambda x: (x - x.mean()) / "
                                                          "max(float(x.std()), 1e-8))(a.astype('float32')))[None]"}],
            predict=seg.mask_entry(f"{sw}(x, @network)[0].argmax(0).cpu()"), in_channels=1, size=None,
            labels={0: "background", 1: "organelle"}, modality="fluorescence microscopy",
            readme="Input: one 2D image per file (.png/.tif, any size; z-scored on its own). Output, per file: the "
                   f"organelle mask at the image's size (rows of 0/1, argmax of sliding-window logits, window {roi}).")

    # -- stages beyond train/eval/predict --------------------------------------------------------------------------
    def morphology(self) -> dict:
        from .morphology import morphology_stage

        return morphology_stage(self)

    def ablate(self) -> dict:
        """Table 5: one train run per ``ablate.variants`` entry (``model.name``), then one table."""
        variants = self.m.ablate.variants
        runs = self.ctx.sweep([Child(v, {"model.name": v}, labels={"variant": v}) for v in variants], title="variant")
        self.ctx.write_csv("per_case.csv", [{"variant": r.child.name, **row} for r in runs for row in r.read_csv()])
        ref = {row[0]: row[1:] for row in paper_data(self.ctx.spec)["tables"][f"table5-{self.m.dataset.name}"]["rows"]}
        table, metrics = [], {"variants": list(variants)}
        for r in runs:
            v, m = r.child.name, r.metrics
            paper = ref.get(v, [None, None])
            table.append({"variant": v, "f1": m["f1"], "paper_f1": paper[0], "iou": m["iou"], "paper_iou": paper[1],
                          "miou": m["miou"], "params": m["params_total"], "train_loss_last": m.get("train_loss_last"),
                          **{k: m[f"morph_pred_{k}_n"] for k in CLASSES}, "run_id": r.run_id[:12]})
            metrics.update({f"{v}.{k}": m[k] for k in ("f1", "iou", "miou")})
        self.ctx.write_csv("ablation.csv", table)
        md = markdown_table(list(table[0]), [list(r.values()) for r in table])
        self.ctx.write_text("paper.md", paper_md(
            self.ctx.spec, self.m, {k: metrics.get(f"cmunet.{k}") for k in ("f1", "iou", "miou")}, self.ctx,
            title="CMU-Net ablation (Table 5)",
            sections=["## Ablation: this run beside the paper's Table 5 (each variant a train run of its own)\n\n" + md
                      + "\n\ndot / rod / network: predicted component counts on the test split.",
                      paper_note(self.ctx.spec, "comparison")]))
        return metrics


def morph_section(m: dict) -> str:
    rows = [[c, m[f"morph_gt_{c}_n"], m[f"morph_pred_{c}_n"], m[f"morph_gt_{c}_area"], m[f"morph_pred_{c}_area"]]
            for c in CLASSES]
    text = ("## Morphology (8-connected components; dot < 100 px, rod 100–500 px, network > 500 px)\n\n"
            + markdown_table(["class", "count GT", "count pred", "area GT (px)", "area pred (px)"], rows))
    if "morph_truth_exact" in m:
        text += ("\n\nFixture check: the ground-truth read-out "
                 f"{'matches' if m['morph_truth_exact'] else 'does NOT match'} the generator's drawn counts "
                 "(fixture_truth.json) in every case.")
    if "morph_pred_count_err" in m:
        text += (" The model's read-out is off the drawn counts by "
                 + ", ".join(f"{100 * m[f'morph_pred_{c}_count_err']:.0f} % ({c})" for c in CLASSES)
                 + f"; mean {100 * m['morph_pred_count_err']:.0f} %.")
    return text
