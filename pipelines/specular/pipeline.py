"""specular, the method (card: docs/papers/specular.md). Training-free: stages ``detect``, ``eval`` and ``inpaint``
(here), ``match`` (``match.py``) and ``tune`` (``tune.py``); none takes a finished run.

Data (``datasets.specular``): cvc-clinicspec frames and masks paired by stem (``dataset.images`` /
``dataset.masks``, mask > 0 = specular); hyper-kvasir videos under
``labeled-videos/lower-gi-tract/quality-of-mucosal-views/BBPS-2-3`` read with OpenCV.

Choices where the card or the paper leave room (all manifest keys):
- MMSER (``method.mmser``): a component tree of the upper level sets {I ≥ t} (scipy ``ndimage.label``, 8-connected,
  one label pass per level; a child links to its parent through any member pixel). The chain of a region goes down
  to its unique parent and up through its largest child. Stability S(t) = A(ancestor Δt levels down) − A(t): the
  paper's unnormalised |A(t+Δt) − A(t)| written in the direction where the ancestor is unique (``stability:
  normalised`` divides by A(t), as MSER). A region is kept when S(t) < S(parent) and S(t) < the first different S
  above it along the chain (a run of equal S counts once, so a plateau keeps its lowest level, and a leaf, which
  has no S(t+1), is never kept), A(t) < A_max (0.1 % of the image) and A ≥ min_area; with ``floor`` only levels
  t ≥ ½·max(I) (levels down to the floor − Δt − 1 are labelled so the first kept levels have a full Δt). Δt = 5.
  ``mser_impl: opencv`` uses ``cv2.MSER`` (normalised stability) and keeps regions brighter than their 1-px ring;
  metrics say so (``mser_opencv``).
- Saturation Eq. 5 as written (it goes negative when r is small); ``sat: hsv`` gives HSV saturation.
- False-region removal: components of IS with area ≤ t_h kept, t_h = 20 px at 384×288 scaled by H·W/(384·288)
  (skimage ``remove_small_objects``, 8-connectivity). Fusion: OR (Eq. 8).
- Inpainting: ``cv2.inpaint`` Navier–Stokes on S_R dilated once by 3×3, radius 3; ``telea`` and ``arnold`` (NS,
  then the 2-px ring around the mask replaced by a Gaussian-smoothed copy: a two-level filling, not Arnold's exact
  algorithm) as options.
- Ablation names: ``fused`` (S_R), ``mmser`` (M_RS only), ``is`` (the Eq. 6 candidates without removal, the card's
  "IS-only"), ``is_en`` (after removal). Baselines re-implemented without weights: ``shen`` (grey ≥ 0.9·max, 3×3
  closing), ``arnold`` (absolute ≥ 235, or ≥ 1.15 × the 31×31 median and above the 75th percentile and 0.6·max).
  The paper's Table 1 baselines are quoted, never compared under our protocol (its rows are inconsistent).
- Metrics: pixel accuracy, precision, recall, F1, Jaccard per image (``medrun.metrics.segmentation``; an image with
  an empty GT and empty prediction scores 1), mean over images (primary) and pooled over pixels (``pooled_*``).
- The covariant detector (kornia, ``features.py``) runs through ``ctx.predictor()``; the classical steps have no
  forward pass.
"""

from __future__ import annotations

import time

import numpy as np

from medrun.datasets import specular as data
from medrun.errors import UsageError

from ..base import Pipeline
from ..report import markdown_table, paper_md, paper_note, paper_table
from . import method
from .config import folders

METRICS = ("accuracy", "precision", "recall", "f1", "jaccard")
COLOURS = {"tp": (0, 200, 0), "fp": (255, 0, 0), "fn": (0, 120, 255)}


def params(m) -> method.Params:
    d = m.detection
    return method.Params(delta=d.delta, a_max=d.a_max, min_area=d.min_area, floor=d.floor, stability=d.stability,
                         mser_impl=d.mser_impl, t_h=d.t_h, sat=d.sat)


def overlay(rgb: np.ndarray, pred: np.ndarray, gt: np.ndarray | None = None) -> np.ndarray:
    """TP green, FP red, FN blue (without GT: detections red) over the frame."""
    out = rgb.copy()
    if gt is None:
        out[pred] = COLOURS["fp"]
        return out
    for key, m in (("tp", pred & gt), ("fp", pred & ~gt), ("fn", ~pred & gt)):
        out[m] = COLOURS[key]
    return out


class Specular(Pipeline):
    def build_model(self):
        from .features import covariant_net

        return covariant_net(self.m.match.num_features, self.m.match.response)

    # -- data ---------------------------------------------------------------------------------------------------
    def _require(self, name: str, stage: str) -> None:
        if self.m.dataset.name != name:
            raise UsageError(f"stage '{stage}' reads {name}, not {self.m.dataset.name}",
                             fix=f"run it with --dataset {name}")

    def frames(self, with_masks: bool = True) -> list[data.Frame]:
        f = folders(self.m)
        frames = data.read_frames(f["images"], f["masks"] if with_masks else None)
        return frames[: self.m.dataset.limit] if self.m.dataset.limit else frames

    def inputs(self, source: str | None) -> list[data.Frame]:
        if source is None:
            self._require("cvc-clinicspec", self.ctx.stage)
            return self.frames(with_masks=False)
        return [data.Frame(p.stem, p, None) for p in self.ctx.predict_inputs(source, data.IMAGE_SUFFIXES,
                                                                               what="frames")]

    # -- detect -------------------------------------------------------------------------------------------------
    def detect(self) -> dict:
        p, want = params(self.m), list(dict.fromkeys(self.m.detect.variants))
        frames = self.inputs(self.m.detect.input)
        rows, t0 = [], time.perf_counter()
        for i, fr in enumerate(frames):
            rgb = data.load_rgb(fr.image)
            masks = method.variants(rgb, p, want)
            for v in want:
                self.ctx.write_png(f"masks/{v}/{fr.stem}.png", masks[v].astype(np.uint8) * 255)
            rows.append({"image": fr.stem, **{f"{v}_px": int(masks[v].sum()) for v in want},
                         **{f"{v}_fraction": float(masks[v].mean()) for v in want}})
            if i < self.m.detect.figures:
                self._panel(f"detected/{fr.stem}", rgb, {v: overlay(rgb, masks[v]) for v in want})
        secs = time.perf_counter() - t0
        self.ctx.write_csv("per_case.csv", rows)
        self.ctx.record_splits({"detect": [fr.image for fr in frames]})
        metrics = {"n_images": len(frames), "secs_per_image": secs / max(1, len(frames)),
                   **{f"{v}_fraction": float(np.mean([r[f"{v}_fraction"] for r in rows])) for v in want}}
        self.ctx.write_text("paper.md", paper_md(self.ctx.spec, self.m, metrics, self.ctx, present_only=True,
                                                 keys=list(metrics), expect={}))
        return metrics

    def _panel(self, name: str, rgb: np.ndarray, panels: dict[str, np.ndarray]) -> None:
        with self.ctx.figure(name, ncols=len(panels) + 1, figsize=(3.2 * (len(panels) + 1), 2.8)) as (fig, axes):
            for ax, (title, im) in zip(np.atleast_1d(axes), [("frame", rgb), *panels.items()], strict=True):
                ax.imshow(im)
                ax.set_title(title, fontsize=9)
                ax.axis("off")

    # -- eval ---------------------------------------------------------------------------------------------------
    def eval(self) -> dict:
        self._require("cvc-clinicspec", "eval")
        p, methods = params(self.m), list(dict.fromkeys(["fused", *self.m.eval.methods]))
        frames = self.frames()
        rows, counts, inpaint_max, t0 = [], {k: [] for k in methods}, [], time.perf_counter()
        for i, fr in enumerate(frames):
            rgb = data.load_rgb(fr.image)
            gt = data.load_mask(fr.mask, rgb.shape[:2])
            masks = method.variants(rgb, p, methods)
            for k in methods:
                s = method.scores(masks[k], gt)
                counts[k].append({c: s[c] for c in ("tp", "fp", "fn", "tn")})
                rows.append({"image": fr.stem, "method": k, **{mm: s[mm] for mm in METRICS},
                             "pred_px": int(masks[k].sum()), "gt_px": int(gt.sum())})
            sr = masks["fused"]
            filled = method.inpaint(rgb, sr, self.m.inpaint.method, self.m.inpaint.radius)
            inpaint_max.append(int(filled[sr].max()) if sr.any() else 0)
            if i < self.m.eval.figures:
                self._panel(f"overlays/{fr.stem}", rgb, {f"{k} (TP green, FP red, FN blue)" if k == "fused" else k:
                                                         overlay(rgb, masks[k], gt)
                                                         for k in ("fused", "mmser", "is") if k in masks})
        secs = time.perf_counter() - t0
        self.ctx.write_csv("per_case.csv", rows)
        self.ctx.record_splits({"all": [fr.image for fr in frames]})
        metrics: dict = {"n_images": len(frames), "secs_per_image": secs / max(1, len(frames)),
                         "mser_opencv": int(p.mser_impl == "opencv")}
        for k in methods:
            mine = [r for r in rows if r["method"] == k]
            for mm in METRICS:
                metrics[f"{k}_{mm}"] = float(np.mean([r[mm] for r in mine]))
            for mm, v in method.pooled(counts[k]).items():
                metrics[f"pooled_{k}_{mm}"] = v
        metrics.update({mm: metrics[f"fused_{mm}"] for mm in METRICS})
        for k in ("mmser", "is", "is_en"):
            if k in methods:
                metrics[f"fused_minus_{k}_jaccard"] = metrics["fused_jaccard"] - metrics[f"{k}_jaccard"]
        metrics["inpaint_max_in_sr"] = max(inpaint_max) if inpaint_max else 0
        self._bars(metrics, methods)
        table = markdown_table(["method", "Acc", "Prec", "Rec", "F1", "Jaccard", "pooled F1", "pooled Jaccard"],
                               [[k, *(metrics[f"{k}_{mm}"] for mm in METRICS), metrics[f"pooled_{k}_f1"],
                                 metrics[f"pooled_{k}_jaccard"]] for k in methods])
        sections = [f"## This run: every detector under one protocol (mean over {len(frames)} images, and pooled)",
                    table, paper_table(self.ctx.spec, "table1"), paper_note(self.ctx.spec, "table1")]
        self.ctx.write_text("paper.md", paper_md(self.ctx.spec, self.m, metrics, self.ctx, sections=sections))
        return metrics

    def _bars(self, metrics: dict, methods: list[str]) -> None:
        with self.ctx.figure("table1_bars", figsize=(7, 3.2)) as (fig, ax):
            x = np.arange(len(methods))
            for j, mm in enumerate(("precision", "recall", "f1", "jaccard")):
                ax.bar(x + (j - 1.5) * 0.2, [metrics[f"{k}_{mm}"] for k in methods], 0.2, label=mm)
            ax.set_xticks(x, methods)
            ax.set_ylim(0, 1)
            ax.legend(fontsize=8, ncols=4)
            ax.set_title("detection, mean over images")

    # -- inpaint ------------------------------------------------------------------------------------------------
    def inpaint(self) -> dict:
        p, cfg = params(self.m), self.m.inpaint
        frames = self.inputs(cfg.input)
        rows, t0 = [], time.perf_counter()
        for i, fr in enumerate(frames):
            rgb = data.load_rgb(fr.image)
            sr = method.detect(rgb, p)["fused"]
            filled = method.inpaint(rgb, sr, cfg.method, cfg.radius)
            self.ctx.write_png(f"filtered/{fr.stem}.png", filled)
            rows.append({"image": fr.stem, "sr_px": int(sr.sum()), "max_before": int(rgb[sr].max()) if sr.any() else 0,
                         "max_after": int(filled[sr].max()) if sr.any() else 0,
                         "px_ge_250_after": int((filled[sr] >= 250).any(-1).sum()) if sr.any() else 0})
            if i < cfg.figures:
                self._panel(f"inpainted/{fr.stem}", rgb, {"S_R": overlay(rgb, sr), f"filtered ({cfg.method})": filled})
        secs = time.perf_counter() - t0
        self.ctx.write_csv("per_case.csv", rows)
        self.ctx.record_splits({"inpaint": [fr.image for fr in frames]})
        metrics = {"n_images": len(frames), "secs_per_image": secs / max(1, len(frames)),
                   "inpaint_max_in_sr": max((r["max_after"] for r in rows), default=0),
                   "px_ge_250_in_sr": sum(r["px_ge_250_after"] for r in rows)}
        self.ctx.write_text("paper.md", paper_md(self.ctx.spec, self.m, metrics, self.ctx, keys=list(metrics),
                                                 expect={}))
        return metrics

    # -- match, tune --------------------------------------------------------------------------------------------
    def match(self) -> dict:
        from .match import match_stage

        self._require("hyper-kvasir", "match")
        return match_stage(self)

    def tune(self) -> dict:
        from .tune import tune_stage

        self._require("cvc-clinicspec", "tune")
        return tune_stage(self)

