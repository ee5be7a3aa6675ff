"""unet-lrp, the method (card: shared/papers/unet-lrp.md).

Data: Montgomery (``MontgomerySet/``, lung = leftMask OR rightMask; the default medical set, as the card says),
Shenzhen (``ChinaSet_AllFiles/`` with third-party masks in ``mask/``; images without a mask left out) or
Cityscapes (train split, mask = labelIds == ``dataset.label``, 24 = person), or a folder of image/mask PNG pairs
(``pairs``: ``images/`` + ``masks/``, the card's generic folder for the private NDT pore slices). Each image is scaled to [0, 1] by its own min and max, image and mask resized to
``dataset.resize`` (H, W) = (623, 512) (the author code's 512×623 as width × height; Cityscapes manifests use
(512, 623), landscape), then ``crops_per_image`` = 2 random ``crop``² = 512² crops per image and epoch for training.
The last ``val_fraction`` = 20 % of the sorted cases validate (a tail split, as the code does), with sliding-window
inference (MONAI ``sliding_window_inference``, window = crop). No other augmentation.

Training: the card's three MONAI U-Nets (``models.lrp_unet.Segmenter``: BasicUNet, residual UNet, BasicUNetPlusPlus;
ReLU; batch or instance norm; 1 output + sigmoid), Generalized Dice Focal loss (the paper's, λ 1/1, γ 2; the code's
Dice loss is not used), Adam, Table 1's epochs / lr (Montgomery 100 / 8e-4, Cityscapes 100 / 2e-4), batch 4 crops
(the code's 2 images × 2 crops). Validation Dice (MONAI ``DiceMetric``, sigmoid > 0.5, per image then averaged)
every ``val_every`` = 3 epochs; the best epoch's weights are kept (``checkpoints/model.safetensors``).

LRP (``models.lrp_unet``): Captum ``LRP`` on ``Sequential(net, Sigmoid, MaskedSum)``; ε-rule on every layer (ε =
Captum's 1e-9, ``explain.epsilon``); Sigmoid/ReLU/Dropout pass relevance through (so the start value is the masked
sum of the sigmoid outputs, Sigmoid treated as identity); the residual fix (``explain.residual_fix``) swaps each
residual ``a + b`` for Captum's ``Addition_Module``. The explained object is one connected component (8-connectivity)
of the prediction binarised at 0.5: the largest, or the one numbered ``explain.object`` (skimage ``label`` order).
With ``explain.layer`` the explain stage maps
relevance at a layer's output instead (Captum ``LayerLRP``; an unknown name lists the valid ones; the map is spread
over the input pixels it covers for the overlay and focus; lrp-stats and the train check ignore it). LRP runs on the
centre ``crop``² window of the resized image (the residual U-Net needs sides divisible by 16; 623 is not). Display: the signed log transform with t = ``explain.thresh`` = 0.1 applied to raw relevance (never
normalised first), positive part only (binary use cases), as a Captum ``visualize_image_attr`` blended heat map
with 5 % outlier clipping, the object outlined.

Metrics the paper does not report (the card's proxies): (i) validation Dice; (ii) max |R| and conservation
Σ_input R / start value, with and without the residual fix (for nets without residual units both are the same
computation); (iii) focus = share of positive relevance inside the object dilated by ``explain.dilate_px`` = 10 px,
beside that region's share of the image area (``focus_over_area`` > 1: relevance concentrates on the object).

Choices where the card is silent:
- The train stage ends with the LRP statistics of up to ``train.lrp_images`` validation images, so the card's smoke
  run (one stage, ``medrun smoke``) checks Dice and LRP together; ``lrp-stats`` computes the same on a finished
  train run for every validation image with its own settings, ``explain`` writes the maps.
- ``explain``, ``lrp-stats`` and the train run's check share the manifest section ``explain:`` (a stage on a finished
  run, so changing it never hides the train run from those stages).
- ``fix_ratio`` = median over images of max|R| without the fix / max|R| with it (the paper's Fig. 3 shows one
  image: ~2e15 against ≤ ~4000; the absolute values depend on image and training, the ratio is what is compared).
- Images with no predicted object are listed in ``per_case.csv`` with ``object_px`` 0 and left out of the means.
- ``predict`` writes the binarised masks of the validation split as PNGs under ``predictions/``.
- Fixture manifests: 96 px crops (Cityscapes 64² of 64×128 scenes) and widths divided by 4 (e.g. (8, 16, 32, 64,
  128, 8)) as the card's smoke run says; each dataset's smoke run uses another net (Montgomery the residual U-Net,
  whose fix is checked; Shenzhen U-Net++; Cityscapes U-Net), and the tests run LRP on all 3 nets × 2 norms.
- Manifests use ``determinism: seeded`` (seeded Python/numpy/torch and loaders, not deterministic kernels).
- Stage options are manifest keys (``-o model.arch=resunet``, ``-o explain.object=2``, ``-o explain.thresh=0.1``,
  ``-o explain.residual_fix=false``), since the CLI's stage verbs are shared by every pipeline.
- The card's generic ``--images/--masks`` folder pair for the private NDT set is the ``pairs`` dataset (one root
  holding ``images/`` and ``masks/``), since the CLI has no per-pipeline flags.
"""

from __future__ import annotations

import math
import time
from pathlib import Path

import lightning as pl
import numpy as np
import torch

from medrun.datasets import cityscapes, montgomery, pairs, shenzhen
from medrun.errors import DataError, UsageError
from medrun.models import lrp_unet as L

from .. import training
from ..base import Pipeline
from ..report import learning_curves, markdown_table, paper_md, save_figure
from ..tasks import segmentation as seg


class UnetLrp(Pipeline):
    def build_model(self) -> L.Segmenter:
        mm = self.m.model
        features = tuple(mm.features) if mm.features else tuple(max(1, f // mm.width_div) for f in L.FEATURES[mm.arch])
        return L.Segmenter(mm.arch, mm.norm, mm.in_channels, 1, features)

    # -- data -----------------------------------------------------------------------------------------------
    def cases(self) -> list:
        d = self.m.dataset
        root = self.ctx.data_roots[d.name]
        if d.name == "montgomery":
            cases = montgomery.read(root)
        elif d.name == "shenzhen":
            cases = shenzhen.read(root, self.ctx.log)
        elif d.name == "pairs":
            cases = pairs.read(root)
        else:
            cases = cityscapes.read(root, "train")
        if d.limit:
            cases = cases[: d.limit]
        channels = 3 if d.name == "cityscapes" else 1 if d.name != "pairs" else self.m.model.in_channels
        if self.m.model.in_channels != channels:
            raise UsageError(f"model.in_channels is {self.m.model.in_channels} but {d.name} images have {channels}",
                             fix=f"-o model.in_channels={channels}")
        return cases

    def splits(self) -> dict:
        cases = self.cases()
        n_val = max(1, round(len(cases) * self.m.dataset.val_fraction))
        if len(cases) - n_val < 1:
            raise DataError(f"only {len(cases)} cases in {self.ctx.data_roots[self.m.dataset.name]}",
                            fix="at least 2 cases are needed (one to train, one to validate)")
        return {"train": cases[:-n_val], "val": cases[-n_val:]}

    def load(self, case) -> tuple[np.ndarray, np.ndarray]:
        """(image (C, H, W) float32 scaled to [0, 1] per image, mask (H, W) uint8), resized to dataset.resize."""
        from skimage.transform import resize

        d = self.m.dataset
        if d.name == "montgomery":
            image, mask = montgomery.load(case)
        elif d.name == "shenzhen":
            image, mask = shenzhen.load(case)
        elif d.name == "pairs":
            image, mask = pairs.load(case, self.m.model.in_channels)
        else:
            image, mask = cityscapes.load(case, d.label)
        lo, hi = float(image.min()), float(image.max())
        image = (image - lo) / (hi - lo) if hi > lo else np.zeros_like(image)
        image = resize(image, d.resize + image.shape[2:], order=1, preserve_range=True, anti_aliasing=True)
        mask = resize(mask, d.resize, order=0, preserve_range=True, anti_aliasing=False)
        image = image[None] if image.ndim == 2 else np.moveaxis(image, -1, 0)
        return image.astype(np.float32), (mask > 0.5).astype(np.uint8)

    def _arrays(self, cases) -> list[tuple[np.ndarray, np.ndarray]]:
        return [self.load(c) for c in cases]

    def _record_splits(self, splits: dict) -> None:
        lock = json_read(self.ctx.run.path / "data.lock.json")
        root = Path(self.ctx.data_roots[self.m.dataset.name]).resolve()
        lock["splits"] = {k: [Path(c.image).resolve().relative_to(root).as_posix() for c in v] for k, v in splits.items()}
        self.ctx.run.write_json("data.lock.json", lock)

    # -- training -------------------------------------------------------------------------------------------
    def train(self) -> dict:
        splits = self.splits()
        self._record_splits(splits)
        self.ctx.log(f"{self.m.dataset.name}: train {len(splits['train'])} · val {len(splits['val'])} images "
                     f"({self.m.model.arch}, {self.m.model.norm} norm)")
        train, val = self._arrays(splits["train"]), self._arrays(splits["val"])
        t, d = self.m.train, self.m.dataset
        module = LitSegmenter(self.build_model(), t.lr, d.crop)
        trainer = training.make_trainer(self.ctx, t.epochs, check_val_every_n_epoch=t.val_every)
        loader = torch.utils.data.DataLoader(RandomCrops(train, d.crop, d.crops_per_image), batch_size=t.batch_size,
                                             shuffle=True, num_workers=t.num_workers)
        val_loader = torch.utils.data.DataLoader(Whole(val), batch_size=1, num_workers=t.num_workers)
        t0 = time.perf_counter()
        training.fit(trainer, module, train_dataloaders=loader, val_dataloaders=val_loader,
                     ckpt_path=training.resume_checkpoint(self.ctx.run))
        secs = (time.perf_counter() - t0) / max(1, t.epochs)
        net = module.best_net()
        training.save_weights(net, self.ctx.run.path / "checkpoints" / "model.safetensors",
                              {"pipeline": "unet-lrp", "arch": self.m.model.arch, "norm": self.m.model.norm,
                               "best_epoch": module.best_epoch})
        learning_curves(self.ctx.run.path / "logs" / "metrics.csv", self.ctx.run.path / "figures" / "learning_curves.png")
        metrics, rows = self._segmentation_report(net, splits["val"], val)
        metrics.update({"best_epoch": module.best_epoch + 1, "secs_per_epoch": round(secs, 3)})
        metrics.update(training.count_params(net))
        sections = [self._dice_section(metrics)]
        if t.lrp_images:
            stats, lrp_rows = self._lrp_stats(net, splits["val"][: t.lrp_images], val[: t.lrp_images], self.m.explain)
            metrics.update({f"lrp_{k}": v for k, v in stats.items()})
            sections.append(self._lrp_section(stats, lrp_rows, "LRP check on the first validation images"))
        seg.write_per_case(self.ctx.run, rows)
        self.ctx.run.write_text("paper.md", paper_md(self.ctx.spec, self.m, metrics, self.ctx, sections=[*sections, _NOTES]))
        return metrics

    def _segmentation_report(self, net, cases, arrays) -> tuple[dict, list[dict]]:
        rows = []
        figs = self.ctx.run.path / "figures"
        for i, (case, (image, mask)) in enumerate(zip(cases, arrays, strict=True)):
            prob = predict_prob(net, image, self.m.dataset.crop)
            pred = prob > 0.5
            rows.append({"case": case.id, **seg.case_metrics(pred, mask, ("dice", "iou", "hd95")),
                         "objects": L.n_objects(prob)})
            if i < 4:
                seg.overlay_png(image, mask, pred, figs / f"overlay_{case.id}.png", f"{case.id}  Dice {rows[-1]['dice']:.3f}")
        metrics = seg.summarise(rows, ("dice", "iou", "hd95"))
        metrics["split"] = "val"
        self.ctx.log(f"val: Dice {metrics['dice']:.4f} ± {metrics['dice_sd']:.4f} over {len(rows)} images")
        return metrics, rows

    def _dice_section(self, metrics: dict) -> str:
        return ("## Segmentation (validation split)\n\n" + markdown_table(
            ["arch", "norm", "Dice", "IoU", "HD95 (px)", "images"],
            [[self.m.model.arch, self.m.model.norm, metrics["dice"], metrics["iou"], metrics["hd95"], metrics["n_cases"]]])
            + "\n\nThe paper reports no Dice (its evaluation is qualitative); the card adds it as check (i).")

    # -- stages on a finished run ----------------------------------------------------------------------------
    def _trained(self) -> L.Segmenter:
        return self.trained_model().eval()

    def eval(self) -> dict:
        split = self.m.eval.split
        splits = self.splits()
        if split not in splits:
            raise UsageError(f"unknown split '{split}'", fix=f"use --split {' | '.join(splits)}")
        net = self._trained()
        metrics, rows = self._segmentation_report(net, splits[split], self._arrays(splits[split]))
        metrics["split"] = split
        seg.write_per_case(self.ctx.run, rows)
        self.ctx.run.write_text("paper.md", paper_md(self.ctx.spec, self.m, metrics, self.ctx,
                                                     sections=[self._dice_section(metrics), _NOTES]))
        return metrics

    def predict(self) -> dict:
        import io

        from PIL import Image

        from medrun.artifacts import atomic_write

        net = self._trained()
        cases = self.splits()["val"]
        rows = []
        for case, (image, _) in zip(cases, self._arrays(cases), strict=True):
            prob = predict_prob(net, image, self.m.dataset.crop)
            buf = io.BytesIO()
            Image.fromarray(((prob > 0.5) * 255).astype(np.uint8)).save(buf, format="PNG")
            path = self.ctx.run.path / "predictions" / f"{case.id}.png"
            path.parent.mkdir(parents=True, exist_ok=True)
            atomic_write(path, buf.getvalue())
            rows.append({"case": case.id, "foreground_share": float((prob > 0.5).mean()), "objects": L.n_objects(prob)})
        seg.write_per_case(self.ctx.run, rows)
        return {"n": len(rows), "foreground_share": float(np.mean([r["foreground_share"] for r in rows]))}

    def _explained(self) -> tuple[L.Segmenter, list, list]:
        net = self._trained()
        cases = self.splits()["val"]
        n = self.m.explain.images
        cases = cases[:n] if n else cases
        return net, cases, self._arrays(cases)

    def explain(self) -> dict:
        """Relevance maps of the chosen object for the validation images: raw .npy, log-scaled .npy, PNG overlays."""
        e = self.m.explain
        net, cases, arrays = self._explained()
        run = self.ctx.run
        rows = []
        for case, (image, _) in zip(cases, arrays, strict=True):
            x, obj, start, r = self._relevance(net, image, e, e.residual_fix, case)
            if r is None:
                rows.append({"case": case.id, "object_px": 0})
                continue
            rmap = r.sum(axis=0)
            save_npy(run.path / "maps" / f"{case.id}_relevance.npy", rmap.astype(np.float32))
            raw = L.relevance_stats(rmap, np.ones_like(rmap, bool), start, 0)
            if rmap.shape != obj.shape:  # a layer's map: spread each value over the pixels it covers (sum kept)
                from skimage.transform import resize

                rmap = resize(rmap, obj.shape, order=0, preserve_range=True, anti_aliasing=False) * rmap.size / obj.size
            scaled = L.log_scale(rmap, e.thresh).astype(np.float32)
            save_npy(run.path / "maps" / f"{case.id}_log.npy", scaled)
            where = f"at {e.layer}" if e.layer else "at the input"
            relevance_png(x, scaled, obj, run.path / "figures" / f"lrp_{case.id}.png",
                          f"{case.id}: LRP-ε {where}, log-scaled (t={e.thresh})")
            stats = L.relevance_stats(rmap, obj, start, e.dilate_px)
            stats.update({k: raw[k] for k in ("max_abs_r", "sum_r", "conservation")})
            rows.append({"case": case.id, **stats})
        stats = _summary(rows)
        seg.write_per_case(run, rows)
        self.ctx.log(f"explained {stats['n_explained']} of {len(rows)} images; focus {stats['focus']:.3f} "
                     f"(area share {stats['area_share']:.3f}); max|R| {stats['max_abs_r']:.3g}")
        run.write_text("paper.md", paper_md(self.ctx.spec, self.m, stats, self.ctx, title="LRP on U-Nets: relevance maps",
                                            sections=[self._lrp_section(stats, rows, "Relevance maps"), _NOTES]))
        return stats

    def lrp_stats(self) -> dict:
        """max |R|, conservation and focus for every validation image, with and without the residual fix."""
        net, cases, arrays = self._explained()
        stats, rows = self._lrp_stats(net, cases, arrays, self.m.explain)
        seg.write_per_case(self.ctx.run, rows)
        self.ctx.run.write_text("paper.md", paper_md(self.ctx.spec, self.m, stats, self.ctx, title="LRP on U-Nets: statistics",
                                                     sections=[self._lrp_section(stats, rows, "LRP statistics"), _NOTES]))
        return stats

    # -- LRP ------------------------------------------------------------------------------------------------
    def _relevance(self, net, image, e, fix: bool, case):
        """(input window (C, s, s), object mask, start value, relevance (C, s, s)) for the centre crop window;
        relevance None when the prediction has no object."""
        x = centre_crop(image, self.m.dataset.crop)
        xt = torch.from_numpy(x)[None]
        with torch.no_grad():
            prob = torch.sigmoid(net(xt))[0, 0].numpy()
        try:
            obj = L.select_object(prob, "largest" if e.object == "largest" else int(e.object))
        except ValueError as err:
            raise UsageError(f"{case.image}: {err}", fix="-o explain.object=largest, or a number in that range") from None
        if not obj.any():
            self.ctx.log(f"{case.id}: no object predicted; skipped")
            return x, obj, 0.0, None
        m = torch.from_numpy(obj)[None, None]
        if layer := getattr(e, "layer", None):
            names = L.layer_names(net)
            if layer not in names:
                raise UsageError(f"explain.layer '{layer}' is not a layer of this {self.m.model.arch}; valid: "
                                 + ", ".join(names), fix="-o explain.layer=NAME with one of these, or drop it to "
                                                         "explain the input")
            r, start = L.layer_relevance(net, xt, m, layer, e.epsilon, fix)
        else:
            r, start = L.relevance(net, xt, m, e.epsilon, fix)
        return x, obj, float(start[0]), r[0].numpy().astype(np.float64)

    def _lrp_stats(self, net, cases, arrays, e) -> tuple[dict, list[dict]]:
        e = e.model_copy(update={"layer": None})  # statistics of the input relevance (explain.layer is explain's)
        has_res = L.residual_fix(net, on=True) > 0
        L.residual_fix(net, on=False)
        rows = []
        for case, (image, _) in zip(cases, arrays, strict=True):
            _, obj, start, r = self._relevance(net, image, e, True, case)
            if r is None:
                rows.append({"case": case.id, "object_px": 0})
                continue
            row = {"case": case.id, **L.relevance_stats(r.sum(axis=0), obj, start, e.dilate_px)}
            if has_res:
                _, _, _, r0 = self._relevance(net, image, e, False, case)
                s0 = L.relevance_stats(r0.sum(axis=0), obj, start, e.dilate_px)
            else:
                s0 = row
            row.update({"max_abs_r_nofix": s0["max_abs_r"], "conservation_nofix": s0["conservation"],
                        "fix_ratio": s0["max_abs_r"] / row["max_abs_r"] if row["max_abs_r"] > 0 else math.nan})
            rows.append(row)
        stats = _summary(rows)
        stats["residual_units"] = has_res
        self.ctx.log(f"LRP: focus {stats['focus']:.3f} vs area share {stats['area_share']:.3f}; max|R| "
                     f"{stats['max_abs_r']:.3g} with the fix, {stats.get('max_abs_r_nofix', math.nan):.3g} without")
        return stats, rows

    def _lrp_section(self, stats: dict, rows: list[dict], title: str) -> str:
        mm = self.m.model
        cols = [k for k in ("max_abs_r", "max_abs_r_nofix", "fix_ratio", "conservation", "conservation_nofix",
                            "focus", "area_share", "object_px") if any(k in r for r in rows)]
        table = markdown_table(["case", *cols], [[r["case"], *[r.get(k) for k in cols]] for r in rows])
        paper = markdown_table(["", "paper (Fig. 3, residual U-Net, one image)", "this run (median)"], [
            ["max abs R without the fix", "~2e15", _g(stats.get("max_abs_r_nofix"))],
            ["max abs R with the fix", "≤ ~4000", _g(stats.get("max_abs_r"))],
            ["ratio", "~5e11", _g(stats.get("fix_ratio"))]])
        return (f"## {title} ({mm.arch}, {mm.norm} norm, object: {self.m.explain.object})\n\n" + paper +
                f"\n\nFocus (positive relevance inside the object dilated by {self.m.explain.dilate_px} px): "
                f"{_g(stats.get('focus'))} against the region's area share {_g(stats.get('area_share'))} "
                f"(focus / area {_g(stats.get('focus_over_area'))}). Conservation Σ R / start value: "
                f"{_g(stats.get('conservation'))}.\n\n" + table)


# -- data and model glue ------------------------------------------------------------------------------------
class RandomCrops(torch.utils.data.Dataset):
    """``per_image`` random ``size``² crops of each (image, mask) per epoch."""

    def __init__(self, arrays, size: int, per_image: int):
        self.arrays, self.size, self.per_image = arrays, size, per_image

    def __len__(self):
        return len(self.arrays) * self.per_image

    def __getitem__(self, i):
        image, mask = self.arrays[i // self.per_image]
        h, w = mask.shape
        y = int(torch.randint(0, h - self.size + 1, ()).item())
        x = int(torch.randint(0, w - self.size + 1, ()).item())
        s = self.size
        return torch.from_numpy(image[:, y:y + s, x:x + s].copy()), torch.from_numpy(mask[None, y:y + s, x:x + s].astype(np.float32))


class Whole(torch.utils.data.Dataset):
    def __init__(self, arrays):
        self.arrays = arrays

    def __len__(self):
        return len(self.arrays)

    def __getitem__(self, i):
        image, mask = self.arrays[i]
        return torch.from_numpy(image), torch.from_numpy(mask[None].astype(np.float32))


class LitSegmenter(pl.LightningModule):
    """Generalized Dice Focal loss, Adam; validation Dice (MONAI DiceMetric, sliding window); keeps the best weights."""

    def __init__(self, net, lr: float, window: int):
        super().__init__()
        from monai.losses import GeneralizedDiceFocalLoss
        from monai.metrics import DiceMetric

        self.net, self.lr, self.window = net, lr, window
        self.loss = GeneralizedDiceFocalLoss(sigmoid=True, lambda_gdl=1.0, lambda_focal=1.0, gamma=2.0)
        self.dice = DiceMetric(include_background=True, reduction="mean")
        self.best_dice, self.best_epoch, self.best_state = -1.0, 0, None

    def forward(self, x):
        return self.net(x)

    def training_step(self, batch, _):
        x, y = batch
        loss = self.loss(self.net(x), y)
        self.log("train_loss", loss, on_epoch=True, on_step=False, prog_bar=True, batch_size=len(x))
        return loss

    def validation_step(self, batch, _):
        from monai.inferers import sliding_window_inference

        x, y = batch
        logits = sliding_window_inference(x, (self.window, self.window), 1, self.net)
        self.dice((torch.sigmoid(logits) > 0.5).float(), y)

    def on_validation_epoch_end(self):
        dice = float(self.dice.aggregate().item())
        self.dice.reset()
        self.log("val_dice", dice, prog_bar=True)
        if dice > self.best_dice:
            self.best_dice, self.best_epoch = dice, self.current_epoch
            self.best_state = {k: v.detach().clone() for k, v in self.net.state_dict().items()}

    def on_save_checkpoint(self, checkpoint):
        checkpoint["best"] = {"dice": self.best_dice, "epoch": self.best_epoch, "state": self.best_state}

    def on_load_checkpoint(self, checkpoint):
        best = checkpoint.get("best") or {}
        self.best_dice, self.best_epoch = best.get("dice", -1.0), best.get("epoch", 0)
        self.best_state = best.get("state")

    def best_net(self):
        if self.best_state is not None:
            self.net.load_state_dict(self.best_state)
        return self.net.eval()

    def configure_optimizers(self):
        return torch.optim.Adam(self.net.parameters(), lr=self.lr)


def predict_prob(net, image: np.ndarray, window: int) -> np.ndarray:
    """Sigmoid probabilities (H, W) for one image (C, H, W) by sliding-window inference."""
    from monai.inferers import sliding_window_inference

    net.eval()
    with torch.no_grad():
        logits = sliding_window_inference(torch.from_numpy(image)[None], (window, window), 1, net)
    return torch.sigmoid(logits)[0, 0].numpy()


def centre_crop(image: np.ndarray, size: int) -> np.ndarray:
    h, w = image.shape[-2:]
    y, x = (h - size) // 2, (w - size) // 2
    return np.ascontiguousarray(image[..., y:y + size, x:x + size])


def save_npy(path: Path, arr: np.ndarray) -> Path:
    import io

    from medrun.artifacts import atomic_write

    buf = io.BytesIO()
    np.save(buf, arr)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, buf.getvalue())
    return path


def relevance_png(x: np.ndarray, scaled: np.ndarray, obj: np.ndarray, path: Path, title: str) -> Path:
    """Captum ``visualize_image_attr`` blended heat map of the positive log-scaled relevance (5 % outliers clipped)
    over the input, the object outlined."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from captum.attr import visualization as viz

    img = np.moveaxis(x, 0, -1)
    img = np.repeat(img, 3, axis=-1) if img.shape[-1] == 1 else img
    fig, ax = plt.subplots(figsize=(4, 4), dpi=100)
    if np.any(scaled > 0):
        viz.visualize_image_attr(scaled[..., None], img, method="blended_heat_map", sign="positive", outlier_perc=5,
                                 plt_fig_axis=(fig, ax), use_pyplot=False, alpha_overlay=0.5)
    else:
        ax.imshow(img)
    if obj.any() and not obj.all():
        ax.contour(obj, levels=[0.5], colors="cyan", linewidths=0.8)
    ax.set_title(title, fontsize=7)
    ax.set_axis_off()
    return save_figure(fig, path, dpi=100, bbox_inches="tight")


def _summary(rows: list[dict]) -> dict:
    """Means (focus, area share, conservation) and medians (max |R|, fix ratio) over explained images."""
    done = [r for r in rows if r.get("object_px", 0) > 0]
    out: dict = {"n_images": len(rows), "n_explained": len(done)}
    for k in ("focus", "area_share", "conservation", "conservation_nofix"):
        vals = np.array([r[k] for r in done if k in r], dtype=float)
        vals = vals[np.isfinite(vals)]
        if len(vals) or k in ("focus", "area_share"):
            out[k] = float(vals.mean()) if len(vals) else math.nan
    for k in ("max_abs_r", "max_abs_r_nofix", "fix_ratio"):
        vals = np.array([r[k] for r in done if k in r], dtype=float)
        if len(vals):
            out[k] = float(np.median(vals))
    out["focus_over_area"] = out["focus"] / out["area_share"] if out.get("area_share") else math.nan
    return out


def _g(v) -> str:
    return "—" if v is None or (isinstance(v, float) and not math.isfinite(v)) else f"{v:.3g}"


def json_read(path: Path) -> dict:
    import json

    return json.loads(Path(path).read_text())


_NOTES = """## Notes on the comparison

- The paper's evaluation is qualitative (no Dice, IoU or faithfulness numbers). Dice, max |R|, conservation and
  focus are the card's reproducible proxies; Fig. 3's 2e15 vs 4000 depend on image and training, so the ratio is
  compared, not the values.
- Relevance starts at the masked sum of the sigmoid outputs of the selected object; Sigmoid is treated as identity for
  relevance. LRP runs on the centre crop window of the resized image."""
