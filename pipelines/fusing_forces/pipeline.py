"""fusing-forces, the method (card: docs/papers/fusing-forces.md).

Data (``datasets/etmira.py``, ``data.py``): every annotated side ``<ID>_<side>`` of DIR_ROOT (drawing in GT_REL);
the depth map only (``dataset.depth_suffix``, undocumented in the repo: default ``depth``). High-pass = depth −
Gaussian(depth, ``hp_sigma_px``) (the repo's 1 mm needs px/mm, which the data does not carry: default 16 px),
clipped to μ ± ``clip_std``·σ (paper 3; repo 4) and normalised with mean/sd over mirror pixels (SAM mask, else the
largest albedo-Otsu component, flagged ``mask_source = otsu`` in prepare's table), 0 outside the mirror. Each side
is padded at the bottom/right to a multiple of tile_grid + 1 (6716 → 6720 for the real 5×5 grid) and cut into the
5×5 grid of half-overlapping tiles; tiles without annotation are dropped; each epoch draws ``patches_per_tile``
random ``patch``² patches per tile, resized to ``net_size``² (area averaging; masks ≥ 0.5), with rot90 and flips
(the paper's shifts are the random crop position; its parameters are not given). The ``test_mirrors`` sides give
their non-overlapping patches with ≥ ``min_mirror`` mirror pixels (Fig. 4 skips patches outside the mirror),
shuffled with ``split_seed`` and halved into val and test (the card notes the resulting mild optimism).

Networks: MONAI ``FlexibleUNet`` with an EfficientNet encoder (``model.backbone``, B6 in the paper; no pretrained
weights, as the repo) and decoder (256, 128, 64, 32, 16), one logit map. f_init takes X (1 channel); f_iter takes
[X, Δ, Y] (``model.iter_inputs``; "x+delta" and "x+y" give Table 1's Δ-only and Y-only networks). Y is f_init's
binary mask (paper) or its logits (``model.y_as_logits``, repo). MONAI's decoder differs slightly from smp's, so the
parameter count is FlexibleUNet's (B6, 3 inputs: 45,475,601), not smp's.

Training (both networks): Adam (lr 3e-4), batch 32, generalised Dice (``loss.kind``; ``dice`` for the repo's
DiceLoss), ReduceLROnPlateau on the validation score (max, factor 0.5, patience 3 — paper, not the repo's 5),
EarlyStopping (min_delta 1e-3, patience 10) with a 200-epoch cap, and the best validation epoch kept
(``ModelCheckpoint(monitor=…)``). f_init's score is val pFM; f_iter's is val pFM_Δ. f_iter gets one simulated stroke
per training patch, generated on the fly from the frozen f_init's mask (policy: add or erase at p 0.5, the other if
empty; width ~ G by default, ``interaction.train_width``). ``train`` runs (or reuses) ``train-init`` as a child run
for f_init unless ``model.init_ckpt`` names weights; it copies f_init's weights into its own checkpoints.

Strokes are drawn at network resolution, so the widths (measured on full-resolution drawings) are scaled by
net_size / patch (``interaction.scale_to_net``; the card does not say). Patch-level inference picks the operation
whose longest segment is longer; the sub-segment follows the skeleton path (``raster_subsegment`` for the repo).

Evaluation (``eval``, Table 1): test patches that hold lines (a patch without GT skeleton has no pseudo-recall);
per patch IoU, precision, pseudo-recall and pFM (``metrics.segmentation.pseudo_fmeasure``), averaged over patches.
pFM_Δ = (mean pFM(Y') − mean pFM(Y^Δ)) / mean pFM(Y^Δ), a ratio of means (the paper does not say; a per-patch ratio
is undefined when pFM(Y^Δ) = 0). ``eval.repeats`` (5) runs with different random strokes per width in
``eval.widths`` (μ for Table 1, G for the sampled-width line), plus add-only and erase-only at μ; mean ± sd. The
thresholded high-pass baseline predicts X < −t with t chosen on the val patches (a grid of 20 quantiles).

Other choices where the card is silent:
- ``train`` metrics hold one interaction on the test patches (width μ): pFM(Y), pFM(Y^Δ), pFM(Y'), pFM_Δ and
  ``pfm_gain_over_y``, plus f_init's test pFM and the high-pass baseline from its train-init child
  (``init_minus_highpass``); ``simulate`` carries them on so ``medrun smoke`` checks the card's three claims.
- ``model.bn_momentum`` (None = MONAI's EfficientNet default, 0.01) and ``model.iter_warm_start`` (f_iter starts from
  f_init: stem X channel copied, Δ/Y channels zero) are off in the paper's manifest and on in the fixture's: with
  0.01 the eval-mode BatchNorm statistics are still near their initial values after the smoke run's ~70 steps, and a
  randomly initialised f_iter does not catch up with f_init in 4 epochs.
- The card's flags map onto manifest keys: ``--root`` → ``--data-dir``, ``--test-mirrors`` →
  ``dataset.test_mirrors``, ``--exclude`` → ``dataset.exclude``, ``--depth-suffix`` → ``dataset.depth_suffix``,
  ``--loss dice`` → ``loss.kind``, ``--y-as-logits`` → ``model.y_as_logits``, ``--raster-subsegment`` →
  ``interaction.raster_subsegment``, ``--hp-sigma-px``/``--clip-std`` → ``dataset.*``, ``--init-ckpt`` →
  ``model.init_ckpt``, ``--iter-ckpt`` → ``--checkpoint`` (with ``model.init_ckpt`` for f_init);
  ``make-fixture`` is ``medrun fixture etmira``.
- Real sides (8,964 × 6,716) are held in memory as float32 after preprocessing (about 0.3 GB per side).
"""

from __future__ import annotations

import math
from functools import cached_property

import lightning as L
import numpy as np
import torch

from medrun.metrics.segmentation import iou, pseudo_fmeasure

from .. import training
from ..base import Pipeline
from ..report import paper_md, paper_note, paper_table
from . import data as D
from . import interaction as I


def build_unet(mm, in_channels: int) -> torch.nn.Module:
    from monai.networks.nets import FlexibleUNet

    net = FlexibleUNet(in_channels=in_channels, out_channels=1, backbone=mm.backbone, pretrained=False,
                       decoder_channels=tuple(mm.decoder_channels), spatial_dims=2)
    if mm.bn_momentum is not None:
        for mod in net.modules():
            if isinstance(mod, torch.nn.modules.batchnorm._BatchNorm):
                mod.momentum = mm.bn_momentum
    return net


def warm_start(f_iter: torch.nn.Module, f_init: torch.nn.Module, mm) -> torch.nn.Module:
    """f_iter with f_init's weights: every tensor of the same shape copied; the first convolution's X channel copied
    and its Δ / Y channels zero, so f_iter(X, Δ, Y) = f_init(X) before training."""
    own, src = f_iter.state_dict(), f_init.state_dict()
    x_at = mm.iter_inputs.split("+").index("x")
    for k, v in src.items():
        if k in own and own[k].shape == v.shape:
            own[k] = v.clone()
        elif k in own and own[k].ndim == 4 and own[k].shape[1] != v.shape[1]:
            own[k] = torch.zeros_like(own[k])
            own[k][:, x_at] = v[:, 0]
    f_iter.load_state_dict(own)
    return f_iter


def iter_channels(mm) -> int:
    return len(mm.iter_inputs.split("+"))


def make_loss(kind: str):
    from monai.losses import DiceLoss, GeneralizedDiceLoss

    return GeneralizedDiceLoss(sigmoid=True) if kind == "generalized_dice" else DiceLoss(sigmoid=True)


class Hints:
    """The simulated human at the manifest's settings, and f_iter's input from (X, Y logits, Δ)."""

    def __init__(self, m):
        self.ic, self.mm = m.interaction, m.model
        self.scale = m.dataset.net_size / m.dataset.patch if self.ic.scale_to_net else 1.0
        self.g = I.WidthStats(self.ic.mu, self.ic.sigma, self.ic.gamma_a, self.ic.gamma_loc, self.ic.gamma_scale, 0, 0)

    def width(self, mode: str, rng) -> float:
        w = {"mu": self.ic.mu, "min": self.ic.mu - 2 * self.ic.sigma}.get(mode)
        return self.scale * (self.g.sample(rng) if w is None else w)

    @property
    def tolerance(self) -> int:
        return max(0, round(self.ic.erase_tolerance * self.scale))

    def stroke(self, y, gt_skel, delta, rng, policy: str, width: str, segs=None) -> I.Stroke:
        return I.simulate(y, gt_skel, delta, rng, self.width(width, rng), policy=policy, tolerance=self.tolerance,
                          length=self.ic.length, raster=self.ic.raster_subsegment, segs=segs)

    def inputs(self, x: torch.Tensor, y_logits: torch.Tensor, delta: torch.Tensor) -> torch.Tensor:
        y = y_logits if self.mm.y_as_logits else (y_logits > 0).float()
        parts = {"x": x, "delta": delta.float(), "y": y}
        return torch.cat([parts[k] for k in self.mm.iter_inputs.split("+")], 1)

    def batch(self, y_logits, gt, rng, policy, width) -> tuple[torch.Tensor, list[I.Stroke]]:
        """One stroke per patch of a batch from an empty Δ: (Δ (B, 1, S, S) int8, strokes)."""
        strokes = []
        for yl, g in zip(y_logits[:, 0].numpy(), gt[:, 0].numpy() > 0.5, strict=True):
            strokes.append(self.stroke(yl > 0, I.skel(g), np.zeros(g.shape, np.int8), rng, policy, width))
        return torch.from_numpy(np.stack([s.delta for s in strokes])[:, None]), strokes


def pfm_rows(pred: np.ndarray, gt: np.ndarray) -> list[dict]:
    out = []
    for p, g in zip(pred, gt, strict=True):
        r = pseudo_fmeasure(p, g)
        out.append({"pfm": r["pfm"], "precision": r["precision"], "p_recall": r["p_recall"], "iou": iou(p, g)})
    return out


def mean_of(rows: list[dict], key: str) -> float:
    return float(np.mean([r[key] for r in rows])) if rows else math.nan


class LitFusing(L.LightningModule):
    """f_init (``hints`` None: X → Y*) or f_iter (X, Δ, Y → Y*, with a frozen f_init making Y and one stroke)."""

    def __init__(self, net, t, loss: str, f_init=None, hints: Hints | None = None):
        super().__init__()
        self.net, self.t, self.loss = net, t, make_loss(loss)
        self.f_init, self.hints = f_init, hints
        if f_init is not None:
            f_init.requires_grad_(False)
        self.monitor = "val_pfm" if hints is None else "val_pfm_delta"
        self._val: list[tuple] = []

    def on_train_epoch_start(self):
        if self.f_init is not None:
            self.f_init.eval()

    def _inputs(self, x, gt, rng, policy, width):
        if self.hints is None:
            return x, None
        with torch.no_grad():
            yl = self.f_init(x)
        delta, _ = self.hints.batch(yl.cpu(), gt.cpu(), rng, policy, width)
        return self.hints.inputs(x, yl, delta.to(x.device)), (yl, delta)

    def training_step(self, batch, _):
        x, gt = batch
        rng = np.random.default_rng(int(torch.randint(2**31 - 1, (1,))))  # from torch's RNG: exact on resume
        inp, _ = self._inputs(x, gt, rng, "random", self.hints.ic.train_width if self.hints else "mu")
        loss = self.loss(self.net(inp), gt)
        self.log("train_loss", loss, on_step=False, on_epoch=True, prog_bar=True, batch_size=len(x))
        return loss

    def validation_step(self, batch, batch_idx):
        x, gt = batch
        rng = np.random.default_rng(batch_idx)
        inp, extra = self._inputs(x, gt, rng, "longest", "mu")
        pred = (self.net(inp) > 0).cpu().numpy()[:, 0]
        g = gt.cpu().numpy()[:, 0] > 0.5
        manual = None if extra is None else I.paste(extra[0].cpu().numpy()[:, 0] > 0, extra[1].cpu().numpy()[:, 0])
        for i in range(len(g)):
            if g[i].any():
                self._val.append((pseudo_fmeasure(pred[i], g[i])["pfm"],
                                  None if manual is None else pseudo_fmeasure(manual[i], g[i])["pfm"]))

    def on_validation_epoch_end(self):
        ours = float(np.mean([v[0] for v in self._val])) if self._val else 0.0
        self.log("val_pfm", ours, prog_bar=True)
        if self.hints is not None:
            manual = float(np.mean([v[1] for v in self._val])) if self._val else 0.0
            self.log("val_pfm_manual", manual)
            self.log("val_pfm_delta", (ours - manual) / manual if manual > 0 else 0.0, prog_bar=True)
        self._val = []

    def configure_optimizers(self):
        opt = torch.optim.Adam(self.net.parameters(), lr=self.t.lr)
        sched = torch.optim.lr_scheduler.ReduceLROnPlateau(opt, mode="max", factor=self.t.lr_factor,
                                                           patience=self.t.lr_patience)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "monitor": self.monitor, "interval": "epoch"}}


class FusingForces(Pipeline):
    def build_model(self):
        return build_unet(self.m.model, iter_channels(self.m.model))

    @cached_property
    def predictor(self):
        return self.ctx.predictor()

    @cached_property
    def hints(self) -> Hints:
        return Hints(self.m)

    # -- data -----------------------------------------------------------------------------------------------------
    @cached_property
    def mirrors(self) -> dict[str, D.Mirror]:
        d = self.m.dataset
        out = D.read(d, self.ctx.data_roots[d.name])
        self.ctx.log(f"etmira: {len(out)} sides ({', '.join(sorted(out))})")
        return out

    @cached_property
    def held_out(self) -> dict[str, list[D.Patch]]:
        return D.held_out(self.mirrors, self.m.dataset)

    def train_mirrors(self) -> list[D.Mirror]:
        return [m for k, m in sorted(self.mirrors.items()) if k not in self.m.dataset.test_mirrors]

    def record(self) -> None:
        splits = {"train": [f for m in self.train_mirrors() for f in m.files],
                  **{k: [p.id for p in v] for k, v in self.held_out.items()}}
        self.ctx.record_splits(splits)

    def patches(self, split: str, lines_only: bool = True):
        """(patches, X (N, 1, S, S), GT (N, S, S) bool) of a held-out split; only patches holding lines."""
        ps = self.held_out[split]
        ds = D.HeldOut(self.mirrors, ps, self.m.dataset)
        xs, gts = zip(*(ds[i] for i in range(len(ds))), strict=True)
        X, G = torch.stack(xs), torch.stack(gts)[:, 0].numpy() > 0.5
        keep = [i for i in range(len(ps)) if G[i].any() or not lines_only]
        return [ps[i] for i in keep], X[keep], G[keep]

    # -- inference --------------------------------------------------------------------------------------------------
    def forward(self, net, X: torch.Tensor) -> torch.Tensor:
        bs = self.m.train.batch_size
        return torch.cat([self.predictor(net, X[i:i + bs]) for i in range(0, len(X), bs)])

    def refine_once(self, f_iter, X, y_logits, G, rng, policy, width):
        """One stroke per patch from an empty Δ: (Δ, Y^Δ, Y' logits, strokes)."""
        delta, strokes = self.hints.batch(y_logits, torch.from_numpy(G[:, None].astype(np.float32)), rng, policy,
                                          width)
        manual = I.paste(y_logits[:, 0].numpy() > 0, delta[:, 0].numpy())
        return delta, manual, self.forward(f_iter, self.hints.inputs(X, y_logits, delta)), strokes

    def highpass_baseline(self, X_val, G_val, X, G) -> tuple[float, float]:
        """(t, mean pFM on (X, G)) of the thresholded high-pass X < −t, t chosen on the val patches."""
        vals = X_val[:, 0].numpy()
        grid = np.unique(np.quantile(-vals[vals != 0], np.linspace(0.5, 0.99, 20)))
        best = max(grid, key=lambda t: mean_of(pfm_rows(vals < -t, G_val), "pfm"))
        return float(best), mean_of(pfm_rows(X[:, 0].numpy() < -best, G), "pfm")

    # -- training ---------------------------------------------------------------------------------------------------
    def fit(self, net, t, train_ds, val_ds, f_init=None):
        from lightning.pytorch.callbacks import EarlyStopping
        from torch.utils.data import DataLoader

        module = LitFusing(net, t, self.m.loss.kind, f_init, None if f_init is None else self.hints).train()
        best = training.ModelCheckpoint(dirpath=self.ctx.path / "checkpoints", filename="best", monitor=module.monitor,
                                        mode="max", save_top_k=1, save_weights_only=True, enable_version_counter=False)
        stop = EarlyStopping(monitor=module.monitor, mode="max", min_delta=t.stop_min_delta, patience=t.stop_patience)
        trainer = training.make_trainer(self.ctx, t.epochs, callbacks=[best, stop])
        loader = training.ResumableLoader(train_ds, t.batch_size, self.m.seed, num_workers=t.num_workers)
        val = DataLoader(val_ds, batch_size=t.batch_size, shuffle=False)
        training.fit(trainer, module, train_dataloaders=loader, val_dataloaders=val,
                     ckpt_path=training.resume_checkpoint(self.ctx.run))
        info = {"epochs_run": int(trainer.current_epoch)}
        if best.best_model_path:
            state = training.load_state(best.best_model_path)  # the module holds f_init too: keep net.*
            net.load_state_dict({k[4:]: v for k, v in state.items() if k.startswith("net.")})
            ck = torch.load(best.best_model_path, map_location="cpu", weights_only=True)
            info["best_epoch"] = int(ck["epoch"]) + 1
            info[f"best_{module.monitor}"] = float(best.best_model_score)
        self.ctx.learning_curves()
        return net, info

    def train_init(self) -> dict:
        d, t = self.m.dataset, self.m.train_init
        self.record()
        net = build_unet(self.m.model, 1)
        net, info = self.fit(net, t, D.TrainPatches(self.train_mirrors(), d, t.augment),
                             D.HeldOut(self.mirrors, self.held_out["val"], d))
        training.save_weights(net, self.ctx.path / "checkpoints" / "model.safetensors",
                              {"pipeline": "fusing-forces", "network": "f_init"})
        ps, X, G = self.patches("test")
        _, Xv, Gv = self.patches("val")
        rows = pfm_rows((self.forward(net, X)[:, 0] > 0).numpy(), G)
        t_hp, hp = self.highpass_baseline(Xv, Gv, X, G)
        metrics = {"split": "test", "n_patches": len(ps), "pfm": mean_of(rows, "pfm"), "iou": mean_of(rows, "iou"),
                   "precision": mean_of(rows, "precision"), "p_recall": mean_of(rows, "p_recall"),
                   "pfm_highpass": hp, "highpass_threshold": t_hp, **info, **training.count_params(net)}
        metrics["pfm_minus_highpass"] = metrics["pfm"] - hp
        self.ctx.write_csv("per_case.csv", [{"patch": p.id, **r} for p, r in zip(ps, rows, strict=True)])
        self.ctx.log(f"f_init test pFM {metrics['pfm']:.4f} (high-pass baseline {hp:.4f})  IoU {metrics['iou']:.4f}")
        self.ctx.write_text("paper.md", paper_md(
            self.ctx.spec, self.m, metrics, self.ctx, title="fusing-forces f_init", keys=["pfm", "iou", "pfm_highpass"],
            expect={"pfm": 0.4928, "iou": 0.3286}, table="Table 1, row 'Init. prediction f_init'",
            sections=[paper_table(self.ctx.spec, "table1"), paper_note(self.ctx.spec, "comparison")]))
        return metrics

    def f_init(self) -> tuple[torch.nn.Module, dict]:
        """f_init from ``model.init_ckpt`` or a train-init child run (run or reused)."""
        from pathlib import Path

        from ..sweep import Child

        net = build_unet(self.m.model, 1)
        if self.m.model.init_ckpt:
            return training.load_weights(net, Path(self.m.model.init_ckpt).expanduser(), prefix="net."), {}
        run = self.ctx.sweep([Child("f_init", stage="train-init")], title="f_init")[0]
        training.load_weights(net, run.run_dir / "checkpoints" / "model.safetensors")
        return net, {"f_init_run": run.run_id[:12], "f_init_pfm": run.metrics.get("pfm"),
                     "pfm_highpass": run.metrics.get("pfm_highpass")}

    def train(self) -> dict:
        d, t = self.m.dataset, self.m.train
        f_init, init_info = self.f_init()
        self.record()
        net = self.build_model()
        net = warm_start(net, f_init, self.m.model) if self.m.model.iter_warm_start else net
        net, info = self.fit(net, t, D.TrainPatches(self.train_mirrors(), d, t.augment),
                             D.HeldOut(self.mirrors, self.held_out["val"], d), f_init=f_init)
        training.save_weights(net, self.ctx.path / "checkpoints" / "model.safetensors",
                              {"pipeline": "fusing-forces", "network": "f_iter"})
        training.save_weights(f_init, self.ctx.path / "checkpoints" / "f_init.safetensors",
                              {"pipeline": "fusing-forces", "network": "f_init"})
        ps, X, G = self.patches("test")
        y0 = self.forward(f_init, X)
        _, manual, yp, _ = self.refine_once(net, X, y0, G, np.random.default_rng(self.m.seed), "longest", "mu")
        r_y, r_m, r_p = (pfm_rows(a, G) for a in ((y0[:, 0] > 0).numpy(), manual, (yp[:, 0] > 0).numpy()))
        m_y, m_m, m_p = (mean_of(r, "pfm") for r in (r_y, r_m, r_p))
        metrics = {"split": "test", "n_patches": len(ps), "pfm_y": m_y, "pfm_manual": m_m, "pfm": m_p,
                   "iou": mean_of(r_p, "iou"), "pfm_delta": (m_p - m_m) / m_m if m_m > 0 else math.nan,
                   "pfm_gain_over_y": m_p - m_y, **init_info, **info, **training.count_params(net)}
        if isinstance(init_info.get("f_init_pfm"), float) and isinstance(init_info.get("pfm_highpass"), float):
            metrics["init_minus_highpass"] = init_info["f_init_pfm"] - init_info["pfm_highpass"]
        self.ctx.write_csv("per_case.csv", [{"patch": p.id, "pfm_y": a["pfm"], "pfm_manual": b["pfm"],
                                             "pfm_refined": c["pfm"], "iou_refined": c["iou"]}
                                            for p, a, b, c in zip(ps, r_y, r_m, r_p, strict=True)])
        self.ctx.log(f"test: pFM(Y) {m_y:.4f}  pFM(Y^Δ) {m_m:.4f}  pFM(Y') {m_p:.4f}  "
                     f"pFM_Δ {metrics['pfm_delta']:+.4f}")
        self.ctx.write_text("paper.md", paper_md(
            self.ctx.spec, self.m, metrics, self.ctx, title="fusing-forces f_iter (one interaction, width μ)",
            keys=["pfm", "iou", "pfm_delta", "pfm_y", "pfm_manual"],
            sections=[paper_table(self.ctx.spec, "table1"), paper_note(self.ctx.spec, "comparison")]))
        return metrics

    def trained_pair(self) -> tuple[torch.nn.Module, torch.nn.Module]:
        """(f_init, f_iter) of the parent train run, or f_iter from --checkpoint with model.init_ckpt."""
        from pathlib import Path

        from medrun.errors import UsageError

        f_iter = self.trained_model()
        f_init = build_unet(self.m.model, 1)
        if self.ctx.parent is not None:
            return training.load_weights(f_init, self.ctx.parent_file("checkpoints/f_init.safetensors")), f_iter
        if not self.m.model.init_ckpt:
            raise UsageError("--checkpoint gives f_iter only; f_init's weights are missing",
                             fix="also pass -o model.init_ckpt=/path/to/f_init weights")
        return training.load_weights(f_init, Path(self.m.model.init_ckpt).expanduser(), prefix="net."), f_iter

    # -- the other stages -------------------------------------------------------------------------------------------
    def eval(self) -> dict:
        from .evaluate import evaluate

        return evaluate(self)

    def prepare(self) -> dict:
        from .prepare import prepare

        return prepare(self)

    def stats(self) -> dict:
        from .stats import stats

        return stats(self)

    def simulate(self) -> dict:
        from .simulate import simulate

        return simulate(self)

    def refine(self) -> dict:
        from .refine import refine

        return refine(self)
