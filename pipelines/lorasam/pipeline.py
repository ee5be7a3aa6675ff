"""lorasam, the method (card: shared/papers/lorasam.md).

Model: SAM ViT-B at 256² (`models.sam`), every SAM weight frozen; peft LoRA (r = 4, λ = 1) on every encoder
block's qkv/proj/lin1/lin2 and both neck convs; trainable position embedding, every "norm" parameter and the Text
Affine Layer (`models.sam_lora`): 974,080 trainable weights (672,000 / 1,578,240 / 2,786,560 at r = 2 / 8 / 16).
The prompt is the frozen text embedding of the bare class name, mapped by the TAL to one sparse token; the prompt
encoder gets no points, boxes or masks. Output: 64×64 logits → bilinear to the input size → sigmoid → 0.5.

Data: (frame, class name) pairs; a class absent from a frame has an empty target, scored 1 when the prediction is
empty too (Eq. 6). Frames are resized to ``img_size`` (bilinear), masks with nearest neighbour, then SAM's mean/std.
Augmentation (training only, ``train.augment``): rotation ±10° with p 0.5 (same on the mask), saturation ×2 with
p 0.2, brightness ×2 with p 0.5 ("scale of 2" read as a fixed factor).

Training: AdamW (lr 1e-4, weight decay 1e-2) on the trainable weights, StepLR(200 epochs, γ 0.2), focal (α 0.25,
γ 2) + Dice loss (``train.loss: focal`` for the paper's focal only). The checkpoint with the best validation
class-mean Dice is kept (held in memory; the last epoch when the split has no validation videos). Seed 0.

Evaluation: per (frame, class) Dice and IoU at 0.5; a class's score is its mean over the split's frames; "Avg."
(``dice``) is the unweighted mean over classes (Table 1). Also ``dice_present``: the mean over pairs whose class is
in the frame (the card's smoke criterion).

Base weights and what a run stores:
* ``model.sam_checkpoint`` (an official SAM ViT-B ``.pth``, loaded by `models.sam.load_official_checkpoint`; pos
  embedding pooled 64→16, global rel-pos tables interpolated 127→31): the run stores only the trainable weights
  (``checkpoints/model.safetensors``: adapters, norms, position embedding, TAL with its BatchNorm statistics) and,
  in that file's metadata and in ``run.json``, the sha256 of the base checkpoint. ``eval``/``predict`` rebuild
  the model from a base checkpoint and refuse (exit 2) when its sha256 is not the recorded one.
* Without a SAM checkpoint the base is made by the run itself and written to ``checkpoints/base.safetensors``
  (then its sha256 is the one recorded): with ``pretrain.epochs > 0`` it is the card's stage A (below), else the
  random initialisation (a warning says the numbers are then meaningless).

Two-stage smoke run (card): ONE stage, ``train``, does both. Stage A (``pretrain:`` section) trains every weight of
the tiny SAM (embed 96, depth 4, 3 heads, global blocks 1/3, window 4, 64², prompt/decoder dim 64) with box
prompts (the box of each present class's mask) on a colour-swapped copy (RGB → BRG) of the training frames, as
SAM's pre-training stand-in. The text-prompted Dice of that base with fresh LoRA/TAL on the test video is recorded
as ``zero_shot_dice_present``. Stage B is LoRASAM with text prompts. A single stage keeps `medrun smoke` (which runs
one stage) and the run-finding of ``eval``/``predict`` unchanged.

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
2-core machine (set OMP_NUM_THREADS=1): with two threads every small op slowed ~100× there.

Real-data runs were not possible here (no data, no weights): paper.md says so for every fixture run.
"""

from __future__ import annotations

import math
import time
from pathlib import Path

import lightning as L
import numpy as np
import torch
import torch.nn.functional as F

from medrun.artifacts import sha256_file
from medrun.datasets import cholecseg8k, endovis
from medrun.datasets.images import IMAGE_SUFFIXES
from medrun.datasets.surgical import check_same_size, open_image
from medrun.errors import DataError, UsageError, unknown_name
from medrun.models.clip_text import STANDIN_NAME, text_tower
from medrun.models.sam import Sam, SamConfig, load_official_checkpoint, sam_vit_b_config
from medrun.models.sam_lora import (
    LoraSam,
    load_trainable_state_dict,
    lorasam_param_breakdown,
    trainable_state_dict,
)

from .. import training
from ..base import Pipeline
from ..report import learning_curves, markdown_table, paper_md
from ..tasks import segmentation as segc

TINY = dict(embed_dim=96, depth=4, num_heads=3, window_size=4, global_attn_indexes=(1, 3), prompt_dim=64,
            decoder_mlp_dim=128, iou_head_hidden_dim=64)
MEAN = torch.tensor([123.675, 116.28, 103.53]).view(3, 1, 1)
STD = torch.tensor([58.395, 57.12, 57.375]).view(3, 1, 1)


def sam_config(size: str, img_size: int) -> SamConfig:
    return SamConfig(img_size=img_size, **TINY) if size == "tiny" else sam_vit_b_config(img_size)


# -- data ---------------------------------------------------------------------------------------------------------
def dataset_classes(name: str) -> list[str]:
    return {"cholecseg8k": cholecseg8k.CLASSES, "endovis17": endovis.CLASSES17, "endovis18": endovis.CLASSES18}[name]


def loader_for(name: str):
    return {"cholecseg8k": cholecseg8k.load, "endovis17": endovis.load17, "endovis18": endovis.load18}[name]


def check_classes(names, known: list[str], where: str) -> list[str]:
    for n in names:
        if n not in known:
            err = unknown_name(f"class name (in {where})", n, known, fallback=f"choose from: {', '.join(known)}")
            raise UsageError(err.message, fix=err.fix)
    return list(names)


def resize_pair(image: np.ndarray, masks: np.ndarray | None, size: int):
    from PIL import Image

    img = np.asarray(Image.fromarray(image).resize((size, size), Image.BILINEAR))
    if masks is None:
        return img, None
    out = np.stack([np.asarray(Image.fromarray(m.astype(np.uint8)).resize((size, size), Image.NEAREST)) > 0
                    for m in masks]) if len(masks) else np.zeros((0, size, size), bool)
    return img, out


class FrameSet(torch.utils.data.Dataset):
    """Frames → (normalised image (3, S, S), masks (C, S, S) float). Resized frames are cached in memory."""

    def __init__(self, frames, load, classes, size, augment="none", colour_swap=False):
        self.frames, self.load, self.classes, self.size = frames, load, classes, size
        self.augment, self.colour_swap = augment, colour_swap
        self._cache: dict[int, tuple] = {}

    def __len__(self):
        return len(self.frames)

    def raw(self, i):
        if i not in self._cache:
            img, masks = self.load(self.frames[i], self.classes)
            self._cache[i] = resize_pair(img, masks, self.size)
        return self._cache[i]

    def __getitem__(self, i):
        img, masks = self.raw(i)
        x = torch.from_numpy(np.array(img)).permute(2, 0, 1).float()
        y = torch.from_numpy(np.array(masks)).float()
        if self.colour_swap:
            x = x[[2, 0, 1]]
        if self.augment == "card":
            x, y = augment(x, y)
        elif self.augment == "dihedral":
            x, y = dihedral(x, y)
        return (x - MEAN) / STD, y


def augment(x: torch.Tensor, y: torch.Tensor):
    """Card: rotation ±10° p 0.5 (image bilinear, mask nearest), saturation ×2 p 0.2, brightness ×2 p 0.5; x in 0..255."""
    if torch.rand(()) < 0.5:
        a = math.radians(float(torch.empty(()).uniform_(-10, 10)))
        theta = torch.tensor([[math.cos(a), -math.sin(a), 0.0], [math.sin(a), math.cos(a), 0.0]]).unsqueeze(0)
        grid = F.affine_grid(theta, (1, 1, *x.shape[-2:]), align_corners=False)
        x = F.grid_sample(x[None], grid, mode="bilinear", align_corners=False)[0]
        if y.shape[0]:
            y = F.grid_sample(y[None], grid, mode="nearest", align_corners=False)[0]
    if torch.rand(()) < 0.2:
        grey = (0.299 * x[0] + 0.587 * x[1] + 0.114 * x[2])[None]
        x = (grey + 2.0 * (x - grey)).clamp(0, 255)
    if torch.rand(()) < 0.5:
        x = (2.0 * x).clamp(0, 255)
    return x, y


def dihedral(x: torch.Tensor, y: torch.Tensor):
    """A random element of the square's symmetry group (flips and a transpose), the same on image and masks."""
    if torch.rand(()) < 0.5:
        x, y = x.flip(-1), y.flip(-1)
    if torch.rand(()) < 0.5:
        x, y = x.flip(-2), y.flip(-2)
    if torch.rand(()) < 0.5:
        x, y = x.transpose(-1, -2), y.transpose(-1, -2)
    return x.contiguous(), y.contiguous()


def mask_box(mask: torch.Tensor) -> torch.Tensor:
    ys, xs = torch.nonzero(mask, as_tuple=True)
    return torch.stack([xs.min(), ys.min(), xs.max(), ys.max()]).float()


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
    def __init__(self, model: LoraSam, text_emb: torch.Tensor, t, threshold: float):
        super().__init__()
        self.model = model
        self.register_buffer("text_emb", text_emb.clone())
        self.t, self.threshold = t, threshold
        self.loss = seg_loss(t.loss, t.focal_alpha, t.focal_gamma)
        self.best_dice, self.best_state = -1.0, None
        self.epoch_losses: list[float] = []
        self._val: list[torch.Tensor] = []
        self._sum, self._n = 0.0, 0

    def configure_optimizers(self):
        params = [p for p in self.model.parameters() if p.requires_grad]
        opt = torch.optim.AdamW(params, lr=self.t.lr, weight_decay=self.t.weight_decay)
        sched = torch.optim.lr_scheduler.StepLR(opt, step_size=self.t.step_size, gamma=self.t.gamma)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "epoch"}}

    def training_step(self, batch, _):
        x, y = batch
        logits = text_logits(self.model, x, self.text_emb)
        loss = self.loss(logits.flatten(0, 1).unsqueeze(1), y.flatten(0, 1).unsqueeze(1))
        self._sum += float(loss.detach()) * x.shape[0]
        self._n += x.shape[0]
        self.log("train_loss", loss, on_step=False, on_epoch=True, prog_bar=True, batch_size=x.shape[0])
        return loss

    def on_train_epoch_end(self):
        self.epoch_losses.append(self._sum / max(1, self._n))
        self._sum, self._n = 0.0, 0

    def validation_step(self, batch, _):
        x, y = batch
        pred = torch.sigmoid(text_logits(self.model, x, self.text_emb)) > self.threshold
        self._val.append(pair_dice(pred, y > 0.5))

    def on_validation_epoch_end(self):
        if not self._val:
            return
        d = torch.cat(self._val).mean(0).mean()  # class means, then their mean
        self._val = []
        self.log("val_dice", d, prog_bar=True)
        if not self.trainer.sanity_checking and float(d) > self.best_dice:
            self.best_dice = float(d)
            self.best_state = {k: v.detach().clone() for k, v in trainable_state_dict(self.model).items()}


def pair_dice(pred: torch.Tensor, gt: torch.Tensor) -> torch.Tensor:
    """(B, C, H, W) bool → (B, C) Dice with empty/empty = 1 (Eq. 6)."""
    inter = (pred & gt).flatten(2).sum(-1).float()
    total = pred.flatten(2).sum(-1).float() + gt.flatten(2).sum(-1).float()
    return torch.where(total > 0, 2 * inter / total.clamp(min=1), torch.ones_like(total))


class LitSamPretrain(L.LightningModule):
    """Stage A: all SAM weights, box prompts (one per present class), focal + Dice."""

    def __init__(self, sam: Sam, lr: float):
        super().__init__()
        self.sam, self.lr = sam, lr
        self.loss = seg_loss("focal+dice", 0.25, 2.0)

    def configure_optimizers(self):
        return torch.optim.AdamW(self.sam.parameters(), lr=self.lr, weight_decay=0.0)

    def training_step(self, batch, _):
        x, y = batch
        idx, boxes, targets = [], [], []
        for b in range(x.shape[0]):
            for c in range(y.shape[1]):
                if y[b, c].any():
                    idx.append(b)
                    boxes.append(mask_box(y[b, c]))
                    targets.append(y[b, c])
        if not idx:
            return None
        emb = self.sam.image_encoder(x)[torch.tensor(idx)]
        sparse, dense = self.sam.prompt_encoder(boxes=torch.stack(boxes))
        low, _ = self.sam.mask_decoder(emb, self.sam.prompt_encoder.get_dense_pe(), sparse, dense, False)
        logits = F.interpolate(low, size=x.shape[-2:], mode="bilinear", align_corners=False)
        loss = self.loss(logits, torch.stack(targets).unsqueeze(1))
        self.log("pretrain_loss", loss, on_step=False, on_epoch=True, batch_size=x.shape[0])
        return loss


# -- the pipeline -------------------------------------------------------------------------------------------------
class LoraSamPipeline(Pipeline):
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
        if d.name == "cholecseg8k":
            if not names:
                return []
            frames = cholecseg8k.read(root, [str(v) for v in names])
        else:
            read = endovis.read17 if d.name == "endovis17" else endovis.read18
            ids = [int(v) for v in names] if names is not None else None
            if split != "test" and not names:
                return []
            frames = read(root, "test" if split == "test" else "train", ids)
        if not frames:
            raise DataError(f"no frames for the {split} split under {root}", fix="check dataset.split in the manifest")
        check_same_size([f.image for f in frames], f"{split} frames")
        return frames

    def splits(self) -> dict:
        splits = {s: self.frames(s) for s in ("train", "val", "test")}
        import json

        lock = json.loads((self.ctx.run.path / "data.lock.json").read_text())
        lock["splits"] = {k: sorted({f.video for f in v}) for k, v in splits.items()}
        lock["split_frames"] = {k: len(v) for k, v in splits.items()}
        self.ctx.run.write_json("data.lock.json", lock)
        return splits

    def frameset(self, frames, augment="none", colour_swap=False) -> FrameSet:
        return FrameSet(frames, loader_for(self.m.dataset.name), self.classes, self.m.dataset.img_size, augment, colour_swap)

    def loader(self, ds, batch_size, shuffle):
        return torch.utils.data.DataLoader(ds, batch_size=batch_size, shuffle=shuffle, num_workers=self.m.train.num_workers,
                                           persistent_workers=self.m.train.num_workers > 0)

    # -- text
    def text_embeddings(self, classes: list[str]) -> tuple[torch.Tensor, str]:
        tower, desc = text_tower(self.m.model.clip_checkpoint)
        emb = tower(classes).float()
        from medrun.artifacts import atomic_write
        from medrun.pipelines.training import safetensors_bytes

        atomic_write(self.ctx.run.path / "checkpoints" / "text_embeddings.safetensors",
                     safetensors_bytes({"embeddings": emb}, {"classes": "\n".join(classes), "tower": desc}))
        self.ctx.run.update_info(text_tower=desc, text_tower_is_clip=desc != STANDIN_NAME)
        if desc == STANDIN_NAME:
            self.ctx.log(f"text prompts: {STANDIN_NAME} — pass -o model.clip_checkpoint=DIR for CLIP ViT-B/32")
        return emb, desc

    # -- base weights
    def make_base(self, train_frames) -> tuple[Sam, Path, str]:
        mm = self.m.model
        sam = Sam(sam_config(mm.size, self.m.dataset.img_size))
        if mm.sam_checkpoint:
            path = Path(mm.sam_checkpoint)
            report = load_official_checkpoint(path, sam)
            self.ctx.log(f"SAM base {path}: {report.summary()}")
            return sam, path, "checkpoint"
        kind = "random"
        if self.m.pretrain.epochs > 0:
            self.pretrain(sam, train_frames)
            kind = "pretrain"
        else:
            self.ctx.log("WARNING: no SAM checkpoint (-o model.sam_checkpoint=sam_vit_b_01ec64.pth): the base is random; "
                         "numbers from random weights are meaningless")
        path = training.save_weights(sam, self.ctx.run.path / "checkpoints" / "base.safetensors", {"base": kind})
        return sam, path, kind

    def pretrain(self, sam: Sam, frames) -> None:
        p = self.m.pretrain
        self.ctx.log(f"stage A: pre-training every SAM weight with box prompts on colour-swapped frames, {p.epochs} epochs")
        for q in sam.parameters():
            q.requires_grad_(True)
        module = LitSamPretrain(sam, p.lr)
        trainer = training.make_trainer(self.ctx, p.epochs, checkpoint=False, logger=False)
        training.fit(trainer, module, train_dataloaders=self.loader(self.frameset(frames, augment=p.augment, colour_swap=True),
                                                                    p.batch_size, True))
        sam.eval()

    # -- stages
    def train(self) -> dict:
        classes, t = self.classes, self.m.train
        splits = self.splits()
        if not splits["train"]:
            raise UsageError("dataset.split.train is empty", fix="name the training videos in dataset.split.train")
        self.ctx.log(f"{self.m.dataset.name}: train {len(splits['train'])} · val {len(splits['val'])} · "
                     f"test {len(splits['test'])} frames; classes: {', '.join(classes)}")
        text_emb, desc = self.text_embeddings(classes)
        sam, base_path, base_kind = self.make_base(splits["train"])
        base_sha = sha256_file(base_path)
        self.ctx.run.update_info(base_sha256=base_sha, base_path=str(base_path), base_kind=base_kind)
        model = self.build_model(sam)
        extra = {}
        if base_kind == "pretrain":
            zs = self.evaluate(model, text_emb, splits["test"])
            extra = {"zero_shot_dice": zs["dice"], "zero_shot_dice_present": zs["dice_present"]}
            self.ctx.log(f"stage A zero-shot with text on test: Dice {zs['dice']:.4f} (present pairs {zs['dice_present']:.4f})")
            self.ctx.log("stage B: LoRASAM with text prompts")
        module = LitLoraSam(model, text_emb, t, self.m.model.threshold)
        trainer = training.make_trainer(self.ctx, t.epochs, check_val_every_n_epoch=1)
        t0 = time.perf_counter()
        val = self.loader(self.frameset(splits["val"]), t.batch_size, False) if splits["val"] else None
        training.fit(trainer, module, train_dataloaders=self.loader(self.frameset(splits["train"], augment=t.augment),
                                                                    t.batch_size, True),
                     val_dataloaders=val, ckpt_path=training.resume_checkpoint(self.ctx.run))
        secs = (time.perf_counter() - t0) / max(1, t.epochs)
        if module.best_state is not None:
            load_trainable_state_dict(model, module.best_state)
        model.eval()
        meta = {"pipeline": "lorasam", "base_sha256": base_sha, "base_kind": base_kind, "rank": self.m.model.rank,
                "size": self.m.model.size, "classes": "\n".join(classes), "text_tower": desc}
        from medrun.artifacts import atomic_write
        from medrun.pipelines.training import safetensors_bytes

        atomic_write(self.ctx.run.path / "checkpoints" / "model.safetensors",
                     safetensors_bytes(trainable_state_dict(model), meta))
        learning_curves(self.ctx.run.path / "logs" / "metrics.csv", self.ctx.run.path / "figures" / "learning_curves.png")
        metrics = self.report(model, text_emb, splits["test"], "test", desc)
        losses = module.epoch_losses
        metrics.update(extra)
        if "zero_shot_dice_present" in extra:
            metrics["dice_gain"] = metrics["dice_present"] - extra["zero_shot_dice_present"]
        metrics.update(loss_first=losses[0], loss_last=losses[-1], loss_drop=losses[0] - losses[-1],
                       best_val_dice=module.best_dice if module.best_state is not None else None,
                       secs_per_epoch=round(secs, 3), base_sha256=base_sha, base_kind=base_kind,
                       params_trainable=sum(p.numel() for p in model.parameters() if p.requires_grad),
                       params_total=sum(p.numel() for p in model.parameters()),
                       params_breakdown=lorasam_param_breakdown(model))
        return metrics

    def evaluate(self, model, text_emb, frames, keep=None) -> dict:
        """Per (frame, class) Dice/IoU → class means (Eq. 6), their mean, and the mean over present pairs."""
        model.eval()
        ds = self.frameset(frames)
        rows, d_all, i_all, present = [], [], [], []
        with torch.no_grad():
            for start in range(0, len(ds), self.m.train.batch_size):
                items = [ds[i] for i in range(start, min(len(ds), start + self.m.train.batch_size))]
                x = torch.stack([a for a, _ in items])
                y = torch.stack([b for _, b in items]) > 0.5
                pred = torch.sigmoid(text_logits(model, x, text_emb)) > self.m.model.threshold
                inter = (pred & y).flatten(2).sum(-1).float()
                union = (pred | y).flatten(2).sum(-1).float()
                d = pair_dice(pred, y)
                iou = torch.where(union > 0, inter / union.clamp(min=1), torch.ones_like(union))
                d_all.append(d)
                i_all.append(iou)
                present.append(y.flatten(2).any(-1))
                if keep is not None:
                    keep(start, x, y, pred)
        d, iou, pres = torch.cat(d_all), torch.cat(i_all), torch.cat(present)
        classes = self.classes
        out = {"dice": float(d.mean(0).mean()), "iou": float(iou.mean(0).mean()),
               "dice_present": float(d[pres].mean()) if pres.any() else math.nan,
               "n_frames": len(frames), "n_pairs": int(d.numel()), "n_present_pairs": int(pres.sum())}
        out["per_class"] = {c: {"dice": float(d[:, j].mean()), "iou": float(iou[:, j].mean()),
                                "dice_present": float(d[pres[:, j], j].mean()) if pres[:, j].any() else None,
                                "frames_present": int(pres[:, j].sum())} for j, c in enumerate(classes)}
        for j, f in enumerate(frames):
            for k, c in enumerate(classes):
                rows.append({"frame": f.id, "class": c, "present": int(pres[j, k]), "dice": float(d[j, k]),
                             "iou": float(iou[j, k])})
        out["_rows"] = rows
        return out

    def report(self, model, text_emb, frames, split: str, desc: str) -> dict:
        classes = self.classes
        shown: dict[str, tuple] = {}

        def keep(start, x, y, pred):  # first frame where each class is present, for the overlay figures
            for b in range(x.shape[0]):
                for k, c in enumerate(classes):
                    if c not in shown and bool(y[b, k].any()):
                        img = (x[b] * STD + MEAN).clamp(0, 255).permute(1, 2, 0).numpy() / 255.0
                        shown[c] = (img, y[b, k].numpy(), pred[b, k].numpy(), frames[start + b].id)

        res = self.evaluate(model, text_emb, frames, keep)
        rows = res.pop("_rows")
        segc.write_per_case(self.ctx.run, rows)
        for c, (img, gt, pr, fid) in shown.items():
            segc.overlay_png(img, gt, pr, self.ctx.run.path / "figures" / f"overlay_{c.replace(' ', '_')}.png",
                             f"{c} — {fid} (green truth, red prediction)")
        metrics = {"split": split, **{k: v for k, v in res.items() if k != "per_class"}}
        for c, v in res["per_class"].items():
            metrics[f"dice_{c}"] = v["dice"]
            metrics[f"iou_{c}"] = v["iou"]
        metrics["per_class"] = res["per_class"]
        metrics["text_tower"] = desc
        self.ctx.log(f"{split}: class-mean Dice {res['dice']:.4f}  IoU {res['iou']:.4f}  (present pairs {res['dice_present']:.4f})")
        table = markdown_table(["class", "Dice", "IoU", "Dice (frames with the class)", "frames with the class"],
                               [[c, v["dice"], v["iou"], v["dice_present"], v["frames_present"]] for c, v in res["per_class"].items()]
                               + [["**mean**", res["dice"], res["iou"], res["dice_present"], res["n_present_pairs"]]])
        for line in table.splitlines()[2:]:
            self.ctx.log(line)
        self.ctx.run.write_text("paper.md", paper_md(self.ctx.spec, self.m, metrics, self.ctx, sections=[
            "## Per class (" + split + ")\n\n" + table, self._notes(desc)]))
        return metrics

    def _notes(self, desc: str) -> str:
        info = self.ctx.run.info()
        base = info.get("base_kind") or "?"
        lines = ["## Notes on the comparison", "",
                 f"- Text prompts: **{desc}**." + (" It is not CLIP: class names only get distinct fixed vectors, so "
                                                  "these numbers say nothing about CLIP prompting." if desc == STANDIN_NAME else ""),
                 f"- Base SAM weights: {base} (sha256 `{str(info.get('base_sha256', ''))[:16]}…`)."
                 + (" Not the official SAM ViT-B: numbers are not comparable with the paper's." if base != "checkpoint" else ""),
                 "- Dice per (frame, class) with empty/empty = 1 (Eq. 6); a class's score is its mean over frames, the "
                 "mean is unweighted over classes. IoU is named but not reported in the paper.",
                 "- Validation videos are not given in the paper; this run's split is in data.lock.json."]
        return "\n".join(lines)

    # -- stages on a finished run
    def trained(self) -> tuple[LoraSam, torch.Tensor, str]:
        """The parent run's (or --checkpoint's) trainable weights on a base whose sha256 matches the recorded one."""
        from safetensors import safe_open

        if self.ctx.checkpoint is not None:
            wpath = Path(self.ctx.checkpoint)
            run_dir = wpath.parent.parent
        else:
            run_dir = self.ctx.parent.path
            wpath = run_dir / "checkpoints" / "model.safetensors"
            recorded = self.ctx.parent.recorded_hashes()
            for rel in ("checkpoints/model.safetensors", "checkpoints/text_embeddings.safetensors"):
                if sha256_file(run_dir / rel) != recorded.get(rel):
                    raise DataError(f"{run_dir / rel} does not match its run's MANIFEST.sha256",
                                    fix="the run was altered after it finished; run it again with --force")
        try:
            with safe_open(str(wpath), "pt") as f:
                meta = f.metadata() or {}
                tensors = {k: f.get_tensor(k) for k in f.keys()}
        except Exception as e:
            raise UsageError(f"cannot read lorasam weights {wpath}: {e}",
                             fix="pass the checkpoints/model.safetensors of a lorasam train run") from None
        if "base_sha256" not in meta:
            raise UsageError(f"{wpath} records no base checkpoint sha256", fix="pass the weights of a lorasam train run")
        self.ctx.run.update_info(parent_weights_sha256=sha256_file(wpath))
        mm = self.m.model
        sam = Sam(sam_config(mm.size, self.m.dataset.img_size))
        if mm.sam_checkpoint:
            base = Path(mm.sam_checkpoint)
        else:
            base = run_dir / "checkpoints" / "base.safetensors"
            if not base.is_file():
                raise UsageError(f"the run was trained on base sha256 {meta['base_sha256'][:16]}…, which is not stored in it",
                                 fix="pass that SAM checkpoint with -o model.sam_checkpoint=FILE")
        if not base.is_file():
            raise DataError("SAM checkpoint not found", file=str(base), fix="check -o model.sam_checkpoint")
        sha = sha256_file(base)
        if sha != meta["base_sha256"]:
            raise UsageError(f"base checkpoint {base} (sha256 {sha[:16]}…) is not the base these weights were trained on "
                             f"(sha256 {meta['base_sha256'][:16]}…); refusing to evaluate on a different base",
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
        text_file = run_dir / "checkpoints" / "text_embeddings.safetensors"
        if text_file.is_file():
            from safetensors.torch import load_file

            emb_all = load_file(str(text_file))["embeddings"]
            desc = meta.get("text_tower", "")
        else:
            emb_all, desc = text_tower(mm.clip_checkpoint)[0](run_classes), text_tower(mm.clip_checkpoint)[1]
        self.ctx.run.update_info(text_tower=desc, text_tower_is_clip=desc != STANDIN_NAME)
        return model.eval(), dict(zip(run_classes, emb_all, strict=True)), desc

    def eval(self) -> dict:
        split = self.m.eval.split
        if split not in ("train", "val", "test"):
            raise UsageError(f"unknown split '{split}'", fix="use --split train | val | test")
        model, emb_by_class, desc = self.trained()
        classes = self.classes
        missing = [c for c in classes if c not in emb_by_class]
        if missing:
            raise UsageError(f"the train run has no text embedding for class '{missing[0]}'",
                             fix=f"evaluate classes it was trained with: {', '.join(emb_by_class)}")
        frames = self.frames(split)
        if not frames:
            raise UsageError(f"the {split} split is empty", fix="name its videos in dataset.split")
        text_emb = torch.stack([emb_by_class[c] for c in classes])
        return self.report(model, text_emb, frames, split, desc)

    def predict(self) -> dict:
        p = self.m.predict
        model, emb_by_class, desc = self.trained()
        classes = check_classes(p.classes, list(emb_by_class), "predict.classes") if p.classes else list(emb_by_class)
        if p.input:
            src = Path(p.input)
            if not src.exists():
                raise DataError(f"predict.input not found: {src}", fix="-o predict.input=/path/to/image_or_folder")
            files = [src] if src.is_file() else sorted(q for q in src.iterdir() if q.suffix.lower() in IMAGE_SUFFIXES)
            if not files:
                raise DataError(f"no images in {src}", fix="point predict.input at .png/.jpg frames")
        else:
            files = [f.image for f in self.frames(self.m.eval.split)]
        check_same_size(files, "input images")
        text_emb = torch.stack([emb_by_class[c] for c in classes])
        size = self.m.dataset.img_size
        out_dir = self.ctx.run.path / "predictions"
        rows = []
        from PIL import Image

        for f in files:
            img = np.asarray(open_image(f, "RGB"))
            small, _ = resize_pair(img, None, size)
            x = (torch.from_numpy(np.ascontiguousarray(small)).permute(2, 0, 1).float() - MEAN) / STD
            with torch.no_grad():
                prob = torch.sigmoid(text_logits(model, x[None], text_emb))[0]
            overlay = img.astype(np.float32)
            for k, c in enumerate(classes):
                m = np.asarray(Image.fromarray((prob[k].numpy() > self.m.model.threshold).astype(np.uint8) * 255)
                               .resize((img.shape[1], img.shape[0]), Image.NEAREST)) > 0
                name = f"{f.stem}_{c.replace(' ', '_')}.png"
                _write(self.ctx.run, f"predictions/{name}", _png(m.astype(np.uint8) * 255))
                colour = np.array(_PALETTE[k % len(_PALETTE)], np.float32)
                overlay[m] = 0.5 * overlay[m] + 0.5 * colour
                rows.append({"image": str(f), "class": c, "mask": f"predictions/{name}", "pixels": int(m.sum())})
            _write(self.ctx.run, f"figures/overlay_{f.stem}.png", _png(overlay.clip(0, 255).astype(np.uint8)))
        segc.write_per_case(self.ctx.run, rows)
        self.ctx.log(f"predicted {len(classes)} class masks for {len(files)} image(s) into {out_dir}")
        return {"n_images": len(files), "classes": classes, "text_tower": desc}


_PALETTE = [(255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 0), (255, 0, 255), (0, 255, 255), (255, 128, 0),
            (128, 0, 255), (0, 128, 255), (128, 255, 0), (255, 0, 128), (0, 255, 128)]


def _png(arr: np.ndarray) -> bytes:
    import io

    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG")
    return buf.getvalue()


def _write(run, rel: str, data: bytes) -> None:
    from medrun.artifacts import atomic_write

    atomic_write(run.file(rel), data)
