"""lorasam's base SAM: the official checkpoint when given, else the card's stage A (a stand-in for SAM's own
pre-training on the fixture): every weight of the tiny SAM trained with box prompts (the box of each present
class's mask) on a colour-swapped copy (RGB → BRG) of the training frames; else, with a warning, random weights.
A base the run made itself is stored as ``checkpoints/base.safetensors``."""

from __future__ import annotations

from pathlib import Path

import lightning as L
import torch
import torch.nn.functional as F

from medrun.models.sam import Sam, load_official_checkpoint

from .. import training
from .pipeline import sam_config, seg_loss


def make_base(pipe, train_frames) -> tuple[Sam, Path, str]:
    """(SAM, the file its weights come from, kind: checkpoint | pretrain | random)."""
    mm = pipe.m.model
    sam = Sam(sam_config(mm.size, pipe.m.dataset.img_size))
    if mm.sam_checkpoint:
        path = Path(mm.sam_checkpoint)
        report = load_official_checkpoint(path, sam)
        pipe.ctx.log(f"SAM base {path}: {report.summary()}")
        return sam, path, "checkpoint"
    kind = "random"
    if pipe.m.pretrain.epochs > 0:
        pretrain(pipe, sam, train_frames)
        kind = "pretrain"
    else:
        pipe.ctx.log("WARNING: no SAM checkpoint (-o model.sam_checkpoint=sam_vit_b_01ec64.pth): the base is random; "
                     "numbers from random weights are meaningless")
    return sam, training.save_weights(sam, pipe.ctx.path / "checkpoints" / "base.safetensors", {"base": kind}), kind


def pretrain(pipe, sam: Sam, frames) -> None:
    p, workers = pipe.m.pretrain, pipe.m.train.num_workers
    pipe.ctx.log(f"stage A: pre-training every SAM weight with box prompts on colour-swapped frames, {p.epochs} epochs")
    for q in sam.parameters():
        q.requires_grad_(True)
    loader = torch.utils.data.DataLoader(pipe.dataset(frames, True, colour_swap=True), batch_size=p.batch_size,
                                         shuffle=True, num_workers=workers, persistent_workers=workers > 0)
    trainer = training.make_trainer(pipe.ctx, p.epochs, checkpoint=False, logger=False)
    training.fit(trainer, LitSamPretrain(sam, p.lr), train_dataloaders=loader)
    sam.eval()


def mask_box(mask: torch.Tensor) -> torch.Tensor:
    ys, xs = torch.nonzero(mask, as_tuple=True)
    return torch.stack([xs.min(), ys.min(), xs.max(), ys.max()]).float()


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
