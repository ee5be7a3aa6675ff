"""``eval``: patch-level Table 1 (and the add-only / erase-only split of Table 2 at patch level) of a train run.

Rows, each over the test patches holding lines, mean ± sd over ``eval.repeats`` runs of random strokes:
f_init; f_iter without hints (Y only: Δ = 0); pure manual Y^Δ; f_iter with one stroke (Y + Δ) for each width
in ``eval.widths``; add-only and erase-only at width μ. Figures: before/after overlays of the first patches and a
bar chart of pFM per row.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from ..report import markdown_table, paper_md, paper_note, paper_table
from ..sweep import summarise
from .pipeline import mean_of, pfm_rows


def _row(name, rows_by_rep, manual_by_rep=None):
    out = []
    for r, rows in enumerate(rows_by_rep):
        rec = {"row": name, "repeat": r, "pfm": mean_of(rows, "pfm"), "iou": mean_of(rows, "iou"),
               "precision": mean_of(rows, "precision"), "p_recall": mean_of(rows, "p_recall")}
        if manual_by_rep is not None:
            man = mean_of(manual_by_rep[r], "pfm")
            rec["pfm_manual"] = man
            rec["pfm_delta"] = (rec["pfm"] - man) / man if man > 0 else math.nan
        out.append(rec)
    return out


def evaluate(p) -> dict:
    e = p.m.eval
    f_init, f_iter = p.trained_pair()
    p.record()
    p.split_of(p.held_out)  # a UsageError listing val | test for another name
    ps, X, G = p.patches(e.split)
    y0 = p.forward(f_init, X)
    yb = (y0[:, 0] > 0).numpy()
    init_rows = pfm_rows(yb, G)
    zero = torch.zeros_like(y0)
    yonly_rows = pfm_rows((p.forward(f_iter, p.hints.inputs(X, y0, zero))[:, 0] > 0).numpy(), G)
    table = _row("f_init", [init_rows]) + _row("Y only (no hint)", [yonly_rows])
    variants = [(f"Y + Δ, width {w}", "longest", w) for w in e.widths] + [("only adding, width mu", "add", "mu"),
                                                                         ("only erasing, width mu", "erase", "mu")]
    per_case = {pp.id: {"patch": pp.id, "pfm_init": a["pfm"], "iou_init": a["iou"], "pfm_y_only": b["pfm"]}
                for pp, a, b in zip(ps, init_rows, yonly_rows, strict=True)}
    first = {}
    for name, policy, width in variants:
        refined, manual = [], []
        for r in range(e.repeats):
            rng = np.random.default_rng([p.m.seed, r])
            delta, man, yp, strokes = p.refine_once(f_iter, X, y0, G, rng, policy, width)
            refined.append(pfm_rows((yp[:, 0] > 0).numpy(), G))
            manual.append(pfm_rows(man, G))
            if r == 0 and name not in first:
                first[name] = (delta, man, yp, strokes)
        table += _row(f"{name}: manual Y^Δ", manual) + _row(name, refined, manual)
        tag = name.split(",")[0].replace(" ", "_").replace("+", "plus").replace("Δ", "delta") + f"_{width}"
        for pp, a, b in zip(ps, refined[0], manual[0], strict=True):
            per_case[pp.id].update({f"pfm_{tag}": a["pfm"], f"pfm_manual_{tag}": b["pfm"]})
    keys = ["pfm", "iou", "precision", "p_recall", "pfm_manual", "pfm_delta"]
    summary = summarise(table, [k for k in keys if any(k in r for r in table)], by=["row"])
    p.ctx.write_csv("table1.csv", summary)
    p.ctx.write_csv("per_repeat.csv", table)
    p.ctx.write_csv("per_case.csv", list(per_case.values()))
    main = next(s for s in summary if s["row"] == f"Y + Δ, width {e.widths[0]}")
    metrics = {"split": e.split, "n_patches": len(ps), "repeats": e.repeats, "pfm": main["pfm"], "iou": main["iou"],
               "pfm_delta": main["pfm_delta"], "pfm_delta_sd": main["pfm_delta_sd"],
               "pfm_init": summary[0]["pfm"], "iou_init": summary[0]["iou"], "pfm_y_only": summary[1]["pfm"]}
    for s in summary:
        if s["row"].startswith("only") and "manual" not in s["row"]:
            metrics["pfm_delta_add_only" if "adding" in s["row"] else "pfm_delta_erase_only"] = s["pfm_delta"]
        if "gamma" in s["row"] and "manual" not in s["row"]:
            metrics["pfm_delta_gamma"] = s["pfm_delta"]
    _figures(p, ps, X, G, yb, first[variants[0][0]], summary)

    def cell(s, k):
        return "–" if k not in s or not isinstance(s.get(k), float) or math.isnan(s[k]) else \
            f"{100 * s[k]:.2f} ± {100 * s[f'{k}_sd']:.2f}"

    ours = markdown_table(["input", "IoU %", "pFM %", "pFM_Δ %"],
                          [[s["row"], cell(s, "iou"), cell(s, "pfm"), cell(s, "pfm_delta")] for s in summary])
    p.ctx.write_text("paper.md", paper_md(
        p.ctx.spec, p.m, metrics, p.ctx, title="fusing-forces, patch level (Table 1)",
        keys=["iou", "pfm", "pfm_delta", "pfm_init", "iou_init", "pfm_y_only", "pfm_delta_gamma"],
        sections=[f"## This run: {len(ps)} {e.split} patches with lines, {e.repeats} stroke draws (mean ± sd)\n\n"
                  + ours, paper_table(p.ctx.spec, "table1"), paper_note(p.ctx.spec, "comparison")]))
    return metrics


def _figures(p, ps, X, G, yb, first, summary) -> None:
    delta, manual, yp, strokes = first
    for i in range(min(p.m.eval.overlays, len(ps))):
        with p.ctx.figure(f"refine_{i:02d}", ncols=5, figsize=(15, 3.4)) as (fig, ax):
            panels = [(X[i, 0].numpy(), "X (high-pass)", "gray"), (G[i], "Y* (GT)", "gray"),
                      (yb[i], "Y = f_init", "gray"), (delta[i, 0].numpy(), f"Δ ({strokes[i].op})", "bwr"),
                      ((yp[i, 0] > 0).numpy(), "Y' = f_iter", "gray")]
            for a, (img, title, cmap) in zip(ax, panels, strict=True):
                a.imshow(img, cmap=cmap, vmin=-1 if cmap == "bwr" else None, vmax=1 if cmap == "bwr" else None)
                a.set_title(title, fontsize=9)
                a.axis("off")
            fig.suptitle(ps[i].id, fontsize=9)
    rows = [s for s in summary if "manual" not in s["row"]]
    with p.ctx.figure("pfm_by_input", figsize=(8, 3.5)) as (fig, ax):
        ax.barh([s["row"] for s in rows], [s["pfm"] for s in rows], xerr=[s["pfm_sd"] for s in rows])
        ax.set_xlabel("mean pFM over test patches")
