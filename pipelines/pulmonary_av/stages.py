"""pulmonary-av's stages beyond train/eval: ``prior`` (Stage 1a + 1b), ``refine`` (Stage 3, ASE),
``count-terminals`` and ``predict``; and the three-plane overlay.

``refine`` on the fixture also runs the gap check (``dataset.gap_case``, the fixture's ``pav_gap``): S = the case's
true label map with the voxels below ``refine.gap_threshold_hu`` removed (the faint 4-voxel stretch of the PA trunk,
which a network trained on +20…+80 HU vessels misses: a deterministic stand-in for a network's broken vessel), P =
that case's prior; ASE must remove the two extra terminals, fill the stretch with PA and not lower the Dice."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from medrun.datasets import pulmonary_av as D
from medrun.errors import DataError

from ..report import paper_md, paper_note, paper_table
from ..tasks.segmentation import summarise
from . import geometry as G
from .pipeline import CLASSES, PER_CLASS, Case, case_row, normalise

COLOURS = {1: "red", 2: "deepskyblue"}


def overlay_three_planes(ctx, name: str, hu: np.ndarray, gt: np.ndarray, pred: np.ndarray, title: str) -> None:
    """Axial, coronal and sagittal slices through the vessels' centre: CT (lung window) with the true (solid) and
    predicted (dashed) outlines; PA red, PV blue (a binary map draws in red)."""
    idx = np.argwhere(gt > 0)
    centre = idx.mean(0).round().astype(int) if len(idx) else np.array(gt.shape) // 2
    with ctx.figure(name, ncols=3, figsize=(12, 4.4)) as (fig, axes):
        for ax, axis, plane in zip(axes, (2, 1, 0), ("axial", "coronal", "sagittal"), strict=True):
            def take(a, axis=axis):
                return np.rot90(np.take(a, centre[axis], axis=axis))

            ax.imshow(np.clip(take(hu), -1000, 400), cmap="gray")
            for c, colour in COLOURS.items():
                for mask, style in ((gt, "solid"), (pred, "dashed")):
                    sl = take(mask) == c
                    if sl.any() and not sl.all():
                        ax.contour(sl, levels=[0.5], colors=colour, linewidths=0.9, linestyles=style)
            ax.set_title(plane, fontsize=9)
            ax.set_axis_off()
        fig.suptitle(title + "  (solid: truth, dashed: prediction; PA red, PV blue)", fontsize=9)


def _recall(p, t) -> float:
    return float((p & t).sum() / t.sum()) if t.sum() else float("nan")


def _precision(p, t) -> float:
    return float((p & t).sum() / p.sum()) if p.sum() else float("nan")


# -- prior -------------------------------------------------------------------------------------------------------
def prior_stage(pipe) -> dict:
    ctx, m = pipe.ctx, pipe.m
    cases = pipe.split_of(pipe._splits)
    rows = []
    for c in ctx.track(cases, "priors"):
        p_in = pipe.prior_in(c)
        p_out = pipe.prior_out(c) if pipe.prior_net is not None else np.zeros_like(p_in)
        vessels, lung = c.vol.label > 0, c.vol.lung
        c.prior = p = p_in | p_out
        rows.append({"case": c.id, "recall_in": _recall(p_in, vessels & lung),
                     "precision_in": _precision(p_in, vessels & lung), "recall_out": _recall(p_out, vessels & ~lung),
                     "precision_out": _precision(p_out, vessels & ~lung), "recall": _recall(p, vessels),
                     "precision": _precision(p, vessels), "dice": float(G_dice(p, vessels))})
        ctx.write_nifti(f"priors/{c.id}.nii.gz", p.astype(np.uint8), c.vol.affine)
        if m.eval.overlays and len(rows) <= 3:
            overlay_three_planes(ctx, f"prior_{c.id}", c.vol.hu, vessels.astype(np.uint8), p.astype(np.uint8),
                                 f"{c.id}: prior recall {rows[-1]['recall']:.3f} (in-lung {rows[-1]['recall_in']:.3f})")
    ctx.write_csv("per_case.csv", rows)
    keys = ["recall_in", "precision_in", "recall_out", "precision_out", "recall", "precision", "dice"]
    metrics = {**summarise(rows, keys), "split": m.eval.split,
               "route": "threshold" if m.prior.fast_threshold else "marching-cubes"}
    ctx.log(f"prior: recall in the lungs {metrics['recall_in']:.4f}, outside {metrics['recall_out']:.4f}, "
            f"overall {metrics['recall']:.4f}")
    ctx.write_text("paper.md", paper_md(ctx.spec, m, metrics, ctx, expect={}, keys=keys, present_only=True,
                                        title=f"{ctx.spec.title}: vessel prior (Stage 1)",
                                        sections=[paper_note(ctx.spec, "prior")]))
    return metrics


def G_dice(a, b) -> float:
    den = a.sum() + b.sum()
    return 2 * float((a & b).sum()) / den if den else 1.0


# -- refine (ASE) --------------------------------------------------------------------------------------------------
def _ase(pipe, seg, prior, spacing):
    r = pipe.m.refine
    return G.ase(seg, prior, spacing, t_deg=r.t_deg, k=r.k, d_max=r.d_max, walk_steps=r.walk, window_mm=r.window_mm)


def gap_check(pipe) -> dict:
    c = pipe.gap_case
    gt = c.vol.label
    seg = np.where(c.vol.hu < pipe.m.refine.gap_threshold_hu, 0, gt).astype(np.uint8)
    gap = (gt > 0) & (seg == 0)
    pipe.attach_priors([c])
    out, rep = _ase(pipe, seg, c.prior, c.vol.spacing)

    def mean_dice(s):
        return float(np.mean([G_dice(s == k, gt == k) for k in CLASSES]))

    before, after = G.terminals(seg), G.terminals(out)
    res = {"gap_voxels": int(gap.sum()), "gap_terminals_gt": G.terminals(gt), "gap_terminals_before": before,
           "gap_terminals_after": after, "ase_terminal_drop": before - after,
           "gap_fill_pa": float((out[gap] == 1).mean()) if gap.any() else float("nan"),
           "gap_fill_pv": float((out[gap] == 2).mean()) if gap.any() else float("nan"),
           "gap_dice_before": mean_dice(seg), "gap_dice_after": mean_dice(out), "gap_pairs": len(rep.pairs)}
    res["gap_dice_gain"] = res["gap_dice_after"] - res["gap_dice_before"]
    if pipe.m.eval.overlays:
        overlay_three_planes(pipe.ctx, f"gap_{c.id}", c.vol.hu, seg, out,
                             f"{c.id}: before ASE (solid) and after (dashed); {before} → {after} terminals")
    return res


def refine_stage(pipe) -> dict:
    ctx, m = pipe.ctx, pipe.m
    net = pipe.trained_model()
    cases = pipe.split_of(pipe._splits)
    pipe.attach_priors(cases)
    rows, pairs = [], []
    for c in ctx.track(cases, "segmenting + ASE"):
        seg = pipe.segment(net, c)
        out, rep = _ase(pipe, seg, c.prior, c.vol.spacing)
        gt = c.vol.label
        row = {**case_row(seg, gt, c.vol.spacing, c.id), **case_row(out, gt, c.vol.spacing, c.id, "ase_"),
               "terminals_gt": G.terminals(gt), "terminals_pred": G.terminals(seg), "terminals_ase": G.terminals(out),
               "ase_pairs": len(rep.pairs), "ase_filled": rep.filled, "ase_relabelled": rep.relabelled,
               "prior_recall_in": _recall(G.prior_in(c.vol.hu, c.vol.lung, c.vol.spacing,
                                                     tuple(m.prior.iso_levels), m.prior.intensity_offset,
                                                     m.prior.fast_threshold, tuple(m.prior.fill_axes)),
                                          (gt > 0) & c.vol.lung)}
        rows.append(row)
        pairs += [{"case": c.id, **{k: (str(v) if isinstance(v, list) else v) for k, v in p.items()}}
                  for p in rep.pairs]
        ctx.write_nifti(f"refined/{c.id}.nii.gz", out.astype(np.uint8), c.vol.affine)
        if m.eval.overlays and len(rows) <= 3:
            overlay_three_planes(ctx, f"ase_{c.id}", c.vol.hu, gt, out,
                                 f"{c.id}: after ASE, Dice {row['ase_dice']:.3f} (before {row['dice']:.3f})")
    ctx.write_csv("per_case.csv", rows)
    if pairs:
        ctx.write_csv("ase_pairs.csv", pairs)
    keys = [*PER_CLASS, *(f"ase_{k}" for k in PER_CLASS), "dice_pa", "dice_pv", "ase_dice_pa", "ase_dice_pv",
            "terminals_gt", "terminals_pred", "terminals_ase", "ase_pairs", "ase_filled", "ase_relabelled",
            "prior_recall_in"]
    metrics = {**summarise(rows, keys), "split": m.eval.split}
    metrics["ase_dice_gain"] = metrics["ase_dice"] - metrics["dice"]
    if pipe.gap_case is not None:
        metrics.update(gap_check(pipe))
    ctx.log(f"refine: Dice {metrics['dice']:.4f} → {metrics['ase_dice']:.4f} after ASE; terminals "
            f"{metrics['terminals_pred']:.1f} → {metrics['terminals_ase']:.1f} (truth {metrics['terminals_gt']:.1f})"
            + (f"; gap case: terminals {metrics['gap_terminals_before']} → {metrics['gap_terminals_after']}, "
               f"PA fill {metrics['gap_fill_pa']:.2f}" if "gap_fill_pa" in metrics else ""))
    expect = {"ase_precision": 0.825, "ase_recall": 0.876, "ase_specificity": 0.999, "ase_dice": 0.846,
              "terminals_ase": 300, "terminals_pred": 241, "terminals_gt": 283}
    ctx.write_text("paper.md", paper_md(ctx.spec, m, metrics, ctx, expect=expect, table="Tables 1 and 3",
                                        keys=[*expect, "dice", "ase_dice_gain", "ase_terminal_drop",
                                              "gap_fill_pa", "gap_dice_gain"], present_only=True,
                                        title=f"{ctx.spec.title}: EA-U-Net + ASE",
                                        sections=[paper_table(ctx.spec, "table1"), paper_table(ctx.spec, "table3"),
                                                  paper_note(ctx.spec, "ase")]))
    return metrics


# -- count-terminals ---------------------------------------------------------------------------------------------
def count_stage(pipe) -> dict:
    import nibabel as nib

    ctx = pipe.ctx
    src = pipe.m.count.input
    files = [Path(f) for f in ctx.predict_inputs(src, (".nii.gz", ".nii"))] if src else \
        [c.label for c in pipe.all_cases]
    rows = []
    for f in ctx.track(files, "counting"):
        try:
            lab = np.asarray(nib.load(str(f)).dataobj)
        except Exception as e:  # nibabel raises several types for damaged files
            raise DataError(f"{f} is not a readable NIfTI label map ({e})", fix="re-export it") from e
        rows.append({"file": f.name, "terminals": G.terminals(lab > 0),
                     **{f"terminals_{n}": G.terminals(lab == k) for k, n in CLASSES.items()}})
    ctx.write_csv("per_case.csv", rows)
    metrics = summarise(rows, ["terminals", "terminals_pa", "terminals_pv"])
    ctx.write_text("paper.md", paper_md(ctx.spec, pipe.m, metrics, ctx, expect={}, keys=["terminals"],
                                        present_only=True, title=f"{ctx.spec.title}: terminal vessels",
                                        sections=[paper_table(ctx.spec, "table3")]))
    return metrics


# -- predict -----------------------------------------------------------------------------------------------------
def predict_stage(pipe) -> dict:
    ctx, m = pipe.ctx, pipe.m
    net = pipe.trained_model()
    if m.predict.input:
        cases = [Case(v, normalise(v.hu, m.train.hu_window))
                 for v in (D.load(c, m.dataset.stored_offset) for c in D.read(Path(m.predict.input), labels=False))]
    else:
        cases = pipe.split_of(pipe._splits)
    pipe.attach_priors(cases)
    rows = []
    for c in ctx.track(cases, "predicting"):
        seg = pipe.segment(net, c)
        if m.predict.ase:
            seg, _ = _ase(pipe, seg, c.prior, c.vol.spacing)
        ctx.write_nifti(f"predictions/{c.id}.nii.gz", seg.astype(np.uint8), c.vol.affine)
        vox = float(np.prod(c.vol.spacing)) / 1000.0
        rows.append({"case": c.id, "pa_ml": float((seg == 1).sum() * vox), "pv_ml": float((seg == 2).sum() * vox),
                     "terminals": G.terminals(seg), "ase": m.predict.ase})
    ctx.write_csv("per_case.csv", rows)
    return {"n": len(rows), "terminals": float(np.mean([r["terminals"] for r in rows])) if rows else 0.0}
