"""lorasam, the method (card: docs/papers/lorasam.md).

Model: SAM ViT-B at 256² (`models.sam`), every SAM weight frozen; peft LoRA (r = 4, λ = 1) on every encoder
block's qkv/proj/lin1/lin2 and both neck convs; trainable position embedding, every "norm" parameter and the Text
Affine Layer (`models.sam_lora`): 974,080 trainable weights (672,000 / 1,578,240 / 2,786,560 at r = 2 / 8 / 16).
The prompt is the frozen text embedding of the bare class name, mapped by the TAL to one sparse token; the prompt
encoder gets no points, boxes or masks. Output: 64×64 logits → bilinear to the input size → sigmoid → 0.5.

Data (``data.py``): (frame, class name) pairs; a class absent from a frame has an empty target, scored 1 when the
prediction is empty too (Eq. 6). Frames are resized to ``img_size`` (bilinear), masks with nearest neighbour, then
SAM's mean/std. Augmentation (training only, ``train.augment``): rotation ±10° with p 0.5 (same on the mask),
saturation ×2 with p 0.2, brightness ×2 with p 0.5 ("scale of 2" read as a fixed factor).

Training: AdamW (lr 1e-4, weight decay 1e-2) on the trainable weights, StepLR(200 epochs, γ 0.2), focal (α 0.25,
γ 2) + Dice loss (``train.loss: focal`` for the paper's focal only). The checkpoint with the best validation
class-mean Dice is kept (Lightning's ``ModelCheckpoint`` on ``val_dice``, ``checkpoints/best.ckpt``, whose weights
are loaded after training; the last epoch when the split has no validation videos). Seed 0.

Evaluation (through the predictor, on the manifest's hardware and precision): per (frame, class) Dice and IoU at
0.5; a class's score is its mean over the split's frames; "Avg." (``dice``) is the unweighted mean over classes
(Table 1). Also ``dice_present``: the mean over pairs whose class is in the frame (the card's smoke criterion).

Base weights and what a run stores:
* ``model.sam_checkpoint`` (an official SAM ViT-B ``.pth``, loaded by `models.sam.load_official_checkpoint`; pos
  embedding pooled 64→16, global rel-pos tables interpolated 127→31): the run stores only the trainable weights
  (``checkpoints/model.safetensors``: adapters, norms, position embedding, TAL with its BatchNorm statistics) and,
  in that file's metadata and in ``run.json``, the sha256 of the base checkpoint. ``eval``/``predict`` rebuild
  the model from a base checkpoint and refuse (exit 2) when its sha256 is not the recorded one.
* Without a SAM checkpoint the base is made by the run itself and written to ``checkpoints/base.safetensors``
  (then its sha256 is the one recorded): with ``pretrain.epochs > 0`` it is the card's stage A (below), else the
  random initialisation (a warning says the numbers are then meaningless).

Two-stage smoke run (card): ONE stage, ``train``, does both. Stage A (``stage_a.py``, ``pretrain:``) trains every
weight of the tiny SAM (embed 96, depth 4, 3 heads, global blocks 1/3, window 4, 64², prompt/decoder dim 64) with
box prompts (the box of each present class's mask) on a colour-swapped copy (RGB → BRG) of the training frames, as
SAM's pre-training stand-in. The text-prompted Dice of that base with fresh LoRA/TAL on the test video is recorded
as ``zero_shot_dice_present``. Stage B is LoRASAM with text prompts. A single stage keeps `medrun smoke` (which
runs one stage) and the run-finding of ``eval``/``predict`` unchanged.

Datasets: EndoVis17/18 and CholecSeg8k (surgical), ChestX-Det and abdominal ultrasound (the paper's Tables 6–7;
``dataset.split`` names their parts / sources, see ``config.Split``). ``ablate`` (``ablate.py``): Tables 4 and 5
as a sweep of train runs. Stage A checkpoints and resumes per epoch (``stage_a.py``).

Text prompts: ``model.clip_checkpoint`` (a local HF CLIP folder; `models.clip_text`), else the card's stand-in tower
(random, width 128 → 512), reported as such in ``run.json`` (``text_tower``) and ``paper.md``. The embeddings of the
class names are computed once per run and stored in ``checkpoints/text_embeddings.safetensors``; eval/predict of a
run reuse its training run's file.

Choices where the card is silent: a batch is ``train.batch_size`` frames, each prompted with every class (the
encoder runs once per frame; this is every (frame, class) pair, grouped by frame); EndoVis17 frames are resized
whole (no crop to the 1280×1024 active area); the CholecSeg8k and EndoVis validation videos are the manifest's
``dataset.split`` (the paper names none; recorded in ``data.lock.json``); the TAL BatchNorm is in eval mode
(running statistics) at evaluation; stage A uses AdamW without weight decay and the same focal+Dice loss.
``train.augment: dihedral`` (random flips and transposes, colour-preserving) is an option of ours: the fixture
runs use it (and stage A always does, ``pretrain.augment``) because the card's brightness ×2 / saturation ×2
would erase the colour cues that tell the fixture's classes apart, and 16 training frames overfit without any
augmentation (measured: Dice over present pairs 0.38 without, 0.71–0.73 with). The smoke config also uses lr 3e-3
(the paper's 1e-4 is for thousands of real frames). The fixture's tiny SAM needs one torch thread on a busy
2-core machine (set OMP_NUM_THREADS=1): with two threads every small op slowed ~100× there. No real-data run was
possible here (no data, no weights); paper.md says so for every fixture run.
"""

from __future__ import annotations

import math
from pathlib import Path

import lightning as L
import numpy as np
import torch
import torch.nn.functional as F

from medrun.artifacts import sha256_file
from medrun.datasets import abdominal_us, chestxdet, cholecseg8k, endovis
from medrun.datasets.surgical import check_same_size, open_image
from medrun.errors import DataError, UsageError
from medrun.models.clip_text import STANDIN_NAME, text_tower
from medrun.models.sam import Sam, SamConfig, load_official_checkpoint, sam_vit_b_config
from medrun.models.sam_lora import (
    LoraSam,
    load_trainable_state_dict,
    lorasam_param_breakdown,
    trainable_state_dict,
)

from .. import training
from ..predictor import Forward
from ..report import markdown_table, paper_note, read_series
from ..tasks import segmentation as segc
from ..tasks.supervised import Supervised
from .data import MEAN, STD, FrameSet, check_classes, dataset_classes, loader_for, resize_pair

TINY = dict(embed_dim=96, depth=4, num_heads=3, window_size=4, global_attn_indexes=(1, 3), prompt_dim=64,
            decoder_mlp_dim=128, iou_head_hidden_dim=64)


def sam_config(size: str, img_size: int) -> SamConfig:
    return SamConfig(img_size=img_size, **TINY) if size == "tiny" else sam_vit_b_config(img_size)


# -- models -------------------------------------------------------------------------------------------------------
def text_logits(model: LoraSam, images: torch.Tensor, text_emb: torch.Tensor) -> torch.Tensor:
    """Every class for every frame: images (B, 3, S, S), text_emb (C, 512) → logits (B, C, S, S). The encoder
    runs once per frame; the decoder once per (frame, class)."""
    b, c = images.shape[0], text_emb.shape[0]
    emb = model.sam.image_encoder(images)
    tokens = model.text_token(text_emb.repeat(b, 1))  # frame-major: (f0,c0) (f0,c1) …
    sparse, dense = model.sam.prompt_encoder(batch_size=b * c)
    sparse = torch.cat([sparse, tokens.unsqueeze(1)], dim=1)
    low, _ = model.sam.mask_decoder(emb, model.sam.prompt_encoder.get_dense_pe(), sparse, dense, multimask_output=False)
    up = F.interpolate(low, size=images.shape[-2:], mode="bilinear", align_corners=False)
    return up.view(b, c, *images.shape[-2:])


def seg_loss(kind: str, alpha: float, gamma: float):
    from monai.losses import DiceLoss, FocalLoss

    focal = FocalLoss(alpha=alpha, gamma=gamma, use_softmax=False)
    dice = DiceLoss(sigmoid=True) if kind == "focal+dice" else None

    def loss(logits, target):  # (N, 1, H, W) each: one channel per (frame, class) pair
        out = focal(logits, target)
        return out + dice(logits, target) if dice is not None else out

    return loss


class LitLoraSam(L.LightningModule):
    def __init__(self, net: LoraSam, text_emb: torch.Tensor, t, threshold: float):
        super().__init__()
        self.net = net
        self.register_buffer("text_emb", text_emb.clone(), persistent=False)  # the run stores it on its own
        self.t, self.threshold = t, threshold
        self.loss = seg_loss(t.loss, t.focal_alpha, t.focal_gamma)
        self._val: list[torch.Tensor] = []

    def configure_optimizers(self):
        params = [p for p in self.net.parameters() if p.requires_grad]
        opt = torch.optim.AdamW(params, lr=self.t.lr, weight_decay=self.t.weight_decay)
        sched = torch.optim.lr_scheduler.StepLR(opt, step_size=self.t.step_size, gamma=self.t.gamma)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "epoch"}}

    def training_step(self, batch, _):
        x, y = batch
        logits = text_logits(self.net, x, self.text_emb)
        loss = self.loss(logits.flatten(0, 1).unsqueeze(1), y.flatten(0, 1).unsqueeze(1))
        self.log("train_loss", loss, on_step=False, on_epoch=True, prog_bar=True, batch_size=x.shape[0])
        return loss

    def validation_step(self, batch, _):
        x, y = batch
        pred = torch.sigmoid(text_logits(self.net, x, self.text_emb)) > self.threshold
        self._val.append(pair_dice(pred, y > 0.5))

    def on_validation_epoch_end(self):
        if self._val:  # class means, then their mean: what the best checkpoint is chosen by
            self.log("val_dice", torch.cat(self._val).mean(0).mean(), prog_bar=True)
            self._val = []


def pair_dice(pred: torch.Tensor, gt: torch.Tensor) -> torch.Tensor:
    """(B, C, H, W) bool → (B, C) Dice with empty/empty = 1 (Eq. 6)."""
    inter = (pred & gt).flatten(2).sum(-1).float()
    total = pred.flatten(2).sum(-1).float() + gt.flatten(2).sum(-1).float()
    return torch.where(total > 0, 2 * inter / total.clamp(min=1), torch.ones_like(total))


# -- the pipeline -------------------------------------------------------------------------------------------------
class LoraSamPipeline(Supervised):
    report_split = "test"
    best = None  # the ModelCheckpoint on val_dice (None without validation videos)

    def build_model(self, sam: Sam | None = None) -> LoraSam:
        mm = self.m.model
        sam = sam if sam is not None else Sam(sam_config(mm.size, self.m.dataset.img_size))
        model = LoraSam(sam, r=mm.rank, use_tal=mm.tal, use_lora=mm.lora)
        if not (mm.pos_embed and mm.norms):  # Table-5 ablation rows
            from medrun.models.sam_lora import mark_lorasam_trainable

            mark_lorasam_trainable(model.sam, model.tal, lora=mm.lora, pos_embed=mm.pos_embed, norms=mm.norms)
        return model

    # -- data
    @property
    def classes(self) -> list[str]:
        known = dataset_classes(self.m.dataset.name)
        return check_classes(self.m.dataset.classes, known, "dataset.classes") if self.m.dataset.classes else known

    def frames(self, split: str):
        d, root = self.m.dataset, self.ctx.data_roots[self.m.dataset.name]
        names = getattr(d.split, split)
        if d.name in ("cholecseg8k", "chestxdet", "abdominal-us"):
            if not names:
                return []
            if d.name == "cholecseg8k":
                frames = cholecseg8k.read(root, [str(v) for v in names])
            elif d.name == "chestxdet":
                frames = [f for part in dict.fromkeys(str(v) for v in names) for f in chestxdet.read(root, part)]
            else:
                frames = abdominal_us.read(root, "test" if split == "test" else "train", [str(v) for v in names])
        else:
            read = endovis.read17 if d.name == "endovis17" else endovis.read18
            ids = [int(v) for v in names] if names is not None else None
            if split != "test" and not names:
                return []
            frames = read(root, "test" if split == "test" else "train", ids)
        if not frames:
            raise DataError(f"no frames for the {split} split under {root}", fix="check dataset.split in the manifest")
        for group in ({f.video for f in frames} if d.name == "abdominal-us" else {None}):  # real and simulated
            check_same_size([f.image for f in frames if group in (None, f.video)], f"{split} frames")  # sizes differ
        return frames

    def splits(self) -> dict:
        splits = {s: self.frames(s) for s in ("train", "val", "test")}
        self.ctx.record_splits(splits)
        return splits

    def dataset(self, frames, train: bool, colour_swap: bool = False) -> FrameSet:
        augment = (self.m.pretrain.augment if colour_swap else self.m.train.augment) if train else "none"
        return FrameSet(frames, loader_for(self.m.dataset.name), self.classes, self.m.dataset.img_size, augment,
                        colour_swap)

    def val_loader(self, splits: dict):
        return super().val_loader(splits) if splits["val"] else None

    # -- text
    def text_embeddings(self, classes: list[str]) -> None:
        tower, self.desc = text_tower(self.m.model.clip_checkpoint)
        self.text_emb = tower(classes).float()
        self.ctx.write_bytes("checkpoints/text_embeddings.safetensors", training.safetensors_bytes(
            {"embeddings": self.text_emb}, {"classes": "\n".join(classes), "tower": self.desc}))
        self.ctx.run.update_info(text_tower=self.desc, text_tower_is_clip=self.desc != STANDIN_NAME)
        if self.desc == STANDIN_NAME:
            self.ctx.log(f"text prompts: {STANDIN_NAME} — pass -o model.clip_checkpoint=DIR for CLIP ViT-B/32")

    # -- stages
    def lit_module(self, net):
        return LitLoraSam(net, self.text_emb, self.m.train, self.m.model.threshold)

    def trainer_kwargs(self) -> dict:
        return {"callbacks": [self.best]} if self.best is not None else {}

    def train(self) -> dict:
        classes = self.classes
        splits = self.splits()
        if not splits["train"]:
            raise UsageError("dataset.split.train is empty", fix="name the training videos in dataset.split.train")
        self.ctx.log(f"{self.m.dataset.name}: train {len(splits['train'])} · val {len(splits['val'])} · "
                     f"test {len(splits['test'])} frames; classes: {', '.join(classes)}")
        self.text_embeddings(classes)
        from .stage_a import make_base

        sam, base_path, base_kind = make_base(self, splits["train"])
        base_sha = sha256_file(base_path)
        self.ctx.run.update_info(base_sha256=base_sha, base_path=str(base_path), base_kind=base_kind)
        model, extra = self.build_model(sam), {}
        if base_kind == "pretrain":
            zs, _ = self.evaluate(model, splits["test"])
            extra = {"zero_shot_dice": zs["dice"], "zero_shot_dice_present": zs["dice_present"]}
            self.ctx.log(f"stage A zero-shot with text on test: Dice {zs['dice']:.4f} (present pairs "
                         f"{zs['dice_present']:.4f})")
            self.ctx.log("stage B: LoRASAM with text prompts")
        if splits["val"]:
            self.best = training.ModelCheckpoint(dirpath=self.ctx.path / "checkpoints", filename="best",
                                                 monitor="val_dice", mode="max", save_top_k=1, save_weights_only=True,
                                                 enable_version_counter=False)
        model, secs = self.fit(splits, model)
        if self.best is not None and self.best.best_model_path:  # the best validation epoch's weights
            training.load_weights(model, Path(self.best.best_model_path), prefix="net.")
        meta = {"pipeline": "lorasam", "base_sha256": base_sha, "base_kind": base_kind, "rank": self.m.model.rank,
                "size": self.m.model.size, "classes": "\n".join(classes), "text_tower": self.desc}
        self.ctx.write_bytes("checkpoints/model.safetensors",
                             training.safetensors_bytes(trainable_state_dict(model.eval()), meta))
        self.ctx.learning_curves()
        metrics = {**self.report(model, "test", splits["test"]), **extra}
        if "zero_shot_dice_present" in extra:
            metrics["dice_gain"] = metrics["dice_present"] - extra["zero_shot_dice_present"]
        losses = [v for _, v in read_series(self.ctx.path / "logs" / "metrics.csv")["train_loss"]]
        best = self.best.best_model_score if self.best is not None else None
        metrics.update(loss_first=losses[0], loss_last=losses[-1], loss_drop=losses[0] - losses[-1],
                       best_val_dice=float(best) if best is not None else None, secs_per_epoch=round(secs, 3),
                       base_sha256=base_sha, base_kind=base_kind,
                       params_trainable=sum(p.numel() for p in model.parameters() if p.requires_grad),
                       params_total=sum(p.numel() for p in model.parameters()),
                       params_breakdown=lorasam_param_breakdown(model))
        return metrics

    def evaluate(self, net, frames) -> tuple[dict, list[dict]]:
        """Per (frame, class) Dice/IoU → class means (Eq. 6), their mean, and the mean over present pairs."""
        run, bs = self.predictor.setup(Forward(net, text_logits)), self.m.train.batch_size
        loader = torch.utils.data.DataLoader(self.dataset(frames, False), batch_size=bs, shuffle=False)
        d_all, i_all, present, self.shown = [], [], [], {}
        for start, (x, target) in zip(range(0, len(frames), bs), loader, strict=True):
            y = target > 0.5
            pred = torch.sigmoid(self.predictor(run, x, self.text_emb)) > self.m.model.threshold
            inter, union = (pred & y).flatten(2).sum(-1).float(), (pred | y).flatten(2).sum(-1).float()
            d_all.append(pair_dice(pred, y))
            i_all.append(torch.where(union > 0, inter / union.clamp(min=1), torch.ones_like(union)))
            present.append(y.flatten(2).any(-1))
            for b in range(x.shape[0]):  # the first frame where each class is present, for the overlays
                for k, c in enumerate(self.classes):
                    if c not in self.shown and bool(y[b, k].any()):
                        img = (x[b] * STD + MEAN).clamp(0, 255).permute(1, 2, 0).numpy() / 255.0
                        self.shown[c] = (img, y[b, k].numpy(), pred[b, k].numpy(), frames[start + b].id)
        d, iou, pres = torch.cat(d_all), torch.cat(i_all), torch.cat(present)
        out = {"dice": float(d.mean(0).mean()), "iou": float(iou.mean(0).mean()),
               "dice_present": float(d[pres].mean()) if pres.any() else math.nan,
               "n_frames": len(frames), "n_pairs": int(d.numel()), "n_present_pairs": int(pres.sum())}
        per_class = {c: {"dice": float(d[:, j].mean()), "iou": float(iou[:, j].mean()),
                         "dice_present": float(d[pres[:, j], j].mean()) if pres[:, j].any() else None,
                         "frames_present": int(pres[:, j].sum())} for j, c in enumerate(self.classes)}
        for c, v in per_class.items():
            out[f"dice_{c}"], out[f"iou_{c}"] = v["dice"], v["iou"]
        rows = [{"frame": f.id, "class": c, "present": int(pres[j, k]), "dice": float(d[j, k]), "iou": float(iou[j, k])}
                for j, f in enumerate(frames) for k, c in enumerate(self.classes)]
        return {**out, "per_class": per_class, "text_tower": self.desc}, rows

    def figures(self, net, frames, metrics, rows, split) -> None:
        for c, (img, gt, pr, fid) in self.shown.items():
            segc.overlay(self.ctx, f"overlay_{c.replace(' ', '_')}", img, gt, pr,
                         f"{c} — {fid} (green truth, red prediction)")

    def class_table(self, metrics: dict) -> str:
        per_class = metrics["per_class"]
        return markdown_table(["class", "Dice", "IoU", "Dice (frames with the class)", "frames with the class"],
                              [[c, v["dice"], v["iou"], v["dice_present"], v["frames_present"]]
                               for c, v in per_class.items()]
                              + [["**mean**", metrics["dice"], metrics["iou"], metrics["dice_present"],
                                  metrics["n_present_pairs"]]])

    def summary_line(self, split: str, metrics: dict) -> str:
        return "\n".join([f"{split}: class-mean Dice {metrics['dice']:.4f}  IoU {metrics['iou']:.4f}  (present pairs "
                          f"{metrics['dice_present']:.4f})", *self.class_table(metrics).splitlines()[2:]])

    def paper_sections(self, metrics: dict) -> list[str]:
        info, desc = self.ctx.run.info(), self.desc
        base = info.get("base_kind") or "?"
        notes = [paper_note(self.ctx.spec, "comparison"),
                 f"- Text prompts: **{desc}**." + (" It is not CLIP: class names only get distinct fixed vectors, so "
                                                  "these numbers say nothing about CLIP prompting."
                                                  if desc == STANDIN_NAME else ""),
                 f"- Base SAM weights: {base} (sha256 `{str(info.get('base_sha256', ''))[:16]}…`)."
                 + (" Not the official SAM ViT-B: numbers are not comparable with the paper's."
                    if base != "checkpoint" else "")]
        return [f"## Per class ({metrics['split']})\n\n" + self.class_table(metrics), "\n".join(notes)]

    def ablate(self) -> dict:
        from .ablate import ablate

        return ablate(self)

    # -- stages on a finished run
    def trained_model(self, net=None, weights: str = "model.safetensors", **_) -> LoraSam:
        """The parent run's (or --checkpoint's) trainable weights on a base whose sha256 matches the recorded one;
        sets the text embeddings of the run's classes (``self.emb_by_class``, ``self.desc``)."""
        from safetensors import safe_open
        from safetensors.torch import load_file

        if self.ctx.checkpoint is not None:
            wpath = Path(self.ctx.checkpoint)
            run_dir = wpath.parent.parent
            text_file = run_dir / "checkpoints" / "text_embeddings.safetensors"
        else:
            run_dir = self.ctx.parent.path if self.ctx.parent is not None else None
            wpath = self.ctx.parent_file(f"checkpoints/{weights}")
            text_file = self.ctx.parent_file("checkpoints/text_embeddings.safetensors")
        try:
            with safe_open(str(wpath), "pt") as f:
                meta = f.metadata() or {}
                tensors = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 (safe_open has no __iter__)
        except Exception as e:
            raise UsageError(f"cannot read lorasam weights {wpath}: {e}",
                             fix="pass the checkpoints/model.safetensors of a lorasam train run") from None
        if "base_sha256" not in meta:
            raise UsageError(f"{wpath} records no base checkpoint sha256",
                             fix="pass the weights of a lorasam train run")
        self.ctx.run.update_info(parent_weights_sha256=sha256_file(wpath))
        mm = self.m.model
        sam = Sam(sam_config(mm.size, self.m.dataset.img_size))
        base = Path(mm.sam_checkpoint) if mm.sam_checkpoint else run_dir / "checkpoints" / "base.safetensors"
        if not mm.sam_checkpoint and not base.is_file():
            raise UsageError(f"the run was trained on base sha256 {meta['base_sha256'][:16]}…, which is not stored "
                             "in it", fix="pass that SAM checkpoint with -o model.sam_checkpoint=FILE")
        if not base.is_file():
            raise DataError("SAM checkpoint not found", file=str(base), fix="check -o model.sam_checkpoint")
        sha = sha256_file(base)
        if sha != meta["base_sha256"]:
            raise UsageError(f"base checkpoint {base} (sha256 {sha[:16]}…) is not the base these weights were trained "
                             f"on (sha256 {meta['base_sha256'][:16]}…); refusing to evaluate on a different base",
                             fix="pass the run's own base with -o model.sam_checkpoint=FILE")
        if base.suffix == ".safetensors":
            training.load_weights(sam, base)
        else:
            load_official_checkpoint(base, sam)
        model = self.build_model(sam)
        try:
            load_trainable_state_dict(model, tensors)
        except (KeyError, RuntimeError) as e:
            raise UsageError(f"weights in {wpath} do not fit this model: {str(e)[:200]}",
                             fix="check model.size and model.rank match the train run") from None
        self.ctx.run.update_info(base_sha256=sha, base_path=str(base), base_kind=meta.get("base_kind"))
        run_classes = meta.get("classes", "").split("\n")
        if text_file.is_file():
            emb_all, self.desc = load_file(str(text_file))["embeddings"], meta.get("text_tower", "")
        else:
            tower, self.desc = text_tower(mm.clip_checkpoint)
            emb_all = tower(run_classes)
        self.ctx.run.update_info(text_tower=self.desc, text_tower_is_clip=self.desc != STANDIN_NAME)
        self.emb_by_class = dict(zip(run_classes, emb_all, strict=True))
        return model.eval()

    def eval(self) -> dict:
        split = self.m.eval.split
        if split not in ("train", "val", "test"):
            raise UsageError(f"unknown split '{split}'", fix="use --split train | val | test")
        model = self.trained_model()
        missing = [c for c in self.classes if c not in self.emb_by_class]
        if missing:
            raise UsageError(f"the train run has no text embedding for class '{missing[0]}'",
                             fix=f"evaluate classes it was trained with: {', '.join(self.emb_by_class)}")
        frames = self.frames(split)
        if not frames:
            raise UsageError(f"the {split} split is empty", fix="name its videos in dataset.split")
        self.ctx.record_splits({split: frames})
        self.text_emb = torch.stack([self.emb_by_class[c] for c in self.classes])
        return self.report(model, split, frames)

    def predict_items(self) -> list[Path]:
        src = self.m.predict.input
        files = self.ctx.predict_inputs(src) if src else [f.image for f in self.frames(self.m.eval.split)]
        check_same_size(files, "input images")
        return files

    def predict_rows(self, net, files) -> list[dict]:
        from PIL import Image

        p = self.m.predict
        self.predicted = check_classes(p.classes, list(self.emb_by_class), "predict.classes") if p.classes \
            else list(self.emb_by_class)
        text_emb = torch.stack([self.emb_by_class[c] for c in self.predicted])
        run, rows = self.predictor.setup(Forward(net, text_logits)), []
        for f in files:
            img = np.asarray(open_image(f, "RGB"))
            small, _ = resize_pair(img, None, self.m.dataset.img_size)
            x = (torch.from_numpy(np.ascontiguousarray(small)).permute(2, 0, 1).float() - MEAN) / STD
            prob = torch.sigmoid(self.predictor(run, x[None], text_emb))[0]
            overlay = img.astype(np.float32)
            for k, c in enumerate(self.predicted):
                m = np.asarray(Image.fromarray((prob[k].numpy() > self.m.model.threshold).astype(np.uint8) * 255)
                               .resize((img.shape[1], img.shape[0]), Image.NEAREST)) > 0
                rel = f"predictions/{f.stem}_{c.replace(' ', '_')}.png"
                self.ctx.write_png(rel, m.astype(np.uint8) * 255)
                overlay[m] = 0.5 * overlay[m] + 0.5 * np.array(_PALETTE[k % len(_PALETTE)], np.float32)
                rows.append({"image": str(f), "class": c, "mask": rel, "pixels": int(m.sum())})
            self.ctx.write_png(f"figures/overlay_{f.stem}.png", overlay.clip(0, 255).astype(np.uint8))
        self.ctx.log(f"predicted {len(self.predicted)} class masks for {len(files)} image(s) into "
                     f"{self.ctx.path / 'predictions'}")
        return rows

    def predict_summary(self, rows: list[dict]) -> dict:
        return {"n_images": len({r["image"] for r in rows}), "classes": self.predicted, "text_tower": self.desc}


_PALETTE = [(255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 0), (255, 0, 255), (0, 255, 255), (255, 128, 0),
            (128, 0, 255), (0, 128, 255), (128, 255, 0), (255, 0, 128), (0, 255, 128)]
