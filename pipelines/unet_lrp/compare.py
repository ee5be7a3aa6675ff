"""unet-lrp ``compare``: the paper's headline comparison, its three U-Nets each trained with batch and with instance
norm (``compare.archs`` × ``compare.norms``), as one table.

Each variant is an ordinary train run of the manifest (``model.arch`` / ``model.norm`` overridden, ``compare.*``
back at its defaults so the child is the very run ``medrun train -o model.arch=… -o model.norm=…`` makes, reused
either way), and its train run already ends with the LRP check on its first ``train.lrp_images`` validation images.
The sweep run gathers those numbers: validation Dice, focus (positive relevance inside the object dilated by
``explain.dilate_px``) against the region's area share, max |R| and conservation with and without the residual fix.
The paper reports no numbers, only what its figures show, so ``paper.md`` sets each row beside the paper's
qualitative finding for that net and checks the two claims a number can test: batch-norm nets concentrate relevance
on the object more than instance-norm nets (focus / area, per architecture), and the residual fix lowers max |R| by
orders of magnitude (Fig. 3: about 2e15 → 4000 on the residual U-Net).

Choices: the rows share the manifest's recipe (Table 1's epochs and lr for the data set; the paper gives one recipe
per use case, not per net), seed and data; an architecture without residual units has no "without the fix" value
(its relevance does not depend on it) and shows a dash.
"""

from __future__ import annotations

import math

from medrun.errors import UsageError

from ..report import markdown_table, paper_data, paper_md, paper_note
from ..sweep import Child

KEYS = ("dice", "lrp_focus", "lrp_area_share", "lrp_focus_over_area", "lrp_max_abs_r", "lrp_max_abs_r_nofix",
        "lrp_fix_ratio", "lrp_conservation", "lrp_conservation_nofix", "params_total")
HEAD = ["arch", "norm", "Dice", "focus", "area share", "focus / area", "max abs R", "max abs R without fix",
        "fix ratio", "conservation", "params", "paper (qualitative)", "run"]


def compare(pipe) -> dict:
    """Run (or reuse) one train run per architecture × norm and write the comparison table."""
    ctx, c = pipe.ctx, pipe.m.compare
    if not pipe.m.train.lrp_images:
        raise UsageError("medrun compare reads each train run's LRP check, and train.lrp_images is 0",
                         fix="-o train.lrp_images=4 (validation images each train run explains)")
    archs, norms = list(dict.fromkeys(c.archs)), list(dict.fromkeys(c.norms))
    default = type(c)()
    children = [Child(f"{a}-{n}", {"model.arch": a, "model.norm": n, "compare.archs": default.archs,
                                   "compare.norms": default.norms}, labels={"arch": a, "norm": n})
                for a in archs for n in norms]
    runs = ctx.sweep(children, title="variant")
    ctx.write_csv("per_variant.csv", [r.row for r in runs])
    metrics: dict = {"variants": [ch.name for ch in children]}
    for r in runs:
        metrics.update({f"{r.child.name}.{k}": r.metrics[k] for k in KEYS if k in r.metrics})
    metrics.update(claims(runs, archs, norms))
    ctx.write_text("paper.md", page(pipe, runs, metrics))
    return metrics


def claims(runs, archs, norms) -> dict:
    """The paper's two testable claims on this run: per architecture, focus / area of batch minus instance norm
    (positive = batch concentrates more, as the paper reports) and how many architectures agree; the residual
    U-Net's fix ratio (median max |R| without / with the fix)."""
    by = {(r.child.labels["arch"], r.child.labels["norm"]): r.metrics for r in runs}
    out: dict = {}
    if {"batch", "instance"} <= set(norms):
        gains = {a: by[a, "batch"].get("lrp_focus_over_area", math.nan)
                 - by[a, "instance"].get("lrp_focus_over_area", math.nan) for a in archs}
        out.update({f"{a}.focus_gain_batch_over_instance": g for a, g in gains.items()})
        out["batch_concentrates_more"] = sum(g > 0 for g in gains.values())
        out["n_archs"] = len(archs)
    for n in norms:
        if ("resunet", n) in by and "lrp_fix_ratio" in by["resunet", n]:
            out[f"resunet-{n}.fix_ratio"] = by["resunet", n]["lrp_fix_ratio"]
    return out


def page(pipe, runs, metrics: dict) -> str:
    spec, m = pipe.ctx.spec, pipe.m
    said = {(a, n): text for a, n, text in paper_data(spec)["tables"]["compare"]["rows"]}
    body = [[r.child.labels["arch"], r.child.labels["norm"], *[_cell(r.metrics.get(k)) for k in KEYS],
             said.get((r.child.labels["arch"], r.child.labels["norm"]), "—"), r.run_id[:12]] for r in runs]
    t = paper_data(spec)["tables"]["compare"]
    # the paper's one countable claim: batch norm concentrates relevance more, for every net it shows
    expect = {"batch_concentrates_more": metrics["n_archs"]} if "n_archs" in metrics else {}
    lines = []
    if "batch_concentrates_more" in metrics:
        per = ", ".join(f"{a} {_cell(metrics[f'{a}.focus_gain_batch_over_instance'])}"
                        for a in dict.fromkeys(r.child.labels["arch"] for r in runs))
        lines.append(f"- Batch norm concentrates relevance on the object more than instance norm (paper: yes, from "
                     f"its figures): focus / area of batch minus instance per net: {per}; "
                     f"{metrics['batch_concentrates_more']} of {metrics['n_archs']} nets agree.")
    for key in (k for k in metrics if k.startswith("resunet-") and k.endswith(".fix_ratio")):
        lines.append(f"- The residual fix lowers max abs R on the residual U-Net ({key.split('.')[0]}): "
                     f"{_cell(metrics[key])}× here; Fig. 3 shows about 2e15 / 4000 ≈ 5e11 on one image.")
    setting = (f"{m.dataset.name}, {len(runs)} train runs of {m.train.epochs} epochs, LRP on the first "
               f"{m.train.lrp_images} validation images, object dilated by {m.explain.dilate_px} px")
    return paper_md(spec, m, metrics, pipe.ctx, title="LRP on U-Nets: 3 architectures × batch vs instance norm",
                    table=t["title"], setting="qualitative (the paper's figures)", expect=expect, keys=list(expect),
                    sections=[f"## {t['title']} beside this run ({setting})\n\n" + markdown_table(HEAD, body),
                              "## The paper's claims on this run\n\n" + "\n".join(lines),
                              paper_note(spec, "compare"), paper_note(spec, "comparison")])


def _cell(v):
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "—"
    if isinstance(v, bool) or isinstance(v, int):
        return v
    return f"{v:.3g}" if abs(v) >= 1e4 or (v and abs(v) < 1e-3) else float(v)
