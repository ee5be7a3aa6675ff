"""endo-depth, the method: DVTwin self-supervised stereo → monocular depth (card: docs/papers/endo-depth.md).

Data (``datasets/hamlyn.py``, ``datasets/scared.py``): Hamlyn ``rectifiedNN/{image01,image02,depth01}`` split by
video (``dataset.train/val/test`` name the NN), SCARED ``dataset_k/keyframe_j`` split by subject k (the card's 1–7
train, 8–9 test; here 7 is the validation subject, so training uses 1–6). Frames are read lazily per item. Before
anything trains every frame's depth header is checked (16-bit, the left frame's size), so a bad depth PNG fails the
run before an epoch. Preprocessing: ``dataset.crop`` (5 % per side, the card's width for Hamlyn's black borders; 0 on
SCARED) cut from the left and right of both views and the depth, then a bilinear resize to ``dataset.size`` square
(224), pixel values in [0, 1].

Network (``models/dvtwin.py``): the card's DVTwin — p = 4, D = 384, 6 heads, 4 post-norm blocks (one per stage),
max-pool between stages (grids 56, 28, 14, 7 at 224), gated fusion Concat(σ(W_l F_l)⊙F_l, σ(W_r F_r)⊙F_r) (the
paper's Concat(F'_r, F'_r) is a typo) or ``model.fusion: absdiff``, the shape-consistent decoder (widths 256, 128,
64, 32) and σ head. Random init; ``model.encoder_weights`` loads a timm ViT state dict's compatible tensors through
``training.load_state`` (weights_only). Position embedding: fixed 2-D sin-cos (the paper names none).

Training (self-supervised): disparity in pixels = σ-output × 0.3 × width (Monodepth); Î_l(u) = I_r(u − disp(u)) by
``grid_sample``; loss = α(1 − SSIM₃ₓ₃)/2 + β|I_l − Î_l| (α 0.85, β 0.15; SSIM is a similarity, so 1 − SSIM) +
``loss.smooth`` × edge-aware smoothness on d/mean(d) with e^{−|∇I|} (Eq. 1's weight 1). With probability 0.5 the
right *input* is the left view sheared by U(−10°, 10°); the photometric target is always the real right view. 20 %
of 16×16 patches are zeroed in both inputs (the same patches); the loss sees the unmasked images. AdamW (lr 1.95e-4,
weight decay 0.01), batch 8, StepLR(5, 0.1), 60 epochs (the LR is ~0 after 20 epochs; kept as the paper has it).

Selection (the card: the paper chose on the test set; we do not): the validation split is scored each epoch (mono
input, median-scaled AbsRel) and ``ModelCheckpoint(monitor="val_abs_rel")`` picks the weights that are saved and
reported. With ``eval.test_selected`` the test split is scored every epoch too and the epoch with the best test
AbsRel (the paper's selection) is reported beside it as ``test_selected_*`` (optimistic; never the headline).

Evaluation (``medrun.metrics.depth``): monocular inference — the second input is the left view sheared by +5° —
depth = 1/disparity upsampled (bilinear) to the cropped GT's resolution, per-image median scaling, GT > 0 (and ≤
``dataset.max_depth``: 150 mm on SCARED), AbsRel, SqRel, RMSE (mm), RMSElog, δ < 1.25ⁿ averaged over frames. Also the
true-stereo input (``stereo_*``, the card asks for it since the sheared input has no geometric meaning) and a
constant-depth predictor (``const_*``; after median scaling it predicts each frame's median GT depth), the smoke's
baseline: ``abs_rel_gain`` = const_abs_rel − abs_rel. ``median_scale`` (the median over frames of the scale factors)
lets ``predict`` write depth in mm without GT.

Stages: ``train``; ``eval`` (a train run on ``--dataset``'s test split; a Hamlyn run evaluated with ``--dataset
scared --run ID`` is the paper's "transfer" row); ``finetune`` (SCARED: the train stage started from a finished
run's weights, ``--run ID`` of the Hamlyn train run or ``--checkpoint``); ``predict`` (per image: a 16-bit depth PNG
in mm at the image's size, 0 in the cropped borders, and a coloured ``.ply`` point cloud through open3d, back-projected
with focal ``predict.focal`` (default: the width) about the image centre).

Fixtures (``datasets/hamlyn.py``): 4 videos × 10 frames (the card's 3 × 6, plus a validation video and more frames);
the smoke runs 10 epochs at batch 4, lr 1e-3 (the card's 3 epochs leave AbsRel 0.19 against the constant
predictor's 0.21). The same masks are used for both views; ``dataset.frame_step`` thins val/test frames.

Not done: the hole filling of depth maps the paper mentions (scoring uses valid GT pixels only, so it changes
nothing reported); the 50-job hyper-parameter search; the Fig. 4 ablation as a stage (``model.fusion``,
``train.mask_ratio`` and ``model.depth`` are the knobs).
"""

from __future__ import annotations

from pathlib import Path

import lightning as L
import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset

from medrun.datasets import hamlyn, scared
from medrun.errors import DataError, UsageError
from medrun.metrics.depth import KEYS, depth_errors

from .. import training
from ..report import markdown_table, paper_note, paper_table, read_series
from ..tasks.supervised import Supervised
from . import method as M

SHOWN = ("abs_rel", "sq_rel", "rmse", "rmse_log", "a1")


# -- data ---------------------------------------------------------------------------------------------------------
def crop_cols(a: np.ndarray, crop: float) -> np.ndarray:
    c = int(round(crop * a.shape[1]))
    return a[:, c:a.shape[1] - c] if c else a


def to_input(img: np.ndarray, size: int) -> torch.Tensor:
    """(H, W, 3) uint8 → (3, size, size) float in [0, 1], bilinear (antialiased) resize."""
    x = torch.from_numpy(np.ascontiguousarray(img)).permute(2, 0, 1).float()[None] / 255
    return F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False, antialias=True)[0]


def depth_at(disp: torch.Tensor, shape) -> np.ndarray:
    """(1, 1, S, S) disparity → 1/disparity (H, W) after a bilinear resize to ``shape``."""
    x = F.interpolate(disp, size=tuple(shape), mode="bilinear", align_corners=False)
    return (1 / x.clamp_min(1e-6))[0, 0].numpy()


class StereoFrames(Dataset):
    """Frames → (left, right, depth at size×size (nearest), index); read per item."""

    def __init__(self, frames: list, size: int, crop: float):
        self.frames, self.size, self.crop = frames, size, crop

    def __len__(self):
        return len(self.frames)

    def load(self, i: int):
        left, right, depth = hamlyn.load(self.frames[i])
        return crop_cols(left, self.crop), crop_cols(right, self.crop), crop_cols(depth, self.crop)

    def __getitem__(self, i):
        left, right, depth = self.load(i)
        d = F.interpolate(torch.from_numpy(np.ascontiguousarray(depth))[None, None], size=(self.size,) * 2,
                          mode="nearest")[0]
        return to_input(left, self.size), to_input(right, self.size), d, i


def check_depth_headers(frames: list, track) -> None:
    """Every frame's depth header before training (16-bit PNG or points TIFF of its left frame's size)."""
    for f in track(frames, "checking depth maps"):
        hamlyn.check_header(f)


# -- Lightning module -------------------------------------------------------------------------------------------
class LitDepth(L.LightningModule):
    def __init__(self, net, m):
        super().__init__()
        self.net, self.m = net, m
        self.val_names = ["val"]

    def forward(self, left, right):
        return self.net(left, right)

    def training_step(self, batch, _):
        left, right, _, _ = batch
        t, b, w = self.m.train, left.shape[0], left.shape[-1]
        right_in = right
        if t.shear_prob > 0:
            angle = (torch.rand(b, device=left.device) * 2 - 1) * t.shear_max
            use = (torch.rand(b, device=left.device) < t.shear_prob).view(b, 1, 1, 1)
            right_in = torch.where(use, M.shear(left, angle), right)
        mask = M.patch_mask(b, *left.shape[-2:], t.mask_ratio, t.mask_patch, device=left.device)
        d = self.net(left * mask, right_in * mask)
        recon = M.warp_right_to_left(right, d * self.m.model.disp_scale * w)
        scl = M.photometric(left, recon, self.m.loss.alpha, self.m.loss.beta)
        esl = M.smoothness(d, left)
        loss = scl + self.m.loss.smooth * esl
        self.log("train_photometric", scl, on_step=False, on_epoch=True, batch_size=b)
        self.log("train_smooth", esl, on_step=False, on_epoch=True, batch_size=b)
        self.log("train_loss", loss, on_step=False, on_epoch=True, prog_bar=True, batch_size=b)
        return loss

    def validation_step(self, batch, _, dataloader_idx: int = 0):
        left, _, depth, _ = batch
        d = self.net(left, M.shear(left, self.m.eval.shear))
        rel = M.scaled_abs_rel(1 / d.clamp_min(1e-6), depth, self.m.dataset.max_depth)
        rel = rel[torch.isfinite(rel)]
        if len(rel):
            self.log(f"{self.val_names[dataloader_idx]}_abs_rel", rel.mean(), on_epoch=True, batch_size=len(rel),
                     add_dataloader_idx=False)

    def configure_optimizers(self):
        t = self.m.train
        opt = torch.optim.AdamW(self.net.parameters(), lr=t.lr, weight_decay=t.weight_decay)
        sched = torch.optim.lr_scheduler.StepLR(opt, step_size=t.lr_step, gamma=t.lr_gamma)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "epoch"}}


# -- the pipeline ---------------------------------------------------------------------------------------------------
class EndoDepth(Supervised):
    report_split = "test"
    val_split = "val"

    def build_model(self):
        from medrun.models.dvtwin import DVTwin

        mm = self.m.model
        return DVTwin(mm.patch, mm.dim, mm.depth, mm.heads, mm.mlp_ratio, mm.fusion, tuple(mm.decoder))

    # -- splits -------------------------------------------------------------------------------------------------
    def splits(self) -> dict[str, list]:
        if getattr(self, "_splits", None) is not None:
            return self._splits
        d, root = self.m.dataset, self.ctx.data_roots[self.m.dataset.name]
        if d.name == "hamlyn":
            frames = hamlyn.read(root)
            units = sorted({f.video for f in frames})
            key = lambda f: f.video  # noqa: E731
            norm = hamlyn._nn
        else:
            frames = scared.read(root)
            units = sorted({str(f.subject) for f in frames}, key=int)
            key = lambda f: str(f.subject)  # noqa: E731
            norm = lambda v: str(int(v)) if str(v).isdigit() else str(v)  # noqa: E731
        what = "video" if d.name == "hamlyn" else "subject"
        named = {s: [norm(v) for v in (getattr(d, s) or [])] for s in ("train", "val", "test")}
        for s, vs in named.items():
            for v in vs:
                if v not in units:
                    raise DataError(f"dataset.{s} names {what} {v}, which {root} does not have (it has "
                                    f"{', '.join(units)})", fix=f"fix dataset.{s}")
        taken = set(named["val"]) | set(named["test"])
        train_units = named["train"] if d.train is not None else [u for u in units if u not in taken]
        out = {"train": [f for f in frames if key(f) in train_units],
               "val": [f for f in frames if key(f) in named["val"]][::d.frame_step],
               "test": [f for f in frames if key(f) in named["test"]][::d.frame_step]}
        if not out["train"]:
            raise DataError(f"no training frames in {root}: every {what} is in dataset.val or dataset.test",
                            fix="leave some videos/subjects for training")
        check_depth_headers([f for v in out.values() for f in v], self.ctx.track)
        self.ctx.record_splits(out)
        self.ctx.log(f"{d.name}: " + " · ".join(
            f"{k} {len(v)} frames ({', '.join(sorted({key(f) for f in v}))})" for k, v in out.items()))
        self._splits = out
        return out

    def dataset(self, frames, train: bool):
        return StereoFrames(frames, self.m.dataset.size, self.m.dataset.crop)

    def val_loader(self, splits):
        """The validation split, and the test split too when ``eval.test_selected`` (the paper's selection)."""
        t = self.m.train
        self._val_names = [n for n in ("val", "test") if splits.get(n) and (n == "val" or self.m.eval.test_selected)]
        loaders = [DataLoader(self.dataset(splits[n], False), batch_size=t.batch_size, num_workers=t.num_workers)
                   for n in self._val_names]
        return loaders or None

    def lit_module(self, net):
        module = LitDepth(net, self.m)
        module.val_names = getattr(self, "_val_names", ["val"])
        return module

    def trainer_kwargs(self) -> dict:
        splits = self.splits()
        self._best = {}
        for name in ("val", "test"):
            if splits.get(name) and (name == "val" or self.m.eval.test_selected):
                self._best[name] = training.ModelCheckpoint(
                    dirpath=self.ctx.path / "checkpoints", filename=f"best_{name}", monitor=f"{name}_abs_rel",
                    mode="min", save_top_k=1, save_weights_only=True, enable_version_counter=False)
        return {"callbacks": list(self._best.values())}

    # -- training ------------------------------------------------------------------------------------------------
    def initial_model(self):
        """Random init, or (finetune) the parent's weights; ``model.encoder_weights`` loads a timm ViT's tensors."""
        if getattr(self, "_start", None) is not None:
            return self._start
        net = self.build_model()
        path = self.m.model.encoder_weights
        if path:
            from medrun.models.dvtwin import load_timm_vit

            n, total, skipped = load_timm_vit(net.encoder, training.load_state(Path(path).expanduser()))
            if not n:
                raise UsageError(f"model.encoder_weights {path}: no tensor fits the DVTwin encoder",
                                 fix="pass a timm ViT state dict of the same width (e.g. ViT-S for dim 384)")
            self.ctx.log(f"model.encoder_weights: {n} of {total} encoder tensors loaded"
                         + (f"; {len(skipped)} at random init (first: {skipped[0]})" if skipped else ""))
        return net

    def fit(self, splits, net=None, *, checkpoint: bool = True):
        self.val_loader(splits)  # names the validation loaders before the module is built
        net, secs = super().fit(splits, self.initial_model() if net is None else net, checkpoint=checkpoint)
        self._selected = {}
        for name, cb in self._best.items():
            if cb.best_model_path:
                epoch = int(torch.load(cb.best_model_path, map_location="cpu", weights_only=True)["epoch"])
                self._selected[name] = (Path(cb.best_model_path), epoch + 1, float(cb.best_model_score))
        if "val" in self._selected:
            net = training.load_weights(net, self._selected["val"][0], prefix="net.")
        return net.eval(), secs

    def after_fit(self) -> dict:
        """How far the photometric loss fell, the selected epochs, and the test-selected variant's test scores."""
        series = read_series(self.ctx.path / "logs" / "metrics.csv")
        photo = [v for _, v in sorted(series.get("train_photometric", []))]
        out = {"photometric_first": photo[0], "photometric_last": photo[-1],
               "photometric_drop": photo[0] - photo[-1]} if photo else {}
        sel = getattr(self, "_selected", {})
        out["val_selected_epoch"] = sel["val"][1] if "val" in sel else self.epochs
        if "test" in sel:
            net = training.load_weights(self.build_model(), sel["test"][0], prefix="net.")
            metrics, _ = self.evaluate(net, self.splits()["test"], keep=0)
            out["test_selected_epoch"] = sel["test"][1]
            out.update({f"test_selected_{k}": metrics[k] for k in KEYS})
        return out

    def finetune(self) -> dict:
        """The train stage from a finished run's weights (the card's SCARED fine-tuning)."""
        self._start = self.trained_model()
        return self.train()

    # -- evaluation ----------------------------------------------------------------------------------------------
    def infer(self, net, left: torch.Tensor, right: torch.Tensor | None = None) -> torch.Tensor:
        """Disparity (B, 1, S, S) in (0, 1): monocular (right = the left sheared by eval.shear) or stereo."""
        if right is None:
            right = M.shear(left, self.m.eval.shear)
        return self.predictor(net, left, right)

    def evaluate(self, net, frames, keep: int | None = None):
        d, bs = self.m.dataset, self.m.train.batch_size
        keep = self.m.eval.figures if keep is None else keep
        ds = self.dataset(frames, False)
        rows, self._examples = [], []
        loader = DataLoader(ds, batch_size=bs, num_workers=self.m.train.num_workers)
        for left, right, _, idx in self.ctx.track(loader, "scoring", total=len(loader)):
            mono, stereo = self.infer(net, left), self.infer(net, left, right)
            for j, i in enumerate(idx.tolist()):
                f = frames[i]
                img, _, gt = ds.load(i)  # the GT at its own (cropped) resolution
                pm, ps = (depth_at(disp[j:j + 1], gt.shape) for disp in (mono, stereo))
                e = depth_errors(pm, gt, max_depth=d.max_depth)
                es = depth_errors(ps, gt, max_depth=d.max_depth)
                ec = depth_errors(np.ones_like(gt), gt, max_depth=d.max_depth)
                rows.append({"video": f.video, "frame": f.id, **{k: e[k] for k in KEYS}, "scale": e["scale"],
                             "n_pixels": e["n"], **{f"stereo_{k}": es[k] for k in SHOWN},
                             **{f"const_{k}": ec[k] for k in SHOWN}})
                if len(self._examples) < keep:
                    self._examples.append((f"{f.video}/{f.id}", img, gt, pm * e["scale"], ps * es["scale"]))
        metrics = {k: float(np.nanmean([r[k] for r in rows])) for k in
                   (*KEYS, *(f"stereo_{k}" for k in SHOWN), *(f"const_{k}" for k in SHOWN))}
        metrics["abs_rel_gain"] = metrics["const_abs_rel"] - metrics["abs_rel"]
        metrics["median_scale"] = float(np.nanmedian([r["scale"] for r in rows]))
        metrics["n_frames"] = len(rows)
        self._per_video = {}
        for r in rows:
            self._per_video.setdefault(r["video"], []).append(r)
        return metrics, rows

    def figures(self, net, frames, metrics, rows, split):
        ex = self._examples
        if ex:
            with self.ctx.figure("depth_examples", nrows=len(ex), ncols=4, figsize=(12, 2.6 * len(ex)),
                                 squeeze=False) as (fig, axes):
                for (name, img, gt, pm, ps), ax in zip(ex, axes, strict=True):
                    valid = gt > 0
                    lo, hi = (np.percentile(gt[valid], [2, 98]) if valid.any() else (pm.min(), pm.max()))
                    ax[0].imshow(img)
                    ax[0].set_title(name, fontsize=8)
                    ax[1].imshow(np.where(valid, gt, np.nan), cmap="magma_r", vmin=lo, vmax=hi)
                    ax[1].set_title("GT depth (mm)", fontsize=8)
                    ax[2].imshow(pm, cmap="magma_r", vmin=lo, vmax=hi)
                    ax[2].set_title("DVTwin, sheared input (scaled)", fontsize=8)
                    im = ax[3].imshow(ps, cmap="magma_r", vmin=lo, vmax=hi)
                    ax[3].set_title("DVTwin, stereo input (scaled)", fontsize=8)
                    fig.colorbar(im, ax=ax[3], fraction=0.046)
                    for a in ax:
                        a.axis("off")
        vids = sorted(self._per_video)
        with self.ctx.figure("abs_rel_per_video", figsize=(max(4, 0.8 * len(vids) + 2), 3)) as (fig, ax):
            x = np.arange(len(vids))
            for k, (key, label) in enumerate((("abs_rel", "sheared input"), ("stereo_abs_rel", "stereo input"),
                                              ("const_abs_rel", "constant depth"))):
                ax.bar(x + (k - 1) * 0.27, [np.nanmean([r[key] for r in self._per_video[v]]) for v in vids], 0.27,
                       label=label)
            ax.set_xticks(x, vids)
            ax.set_ylabel("AbsRel (median-scaled)")
            ax.legend(fontsize=7)

    def summary_line(self, split, metrics):
        return (f"{split}: AbsRel {metrics['abs_rel']:.4f}  RMSE {metrics['rmse']:.3f} mm  (stereo input AbsRel "
                f"{metrics['stereo_abs_rel']:.4f}; constant depth {metrics['const_abs_rel']:.4f}; "
                f"{metrics['n_frames']} frames)")

    def paper_kwargs(self, split, metrics):
        return {"keys": ["abs_rel", "rmse", "sq_rel", "rmse_log", "a1", "stereo_abs_rel", "const_abs_rel",
                         *[k for k in ("test_selected_abs_rel", "test_selected_rmse") if k in metrics]]}

    def paper_sections(self, metrics):
        mm, n = self.m.model, metrics.get("params_total")
        stage = self.ctx.stage
        lines = [f"## This run\n\nStage `{stage}` on `{self.m.dataset.name}`, split `{metrics['split']}`, "
                 f"{metrics['n_frames']} frames. DVTwin p={mm.patch}, D={mm.dim}, {mm.depth} blocks, {mm.heads} heads, "
                 f"fusion {mm.fusion}" + (f", {n:,} parameters" if n else "") + ". Monocular inference (the second "
                 f"input is the left view sheared by {self.m.eval.shear}°), depth = 1/disparity, per-image median "
                 "scaling" + (f", GT capped at {self.m.dataset.max_depth} mm" if self.m.dataset.max_depth else "")
                 + ". Weights: the epoch with the best validation AbsRel"
                 + (f" (epoch {metrics['val_selected_epoch']})" if "val_selected_epoch" in metrics else "") + "."]
        if "test_selected_abs_rel" in metrics:
            lines.append(f"The paper's protocol (model chosen on the test set) picks epoch "
                         f"{metrics['test_selected_epoch']}: AbsRel {metrics['test_selected_abs_rel']:.4f}, RMSE "
                         f"{metrics['test_selected_rmse']:.3f} — optimistic, shown for comparison only.")
        per = [[v, len(rs), *[float(np.nanmean([r[k] for r in rs])) for k in ("abs_rel", "rmse", "stereo_abs_rel",
                                                                             "const_abs_rel")]]
               for v, rs in sorted(self._per_video.items())]
        table = markdown_table(["video", "frames", "AbsRel", "RMSE", "AbsRel (stereo input)", "AbsRel (constant)"],
                               per)
        return ["\n\n".join(lines), "## Per video\n\n" + table, paper_table(self.ctx.spec, "hamlyn"),
                paper_table(self.ctx.spec, "scared"), paper_note(self.ctx.spec, "comparison")]

    # -- predict ----------------------------------------------------------------------------------------------------
    def predict_rows(self, net, items) -> list[dict]:
        p, d = self.m.predict, self.m.dataset
        scale = p.mm_per_unit
        if scale is None and self.ctx.parent is not None:
            import json

            scale = json.loads(self.ctx.parent_file("metrics.json").read_text()).get("median_scale")
        scale = float(scale or 1.0)
        rows = []
        for item in self.ctx.track(items, "predicting"):
            path = item.left if isinstance(item, hamlyn.Frame) else Path(item)
            img = hamlyn.read_rgb(path)
            h, w = img.shape[:2]
            c = int(round(d.crop * w))
            cropped = crop_cols(img, d.crop)
            disp = self.infer(net, to_input(cropped, d.size)[None])
            disp = F.interpolate(disp, size=cropped.shape[:2], mode="bilinear", align_corners=False)[0, 0].numpy()
            depth = np.zeros((h, w), np.float32)
            depth[:, c:w - c if c else w] = scale / np.clip(disp, 1e-6, None)
            rel = f"predictions/{path.stem}_depth.png"
            self.ctx.write_png(rel, np.clip(np.round(depth), 0, 65535).astype(np.uint16))
            row = {"file": str(path), "depth_png": rel, "width": w, "height": h, "mm_per_unit": scale,
                   "median_depth_mm": float(np.median(depth[depth > 0]))}
            if p.ply:
                row["ply"] = f"predictions/{path.stem}.ply"
                from .predict import point_cloud_ply

                self.ctx.write_bytes(row["ply"], point_cloud_ply(img, depth, p.focal or float(w)))
            rows.append(row)
        self.ctx.log(f"depth in mm = {scale:.4g} / disparity")
        return rows

    def predict_summary(self, rows):
        return {"median_depth_mm": float(np.median([r["median_depth_mm"] for r in rows]))}

