"""totalct-sam ``zeroshot``: SAM-Med3D without fine-tuning, the SAM-Med3D row of Table 1.

SAM-Med3D answers a click with one binary mask and has no class outputs, so it is scored as promptable models
are: per case and per structure present in the ground truth, ``zeroshot.clicks`` clicks (default 1) — the first at
the structure's innermost voxel (largest distance to its border, deterministic), each later one at the innermost
voxel of the larger error region of the previous mask (positive on a miss, negative on a false positive) — in the
``model.img_size``³ window centred on the first click (SAM-Med3D's own 128³ crop; the volume is zero-padded when
smaller), mask logits upsampled ×4 and thresholded at 0. Dice, IoU and recall of that binary mask against the
structure on the whole resampled volume (a structure larger than the window loses what lies outside, as in
SAM-Med3D's evaluation), averaged over structures, then cases, like the train stage's scores; no voxel accuracy,
since the per-structure masks do not form one label map. ``secs_per_case`` times the network calls.

Weights: ``model.sammed3d_checkpoint`` through ``models.sam3d.load_sammed3d_checkpoint`` (``torch.load`` with
``weights_only=True``; missing / unexpected keys into ``sammed3d_load.json``, their sha256 into ``run.json``).
Without it the network is at random init — the only option offline and on the fixture — and the page says so: such
numbers test the scoring path, not SAM-Med3D. No training happens: the stage needs no parent run.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from medrun.models.sam3d import Sam3D, load_sammed3d_checkpoint

from ..predictor import Forward
from ..report import markdown_table, paper_md, paper_note
from ..tasks import segmentation as segm

KEYS = ("dice", "iou", "accuracy")


def clicked_mask(net: Sam3D, volumes, coords, labels):
    """SAM-Med3D's binary mask logits for clicks, upsampled ×4 to the window: (B, 1, S, S, S)."""
    masks = net(volumes, points=(coords, labels))[0]
    return F.interpolate(masks, size=tuple(volumes.shape[2:]), mode="trilinear", align_corners=False)


def innermost(mask: np.ndarray) -> tuple[int, ...]:
    """The voxel of ``mask`` farthest from its border (the first in C order among ties)."""
    from scipy.ndimage import distance_transform_edt

    dist = distance_transform_edt(np.pad(mask, 1))[1:-1, 1:-1, 1:-1]
    return tuple(int(i) for i in np.unravel_index(int(np.argmax(dist)), mask.shape))


def segment_structure(pred, run, image: torch.Tensor, gt: np.ndarray, size: int, clicks: int) -> np.ndarray:
    """Binary mask of one structure (``gt``, bool (X, Y, Z)) from simulated clicks on ``image`` (1, X, Y, Z)."""
    shape = gt.shape
    pad = [max(0, size - n) for n in shape]
    x = F.pad(image.float(), [v for p in reversed(pad) for v in (0, p)])
    g = np.pad(gt, [(0, p) for p in pad])
    first = innermost(g)
    start = [min(max(0, c - size // 2), n - size) for c, n in zip(first, g.shape, strict=True)]
    sl = tuple(slice(o, o + size) for o in start)
    win, gw = x[(slice(None), *sl)], g[sl]
    points, labels = [[c - o for c, o in zip(first, start, strict=True)]], [1]
    for k in range(clicks):
        coords = torch.tensor([points], dtype=torch.float32)
        mask = pred(run, win[None], coords, torch.tensor([labels]))[0, 0].numpy() > 0
        if k + 1 == clicks:
            break
        missed, extra = gw & ~mask, mask & ~gw
        if not (missed.any() or extra.any()):
            break
        positive = missed.sum() >= extra.sum()
        points.append(list(innermost(missed if positive else extra)))
        labels.append(int(positive))
    out = np.zeros(g.shape, bool)
    out[sl] = mask
    return out[: shape[0], : shape[1], : shape[2]]


def load_weights(pipe, net: Sam3D) -> bool:
    """The user's SAM-Med3D checkpoint into ``net`` (recorded in the run), or random init; True when loaded."""
    from medrun.artifacts import sha256_file

    ctx, path = pipe.ctx, pipe.m.model.sammed3d_checkpoint
    if not path:
        ctx.log("zeroshot: no model.sammed3d_checkpoint, so SAM-Med3D is at random init (scores test the path only)")
        return False
    report = load_sammed3d_checkpoint(Path(path), net)
    info = {"file": str(path), "sha256": sha256_file(path), "missing": report.missing,
            "unexpected": report.unexpected, "resized": report.resized}
    ctx.write_json("sammed3d_load.json", info)
    ctx.run.update_info(sammed3d_sha256=info["sha256"])
    ctx.log(f"SAM-Med3D weights from {path}: {report.summary()}")
    return True


def zeroshot(pipe) -> dict:
    ctx, m = pipe.ctx, pipe.m
    cases = pipe.split_of(pipe.splits())
    net = Sam3D(pipe.sam3d_config(0)).eval()
    pretrained = load_weights(pipe, net)
    pred = pipe.predictor
    run = pred.setup(Forward(net, clicked_mask))
    rows, per_class, secs = [], {c: [] for c in pipe.classes}, []
    for case in ctx.track(cases, "zero-shot"):
        vol = pipe.volume(case)
        image, gt = vol["image"].as_tensor(), vol["label"][0].numpy()
        t0, scores = time.perf_counter(), {}
        for i, name in enumerate(pipe.classes, start=1):
            if (gt == i).any():
                mask = segment_structure(pred, run, image, gt == i, m.model.img_size, m.zeroshot.clicks)
                scores[name] = segm.case_metrics(mask, gt == i, ("dice", "iou", "recall"))
                per_class[name].append(scores[name])
        secs.append(time.perf_counter() - t0)
        mean = {k: float(np.mean([v[k] for v in scores.values()])) if scores else float("nan")
                for k in ("dice", "iou", "recall")}
        rows.append({"case": case.id, "split": m.eval.split, "dice": mean["dice"], "iou": mean["iou"],
                     "accuracy": mean["recall"], "n_classes": len(scores), "secs": round(secs[-1], 4),
                     **{f"dice_{c}": v["dice"] for c, v in scores.items()}})
    metrics = {**segm.summarise(rows, KEYS), "split": m.eval.split, "pretrained": pretrained,
               "clicks": m.zeroshot.clicks, "secs_per_case": round(float(np.mean(secs)), 4),
               "params_total": sum(p.numel() for p in net.parameters())}
    metrics["per_class"] = {c: {k: float(np.mean([v[k] for v in vs])) for k in ("dice", "iou", "recall")}
                            | {"n_cases": len(vs)} for c, vs in per_class.items() if vs}
    ctx.write_csv("per_case.csv", rows)
    ctx.write_csv("per_class.csv", [{"class": c, **v} for c, v in metrics["per_class"].items()])
    ctx.log(f"{m.eval.split}: zero-shot SAM-Med3D ({'weights' if pretrained else 'random init'}, "
            f"{m.zeroshot.clicks} click(s)) Dice {metrics['dice']:.4f}  IoU {metrics['iou']:.4f}")
    ctx.write_text("paper.md", page(pipe, metrics))
    return metrics


def page(pipe, metrics: dict) -> str:
    ctx, spec = pipe.ctx, pipe.ctx.spec
    body = [["SAM-Med3D, this run", f"{100 * metrics['dice']:.2f}", f"{100 * metrics['iou']:.2f}",
             f"{100 * metrics['accuracy']:.2f}", f"{metrics['secs_per_case']:.2f}",
             "SAM-Med3D weights" if metrics["pretrained"] else "random init: tests the scoring path, not SAM-Med3D"],
            ["SAM-Med3D, paper", "80.94", "67.98", "/", "6.22", "released SAM-Med3D"]]
    table = markdown_table(["model", "Dice %", "IoU %", "Acc %", "s / case", "weights"], body)
    return paper_md(spec, pipe.m, metrics, ctx, title="SAM-Med3D without fine-tuning (Table 1)", table="Table 1",
                    setting="TotalSegmentator v1 validation split (57 CTs)", expect={"dice": 0.8094, "iou": 0.6798},
                    keys=list(KEYS), sections=[f"## Table 1, SAM-Med3D row ({metrics['clicks']} click(s) per "
                                               f"structure)\n\n" + table, paper_note(spec, "zeroshot")])
