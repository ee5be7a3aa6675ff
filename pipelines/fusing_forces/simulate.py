"""``simulate``: the whole-mirror protocol (card, l. 3123) on each side of ``simulate.mirrors`` (default: the test
sides), at network resolution over the side's non-overlapping patches with ≥ ``min_mirror`` mirror.

Interactive loop, per mode (both / only adding / only erasing) and run (``simulate.runs`` seeds), at most
``max_interactions``: take the patch with the lowest current pFM among those not exhausted; simulate each allowed
operation on its current mask Y' (width ``simulate.width``, μ − 2σ by default) and refine with f_iter; keep the
operation with the larger gain in whole-mirror pFM (counts pooled over patches). When neither improves, the patch
is marked exhausted and gets no stroke (our reading of "stop when neither operation improves": the loop ends when
every patch is exhausted). Each step logs pFM(Y'), IoU, pFM of the same strokes pasted onto f_init's mask (Y^Δ),
pFM_Δ and the human pixels (Δ ≠ 0).

Manual run (workload, Fig. 6; ``simulate.manual_hints``): ``own`` (default) is a separate loop on Y^Δ alone — hints
from Y^Δ's own errors, pasted, same selection rule; ``interactive`` reads the pasted curve of the interactive run.
P* = the best manual pFM, H_man = its human pixels, H_ours = the human pixels at which the interactive pFM first
reaches P*; reduction = 1 − H_ours / H_man (NaN when the interactive run never reaches P*).
"""

from __future__ import annotations

import json
import math
import time

import numpy as np
import torch

from medrun.errors import UsageError
from medrun.metrics.segmentation import pfm_from_counts

from ..report import markdown_table, paper_md, paper_note, paper_table
from ..sweep import summarise
from . import data as D
from . import interaction as I

KEYS = ("n_pred", "n_tp", "n_skel", "n_skel_hit", "n_gt")


def counts(y: np.ndarray, g: np.ndarray, gs: np.ndarray) -> np.ndarray:
    return np.array([y.sum(), (y & g).sum(), gs.sum(), (y & gs).sum(), g.sum()], np.int64)


def scores(c: np.ndarray) -> dict:
    out = pfm_from_counts(*(int(v) for v in c[:4]))
    union = c[0] + c[4] - c[1]
    out["iou"] = float(c[1] / union) if union else 1.0
    return out


class Side:
    """One side's patches at network size: X, GT, skeletons and f_init's logits."""

    def __init__(self, p, key: str, f_init):
        d = p.m.dataset
        m = p.mirrors[key]
        self.key, self.corners = key, D.grid_patches(m, d.patch, d.min_mirror)
        crops = [D.crop(m, y, x, d.patch, d.net_size) for y, x in self.corners]
        self.X = torch.stack([c[0] for c in crops])
        self.G = torch.stack([c[1] for c in crops])[:, 0].numpy() > 0.5
        self.S = np.stack([I.skel(g) for g in self.G])
        self.y0 = p.forward(f_init, self.X)
        self.shape = (m.x.shape[0] // d.patch, m.x.shape[1] // d.patch)


def interactive(p, f_iter, s: Side, mode: str, rng, log_manual: bool = True) -> list[dict]:
    sm, n = p.m.simulate, len(s.corners)
    ylog = s.y0.clone()
    yb0 = (s.y0[:, 0] > 0).numpy()
    delta = np.zeros(s.G.shape, np.int8)
    c_ref = np.stack([counts(yb0[i], s.G[i], s.S[i]) for i in range(n)])
    c_man = c_ref.copy()
    done = np.zeros(n, bool)
    ops = ["add", "erase"] if mode == "both" else [mode]

    def step_row(k, i=-1, op=""):
        a, b = scores(c_ref.sum(0)), scores(c_man.sum(0))
        return {"side": s.key, "mode": mode, "step": k, "pfm": a["pfm"], "iou": a["iou"], "precision": a["precision"],
                "p_recall": a["p_recall"], "pfm_pasted": b["pfm"],
                "pfm_delta": (a["pfm"] - b["pfm"]) / b["pfm"] if b["pfm"] > 0 else math.nan,
                "human_pixels": int(np.count_nonzero(delta)), "patch": i, "op": op}

    curve = [step_row(0)]
    k = 0
    while k < sm.max_interactions and not done.all():
        per_patch = np.array([pfm_from_counts(*(int(v) for v in c[:4]))["pfm"] for c in c_ref])
        i = int(np.argmin(np.where(done, np.inf, per_patch)))
        yb = (ylog[i, 0] > 0).numpy()
        segs = I.candidates(yb, s.S[i], p.hints.tolerance)
        tries = [t for t in (p.hints.stroke(yb, s.S[i], delta[i], rng, op, sm.width, segs) for op in ops)
                 if t.op != "none"]
        if not tries:
            done[i] = True
            continue
        dl = torch.from_numpy(np.stack([t.delta for t in tries])[:, None])
        out = p.forward(f_iter, p.hints.inputs(s.X[i:i + 1].expand(len(tries), -1, -1, -1),
                                               ylog[i:i + 1].expand(len(tries), -1, -1, -1), dl))
        base = pfm_from_counts(*(int(v) for v in c_ref.sum(0)[:4]))["pfm"]
        best, gain = None, 0.0
        for j, t in enumerate(tries):
            c_new = counts((out[j, 0] > 0).numpy(), s.G[i], s.S[i])
            g = pfm_from_counts(*(int(v) for v in (c_ref.sum(0) - c_ref[i] + c_new)[:4]))["pfm"] - base
            if g > gain:
                best, gain = (j, t, c_new), g
        if best is None:
            done[i] = True
            continue
        j, t, c_new = best
        ylog[i], delta[i], c_ref[i] = out[j], t.delta, c_new
        c_man[i] = counts(I.paste(yb0[i], delta[i]), s.G[i], s.S[i])
        k += 1
        curve.append(step_row(k, i, t.op))
    s.final = (ylog[:, 0] > 0).numpy()
    return curve


def manual(p, s: Side, rng) -> list[dict]:
    """Pure manual refinement: hints from Y^Δ's own errors, pasted; same selection and stopping rule."""
    sm, n = p.m.simulate, len(s.corners)
    y = (s.y0[:, 0] > 0).numpy().copy()
    delta = np.zeros(s.G.shape, np.int8)
    c = np.stack([counts(y[i], s.G[i], s.S[i]) for i in range(n)])
    done = np.zeros(n, bool)
    curve = [{"side": s.key, "step": 0, "pfm": scores(c.sum(0))["pfm"], "human_pixels": 0}]
    k = 0
    while k < sm.max_interactions and not done.all():
        per_patch = np.array([pfm_from_counts(*(int(v) for v in q[:4]))["pfm"] for q in c])
        i = int(np.argmin(np.where(done, np.inf, per_patch)))
        segs = I.candidates(y[i], s.S[i], p.hints.tolerance)
        base, best, gain = pfm_from_counts(*(int(v) for v in c.sum(0)[:4]))["pfm"], None, 0.0
        for op in ("add", "erase"):
            t = p.hints.stroke(y[i], s.S[i], delta[i], rng, op, sm.width, segs)
            if t.op == "none":
                continue
            yn = I.paste(y[i], t.delta)
            cn = counts(yn, s.G[i], s.S[i])
            g = pfm_from_counts(*(int(v) for v in (c.sum(0) - c[i] + cn)[:4]))["pfm"] - base
            if g > gain:
                best, gain = (t, yn, cn), g
        if best is None:
            done[i] = True
            continue
        t, y[i], c[i] = best
        delta[i] = t.delta
        k += 1
        curve.append({"side": s.key, "step": k, "pfm": scores(c.sum(0))["pfm"],
                      "human_pixels": int(np.count_nonzero(delta))})
    return curve


def workload(ours: list[dict], man: list[dict], man_key: str = "pfm") -> dict:
    best = max(man, key=lambda r: (r[man_key], -r["human_pixels"]))
    p_star, h_man = best[man_key], best["human_pixels"]
    hit = next((r for r in ours if r["pfm"] >= p_star), None)
    red = 1 - hit["human_pixels"] / h_man if hit is not None and h_man > 0 else math.nan
    return {"p_star": p_star, "h_man": h_man, "h_ours": hit["human_pixels"] if hit else math.nan, "reduction": red}


def simulate(p) -> dict:
    sm = p.m.simulate
    sides = sm.mirrors or p.m.dataset.test_mirrors
    unknown = [k for k in sides if k not in p.mirrors]
    if unknown:
        raise UsageError(f"simulate.mirrors: no annotated side {', '.join(unknown)}",
                         fix=f"use sides of the dataset ({', '.join(sorted(p.mirrors))})")
    f_init, f_iter = p.trained_pair()
    p.ctx.record_splits({"simulate": [f for k in sides for f in p.mirrors[k].files]})
    curves, manuals, peaks, loads, n_steps, secs = [], [], [], [], 0, 0.0
    for key in sides:
        s = Side(p, key, f_init)
        for mode in sm.modes:
            for r in range(sm.runs):
                t0 = time.perf_counter()
                c = interactive(p, f_iter, s, mode, np.random.default_rng([p.m.seed, r]))
                secs += time.perf_counter() - t0
                n_steps += len(c) - 1
                curves += [{**row, "run": r} for row in c]
                top = max(c[1:] or c, key=lambda row: row["pfm_delta"] if not math.isnan(row["pfm_delta"]) else -1)
                peaks.append({"side": key, "mode": mode, "run": r, "interactions": len(c) - 1, "pfm_start": c[0]["pfm"],
                              "pfm_end": c[-1]["pfm"], "iou": top["iou"], "pfm": top["pfm"],
                              "pfm_delta": top["pfm_delta"], "step_at_max": top["step"]})
                if mode == sm.modes[0]:
                    if sm.manual_hints == "own":
                        mc = manual(p, s, np.random.default_rng([p.m.seed, r, 1]))
                        manuals += [{**row, "run": r} for row in mc]
                        loads.append({"side": key, "run": r, **workload(c, mc)})
                    else:
                        loads.append({"side": key, "run": r, **workload(c, c, "pfm_pasted")})
                if r == 0 and mode == sm.modes[0]:
                    _mosaic(p, s)
    p.ctx.write_csv("curves.csv", curves)
    p.ctx.write_csv("manual.csv", manuals)
    p.ctx.write_csv("per_case.csv", peaks)
    p.ctx.write_csv("workload.csv", loads)
    table = summarise(peaks, ["iou", "pfm", "pfm_delta", "interactions", "pfm_end"], by=["side", "mode"])
    p.ctx.write_csv("table2.csv", table)
    _curves(p, curves, manuals, sides[0])
    first = [r for r in peaks if r["mode"] == sm.modes[0]]
    c0 = [r for r in curves if r["mode"] == sm.modes[0] and r["run"] == 0 and r["side"] == sides[0]]
    metrics = {"sides": len(sides), "runs": sm.runs, "interactions": first[0]["interactions"],
               "pfm_start": float(np.mean([r["pfm_start"] for r in first])),
               "pfm_end": float(np.mean([r["pfm_end"] for r in first])),
               "pfm_delta_max": float(np.nanmean([r["pfm_delta"] for r in first])),
               "iou_at_max": float(np.mean([r["iou"] for r in first])),
               "pfm_at_max": float(np.mean([r["pfm"] for r in first])),
               "workload_reduction": float(np.nanmean([r["reduction"] for r in loads])) if any(
                   not math.isnan(r["reduction"]) for r in loads) else math.nan,
               "monotone_fraction": float(np.mean([b["pfm"] >= a["pfm"] - 1e-12
                                                   for a, b in zip(c0[:-1], c0[1:], strict=True)]))
               if len(c0) > 1 else 1.0,
               "interactions_per_sec": n_steps / secs if secs else math.nan}
    metrics.update(_parent_checks(p))
    ours = markdown_table(["side", "interaction", "IoU %", "pFM %", "pFM_Δ %", "interactions"],
                          [[t["side"], t["mode"], f"{100 * t['iou']:.2f} ± {100 * t['iou_sd']:.2f}",
                            f"{100 * t['pfm']:.2f} ± {100 * t['pfm_sd']:.2f}",
                            f"{100 * t['pfm_delta']:+.2f} ± {100 * t['pfm_delta_sd']:.2f}", f"{t['interactions']:.0f}"]
                           for t in table])
    p.ctx.log(f"simulate: {metrics['interactions']} interactions, pFM {metrics['pfm_start']:.4f} → "
              f"{metrics['pfm_end']:.4f}, max pFM_Δ {metrics['pfm_delta_max']:+.4f}, workload reduction "
              f"{metrics['workload_reduction']:.3f}")
    p.ctx.write_text("paper.md", paper_md(
        p.ctx.spec, p.m, metrics, p.ctx, title="fusing-forces whole mirror (Table 2, Fig. 5–6)",
        table="Table 2 (ANSA-1700, both)", expect={"iou_at_max": 0.5841, "pfm_at_max": 0.7656,
                                                   "pfm_delta_max": 0.123, "workload_reduction": 0.56},
        keys=["iou_at_max", "pfm_at_max", "pfm_delta_max", "workload_reduction", "interactions", "pfm_start",
              "pfm_end"],
        sections=["## This run (mean ± sd over runs, at each run's max pFM_Δ)\n\n" + ours,
                  paper_table(p.ctx.spec, "table2"), paper_note(p.ctx.spec, "simulate")]))
    return metrics


def _parent_checks(p) -> dict:
    """The train run's smoke numbers (f_init vs the high-pass baseline; f_iter vs Y), carried for `medrun smoke`."""
    if p.ctx.parent is None:
        return {}
    m = json.loads(p.ctx.parent_file("metrics.json").read_text())
    return {k: m[k] for k in ("init_minus_highpass", "pfm_gain_over_y", "f_init_pfm", "pfm_highpass")
            if isinstance(m.get(k), (int, float))}


def _curves(p, curves, manuals, side) -> None:
    with p.ctx.figure("curves", ncols=2, figsize=(11, 4)) as (fig, ax):
        for mode in dict.fromkeys(r["mode"] for r in curves):
            c = [r for r in curves if r["mode"] == mode and r["run"] == 0 and r["side"] == side]
            ax[0].plot([r["step"] for r in c], [r["pfm"] for r in c], label=f"f_iter, {mode}")
            if mode == curves[0]["mode"]:
                ax[0].plot([r["step"] for r in c], [r["pfm_pasted"] for r in c], "--", label="same strokes pasted")
                ax[1].plot([r["human_pixels"] for r in c], [r["pfm"] for r in c], label="interactive (f_iter)")
        m = [r for r in manuals if r["run"] == 0 and r["side"] == side]
        if m:
            ax[1].plot([r["human_pixels"] for r in m], [r["pfm"] for r in m], label="manual Y^Δ")
        ax[0].set_xlabel("interactions")
        ax[1].set_xlabel("human pixels (Δ ≠ 0)")
        for a in ax:
            a.set_ylabel(f"whole-mirror pFM ({side})")
            a.legend(fontsize=8)


def _mosaic(p, s: Side) -> None:
    """The side's patches stitched at network size: f_init's mask and the final refined mask, on the GT."""
    S = s.G.shape[1]
    rows, cols = s.shape
    canvases = [np.zeros((rows * S, cols * S), np.float32) for _ in range(3)]
    d = p.m.dataset
    for i, (y, x) in enumerate(s.corners):
        r, c = y // d.patch, x // d.patch
        for cv, img in zip(canvases, (s.G[i], (s.y0[i, 0] > 0).numpy(), s.final[i]), strict=True):
            cv[r * S:(r + 1) * S, c * S:(c + 1) * S] = img
    with p.ctx.figure(f"mirror_{s.key}", ncols=2, figsize=(12, 5)) as (fig, ax):
        for a, pred, title in zip(ax, canvases[1:], ("before: f_init", "after: interactive f_iter"), strict=True):
            rgb = np.stack([pred, canvases[0], np.zeros_like(pred)], -1)  # red = prediction, green = GT, yellow = both
            a.imshow(rgb)
            a.set_title(f"{s.key} {title}", fontsize=9)
            a.axis("off")
