"""The fusion model's training: Eq. 4 on every trainable tensor at each fusion event, α from Eq. 5.

``fuse_state`` is the rule on plain tensors (unit-tested against the formula); ``FusionEvents`` is the Lightning
callback that applies it every ``fusion.every`` optimizer steps, validates the fused model on the fixed validation
patches and keeps P (voxel accuracy) and L (cross-entropy) for the next event's α. Its state (events so far, last P
and L) is part of every checkpoint, so a resumed fusion run continues the same α sequence.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from lightning.pytorch.callbacks import Callback

FIRST_ALPHA = 0.01  # α before the first validation (card)


def alpha_eq5(accuracy: float, loss: float, batch_size: int) -> float:
    """Eq. 5, literally: α = (P + 1) / (1/L + N), clamped to [0, 1] (L = 0 gives α = 0)."""
    if loss <= 0:
        return 0.0
    return float(min(1.0, max(0.0, (accuracy + 1.0) / (1.0 / loss + batch_size))))


def fuse_state(student: dict, t1: dict, t2: dict, alpha: float, op: str = "sum",
               first: str = "input_conv.weight") -> dict:
    """Eq. 4 on each tensor of ``student`` (trainable tensors only): W ← α·W + (1−α)·(W¹ + W²) (``op="sum"``, the
    paper) or (1−α)·(W¹ + W²)/2 (``op="mean"``). The first convolution (``first``) has one input channel per teacher
    and as many as modalities in the student: input channel c of the student is blended with teacher c's only
    channel (each input channel has exactly one teacher, so sum and mean agree there). Returns new tensors."""
    out = {}
    for name, w in student.items():
        a, b = t1[name], t2[name]
        if name == first and w.ndim >= 2 and w.shape[1] == 2 and a.shape[1] == 1 and b.shape[1] == 1:
            teacher = torch.cat([a, b], dim=1)
        elif a.shape != w.shape or b.shape != w.shape:
            raise ValueError(f"fusion: {name} is {tuple(w.shape)} in the fusion model but {tuple(a.shape)} / "
                             f"{tuple(b.shape)} in the teachers")
        else:
            teacher = a + b if op == "sum" else (a + b) / 2
        out[name] = alpha * w + (1 - alpha) * teacher.to(w.dtype)
    return out


def trainable(net: torch.nn.Module) -> dict[str, torch.Tensor]:
    """Every trainable tensor (conv kernels and biases, BN γ/β; not BN running statistics), detached copies."""
    return {k: p.detach().clone() for k, p in net.named_parameters() if p.requires_grad}


@torch.no_grad()
def fuse_into(net: torch.nn.Module, t1: dict, t2: dict, alpha: float, op: str, first: str) -> None:
    params = dict(net.named_parameters())
    fused = fuse_state({k: params[k].detach() for k in t1}, t1, t2, alpha, op, first)
    for k, v in fused.items():
        params[k].copy_(v)


@torch.no_grad()
def validate(net: torch.nn.Module, patches) -> tuple[float, float]:
    """(voxel accuracy over all classes, mean cross-entropy) of ``net`` on ``(x, y)`` patches, in eval mode."""
    was = net.training
    net.eval()
    device = next(net.parameters()).device
    correct = total = 0
    loss = 0.0
    for x, y in patches:
        x, y = x.to(device), y.to(device)
        logits = net(x)
        loss += float(F.cross_entropy(logits, y, reduction="sum"))
        correct += int((logits.argmax(1) == y).sum())
        total += y.numel()
    net.train(was)
    return correct / max(1, total), loss / max(1, total)


class FusionEvents(Callback):
    """Every ``every`` optimizer steps: α (``eq5`` from the last validation, ``ramp``, ``const:v``), Eq. 4 into the
    fusion model, then a validation that gives P and L for the next α. ``events`` holds one row per event."""

    def __init__(self, t1: dict, t2: dict, patches, *, every: int, schedule: str, op: str, batch_size: int,
                 total_events: int, first: str = "input_conv.weight"):
        self.t1, self.t2, self.patches = t1, t2, patches
        self.every, self.schedule, self.op, self.n = every, schedule, op, batch_size
        self.total, self.first = max(1, total_events), first
        self.events: list[dict] = []
        self.last: tuple[float, float] | None = None

    def alpha(self) -> float:
        k = len(self.events)
        if self.schedule.startswith("const:"):
            return float(self.schedule.split(":", 1)[1])
        if self.schedule == "ramp":
            return FIRST_ALPHA + (1 - FIRST_ALPHA) * (k / (self.total - 1) if self.total > 1 else 1.0)
        return FIRST_ALPHA if self.last is None else alpha_eq5(*self.last, self.n)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        step = trainer.global_step
        if step == 0 or step % self.every:
            return
        a = self.alpha()
        fuse_into(pl_module.net, self.t1, self.t2, a, self.op, self.first)
        acc, loss = validate(pl_module.net, self.patches)
        self.last = (acc, loss)
        self.events.append({"event": len(self.events) + 1, "step": step, "epoch": trainer.current_epoch,
                            "alpha": a, "val_accuracy_after": acc, "val_loss_after": loss})
        pl_module.log("alpha", a, on_step=True, on_epoch=False)

    def state_dict(self) -> dict:
        return {"events": [dict(e) for e in self.events], "last": list(self.last) if self.last else None}

    def load_state_dict(self, state: dict) -> None:
        self.events = [dict(e) for e in state.get("events", [])]
        self.last = tuple(state["last"]) if state.get("last") else None


# -- the fuse stage -------------------------------------------------------------------------------------------------
def fuse_stage(p) -> dict:
    """Teachers as child runs (reused when complete), then the fusion model's fit with ``FusionEvents``; the train
    template saves, reports and writes paper.md; the teachers' numbers are added to the metrics."""
    import math

    from torch.utils.data import DataLoader

    from .. import training
    from ..sweep import Child
    from .pipeline import build_net

    m, ctx = p.m, p.ctx
    # the teachers do not depend on the fusion settings: their runs get the fusion section's defaults, so fusion
    # variants (Table 7's α, fusion.op, fusion.every) share one pair of teachers
    from .config import Fusion

    neutral = {f"fusion.{k}": v for k, v in Fusion().model_dump().items()}
    runs = ctx.sweep([Child(f"teacher-{mod}", {**neutral, "teacher.modality": mod}, stage="train-teacher",
                            labels={"modality": mod}) for mod in ("t1", "t2")], title="teacher")
    states, teacher_metrics = {}, {}
    for r in runs:
        mod = r.child.labels["modality"]
        net = training.load_weights(build_net(m.model, 1), r.run_dir / "checkpoints" / "model.safetensors")
        states[mod] = trainable(net)
        for k in ("dice_csf", "dice_gm", "dice_wm", "mean_dice", "loss_first", "loss_last", "loss_ratio"):
            if k in r.metrics:
                teacher_metrics[f"{mod}_{k}"] = r.metrics[k]
        teacher_metrics[f"{mod}_run"] = r.run_id[:12]
    t = m.train
    splits = p.splits()
    steps = math.ceil(t.patches_per_epoch / t.batch_size) * p.epochs
    every = m.fusion.every or math.ceil(t.patches_per_epoch / t.batch_size)
    patches = list(DataLoader(p.dataset(splits["val"], False), batch_size=t.batch_size))
    p._events = FusionEvents(states["t1"], states["t2"], patches, every=every, schedule=m.fusion.alpha,
                             op=m.fusion.op, batch_size=t.batch_size, total_events=steps // every)
    p._teachers = teacher_metrics
    metrics = p.train()
    return {**metrics, **teacher_metrics}


def after_fusion(p, events: FusionEvents) -> dict:
    """``fusion_events.csv``, the α figure and paper.md's fusion section; α statistics for the metrics."""
    from ..report import markdown_table

    rows = events.events
    p.ctx.write_csv("fusion_events.csv", rows)
    alphas = [r["alpha"] for r in rows]
    if rows:
        with p.ctx.figure("alpha", figsize=(5, 3.5)) as (fig, ax):
            ax.plot([r["step"] for r in rows], alphas, marker="o", label="α")
            ax.plot([r["step"] for r in rows], [r["val_accuracy_after"] for r in rows], marker="s",
                    label="val accuracy after fusion")
            ax.set_xlabel("optimizer step")
            ax.set_ylim(0, 1.05)
            ax.set_title(f"fusion events (α: {p.m.fusion.alpha}, op: {p.m.fusion.op})")
            ax.legend()
    teachers = getattr(p, "_teachers", {})
    shown = rows if len(rows) <= 12 else rows[:6] + rows[-6:]
    p._fusion_section = (
        f"## Fusion events\n\n{len(rows)} events every {events.every} optimizer steps; α schedule "
        f"`{p.m.fusion.alpha}`, teacher term `{p.m.fusion.op}` (Eq. 4). Teachers: T1 run `{teachers.get('t1_run')}`"
        f" (Dice CSF/GM/WM {teachers.get('t1_dice_csf', float('nan')):.3f}/"
        f"{teachers.get('t1_dice_gm', float('nan')):.3f}/{teachers.get('t1_dice_wm', float('nan')):.3f}), "
        f"T2 run `{teachers.get('t2_run')}` ({teachers.get('t2_dice_csf', float('nan')):.3f}/"
        f"{teachers.get('t2_dice_gm', float('nan')):.3f}/{teachers.get('t2_dice_wm', float('nan')):.3f}).\n\n"
        + markdown_table(["event", "step", "α", "val accuracy after", "val loss after"],
                         [[r["event"], r["step"], r["alpha"], r["val_accuracy_after"], r["val_loss_after"]]
                          for r in shown]))
    if not alphas:
        return {"fusion_events": 0}
    # the fusion phase proper starts at the first event (α = 0.01 there replaces the untrained net by the teachers'
    # term): the last epoch's loss over that of the first epoch that starts after it
    import math

    from ..report import read_series

    spe = math.ceil(p.m.train.patches_per_epoch / p.m.train.batch_size)
    after = math.ceil(rows[0]["step"] / spe)
    losses = dict(read_series(p.ctx.path / "logs" / "metrics.csv").get("train_loss", []))
    start = losses.get(float(after))
    ratio = losses[max(losses)] / start if start and max(losses) > after else float("nan")
    return {"loss_ratio_after_first_event": ratio, "fusion_events": len(rows), "alpha_first": alphas[0],
            "alpha_last": alphas[-1], "alpha_min": min(alphas), "alpha_max": max(alphas)}
