"""lorasam's base SAM: the official checkpoint when given, else the card's stage A (a stand-in for SAM's own
pre-training on the fixture): every weight of the tiny SAM trained with box prompts (the box of each present
class's mask) on a colour-swapped copy (RGB → BRG) of the training frames; else, with a warning, random weights.
A base the run made itself is stored as ``checkpoints/base.safetensors``.

Stage A checkpoints like every other training loop (issue 21): Lightning's ``ModelCheckpoint`` writes
``checkpoints/pretrain.ckpt`` (atomically, with this run's id and every RNG state) at each epoch end, and the
batches come from ``training.ResumableLoader``, so the same command after Ctrl-C or a kill resumes stage A at its
last finished epoch instead of starting it again. Once stage A is done its base is written with the run id in
the file's metadata and ``pretrain.ckpt`` (the full SAM with optimizer state, ~1 GB at ViT-B) is deleted; a
resume after that loads the base and goes straight to stage B, which resumes from ``last.ckpt``. Not resumable
within an epoch: ``trainer.checkpoint_every_n_steps`` writes ``last.ckpt``, the stage-B file. A resumed stage A
is not bitwise identical to an uninterrupted one (the first resumed batch's augmentation is drawn before
``ExactResume`` restores the RNG states)."""

from __future__ import annotations

from pathlib import Path

import lightning as L
import torch
import torch.nn.functional as F

from medrun.models.sam import Sam, load_official_checkpoint

from .. import training
from .pipeline import sam_config, seg_loss

PRETRAIN_CKPT = "pretrain.ckpt"


def make_base(pipe, train_frames) -> tuple[Sam, Path, str]:
    """(SAM, the file its weights come from, kind: checkpoint | pretrain | random)."""
    mm = pipe.m.model
    sam = Sam(sam_config(mm.size, pipe.m.dataset.img_size))
    if mm.sam_checkpoint and mm.sam_checkpoint.endswith(".safetensors"):  # a base made by a lorasam run (ablate)
        path = Path(mm.sam_checkpoint)
        training.load_weights(sam, path)
        pipe.ctx.log(f"SAM base {path}: the base of a lorasam run")
        return sam, path, _base_kind(path)
    if mm.sam_checkpoint:
        path = Path(mm.sam_checkpoint)
        report = load_official_checkpoint(path, sam)
        pipe.ctx.log(f"SAM base {path}: {report.summary()}")
        return sam, path, "checkpoint"
    kind = "pretrain" if pipe.m.pretrain.epochs > 0 else "random"
    base, run_id = pipe.ctx.path / "checkpoints" / "base.safetensors", str(pipe.ctx.run.info().get("id"))
    if kind == "pretrain" and _own_base(base, run_id):
        pipe.ctx.log(f"stage A: done before this resume; loading its base {base.name}")
        return training.load_weights(sam, base), base, kind
    if kind == "pretrain":
        pretrain(pipe, sam, train_frames)
    else:
        pipe.ctx.log("WARNING: no SAM checkpoint (-o model.sam_checkpoint=sam_vit_b_01ec64.pth): the base is random; "
                     "numbers from random weights are meaningless")
    training.save_weights(sam, base, {"base": kind, "run_id": run_id})
    (base.parent / PRETRAIN_CKPT).unlink(missing_ok=True)  # stage A is over: its resume file is not part of the run
    return sam, base, kind


def _base_kind(path: Path) -> str:
    """What the base file of another lorasam run was (pretrain | random; checkpoint when unrecorded)."""
    return training.weights_metadata(path).get("base") or "checkpoint"


def _own_base(path: Path, run_id: str) -> bool:
    """A base.safetensors that this run's finished stage A wrote (a kill during stage B leaves one; a damaged file
    has no metadata and is redone, not trusted)."""
    return training.weights_metadata(path).get("run_id") == run_id


def pretrain(pipe, sam: Sam, frames) -> None:
    """Stage A, resumed from ``checkpoints/pretrain.ckpt`` when an earlier attempt of this run left one."""
    p, workers, ctx = pipe.m.pretrain, pipe.m.train.num_workers, pipe.ctx
    resume = training.resume_checkpoint(ctx.run, PRETRAIN_CKPT)
    ctx.log(f"stage A: pre-training every SAM weight with box prompts on colour-swapped frames, {p.epochs} epochs")
    if resume:
        ctx.log(f"stage A: resuming from {PRETRAIN_CKPT}")
    for q in sam.parameters():
        q.requires_grad_(True)
    loader = training.ResumableLoader(pipe.dataset(frames, True, colour_swap=True), p.batch_size, pipe.m.seed,
                                      num_workers=workers, persistent_workers=workers > 0)
    ckpt = training.ModelCheckpoint(dirpath=ctx.path / "checkpoints", filename=PRETRAIN_CKPT.removesuffix(".ckpt"),
                                    save_top_k=1, monitor=None, enable_version_counter=False)
    trainer = training.make_trainer(ctx, p.epochs, checkpoint=False, logger=False, callbacks=[ckpt],
                                    enable_checkpointing=True)
    training.fit(trainer, LitSamPretrain(sam, p.lr), train_dataloaders=loader, ckpt_path=resume)
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
