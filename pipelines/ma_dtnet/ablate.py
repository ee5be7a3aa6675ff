"""ma-dtnet ``ablate`` (Tables 3–4): every variant × fold is a train run of its own, then one table.

``ablate.variants`` maps a name to dotted ``model.*`` / ``train.*`` overrides; ``ablate.run`` picks some of them
(default all, in order) and ``ablate.folds`` the held-out folds (default every fold of ``dataset.folds``). Each
child is ``train`` with ``model.variant`` (the manifest applies that variant's overrides, so its train run is
found again by eval / predict with the same ``-o model.variant=…``) and ``dataset.fold``; children are reused
when complete. The summary per variant is the kit's (mean, sample sd with ddof 1, 95 % t-interval) beside the
paper's Table 3 / 4 row; ``ablate.compare`` runs the Wilcoxon signed-rank test on the per-image Dice of two
variants, paired by fold and case.
"""

from __future__ import annotations

import json
import math

import numpy as np

from medrun.errors import UsageError

from ..report import fmt, markdown_table, paper_data, paper_md, paper_note
from ..sweep import Child, summarise
from .pipeline import KEYS

PERCENT = {"dice", "iou", "precision", "recall", "accuracy", "f1"}
COLUMNS = ("dice", "iou", "precision", "recall", "hd95", "accuracy", "f1", "auroc")


def ablate(p) -> dict:
    a, d, ctx = p.m.ablate, p.m.dataset, p.ctx
    names = a.run or list(a.variants)
    if not names:
        raise UsageError("ablate.variants is empty", fix="list the variants in the manifest's ablate section")
    folds = [1] if d.name == "glas" else a.folds or list(range(1, d.folds + 1))  # GlaS: its one official split
    runs = ctx.sweep([Child(f"{name}-fold{f}", {"model.variant": name, "dataset.fold": f},
                            labels={"variant": name, "fold": f}) for name in names for f in folds], title="ablation")
    per_fold = [{**r.child.labels, **{k: r.metrics[k] for k in KEYS if k in r.metrics},
                 "params": r.metrics.get("params_total"), "run_id": r.run_id[:12]} for r in runs]
    ctx.write_csv("per_fold.csv", per_fold)
    cases = [{**r.child.labels, **row} for r in runs for row in r.read_csv()]
    ctx.write_csv("per_case.csv", cases)  # seg-only and multi-task rows in one CSV (empty cells where absent)
    summary = []
    for s in summarise(per_fold, KEYS, by=["variant"]):
        row = {"variant": s["variant"], "params": next(r["params"] for r in per_fold if r["variant"] == s["variant"])}
        for k in (k for k in KEYS if s[f"{k}_n"]):  # metrics the variant has (no AUROC without a classifier)
            row[k], row[f"{k}_sd"] = s[k], s[f"{k}_sd"]
        summary.append({**row, "overrides": json.dumps(a.variants[s["variant"]], sort_keys=True)})
        ctx.log(f"{s['variant']}: " + "  ".join(f"{k} {s[k]:.4f}" for k in KEYS if k in row))
    ctx.write_csv("ablation.csv", summary)
    metrics: dict = {"variants": len(names), "folds": len(folds)}
    for s in summary:
        metrics[f"{s['variant']}/params"] = s["params"]
        metrics.update({f"{s['variant']}/{k}": s[k] for k in KEYS if k in s and math.isfinite(s[k])})
    ref = _reference(paper_data(ctx.spec)["tables"].get(f"ablation_{d.name}"))
    sections = ["## Ablation table (each variant-fold a train run of its own)\n\n" + _table(summary, ref, len(folds))]
    if a.compare:
        x, y = a.compare
        dice = {v: {(c["fold"], c["case"]): float(c["dice"]) for c in cases if c["variant"] == v and c.get("dice")}
                for v in (x, y)}
        pairs = sorted(set(dice[x]) & set(dice[y]))
        pv = _wilcoxon([dice[x][k] for k in pairs], [dice[y][k] for k in pairs])
        metrics[f"wilcoxon_dice_{x}_vs_{y}_p"] = pv
        sections.append(f"Wilcoxon signed-rank test on per-image Dice, {x} vs {y} ({len(pairs)} paired images): "
                        f"p = {fmt(pv)} (the paper marks UNet-C-SMA vs UNet-CBAM significant).")
    sections.append(paper_note(ctx.spec, "ablation"))
    last, theirs = summary[-1], ref.get(summary[-1]["variant"], {})  # the headline: the last variant listed
    head = {k: last[k] for k in COLUMNS if k in last}
    expect = {k: theirs[k] / (100 if k in PERCENT else 1) for k in head if theirs.get(k) is not None}
    ctx.write_text("paper.md", paper_md(ctx.spec, p.m, head, ctx, title=f"MA-DTNet ablations ({a.table})",
                                        expect=expect, table=a.table, keys=list(head), sections=sections,
                                        setting=f"{d.name}, the small U-Net; headline: variant '{last['variant']}'"))
    return metrics


def _reference(paper: dict | None) -> dict[str, dict]:
    """The paper's table from paper.yaml as {variant: {column: value}}."""
    return {row[0]: dict(zip(paper["header"][1:], row[1:], strict=True)) for row in paper["rows"]} if paper else {}


def _table(summary: list[dict], ref: dict[str, dict], n_folds: int) -> str:
    header = ["variant", "params", "paper params"] + [f"{k} (run / paper)" for k in COLUMNS]
    rows = []
    for s in summary:
        theirs = ref.get(s["variant"], {})
        cells = [s["variant"], f"{s['params'] / 1e6:.3f} M",
                 f"{theirs['params_m']:.2f} M" if theirs.get("params_m") is not None else "—"]
        for k in COLUMNS:
            scale = 100 if k in PERCENT else 1
            ours = "—" if k not in s or not math.isfinite(s[k]) else (
                f"{scale * s[k]:.2f}" + (f" ± {scale * s[k + '_sd']:.2f}" if n_folds > 1 else ""))
            cells.append(f"{ours} / {theirs[k] if theirs.get(k) is not None else '—'}")
        rows.append(cells)
    return ("Dice, IoU, precision, recall, accuracy and F1 in %, HD95 in pixels, AUROC in 0–1; "
            + ("mean ± sd (ddof 1) over folds. " if n_folds > 1 else "one held-out fold. ")
            + "Paper: Table 3 (attention variants, segmentation only) and Table 4 (multi-task).\n\n"
            + markdown_table(header, rows))


def _wilcoxon(a: list[float], b: list[float]) -> float:
    from scipy.stats import wilcoxon

    x, y = np.asarray(a, float), np.asarray(b, float)
    if x.size != y.size or x.size == 0:
        return math.nan
    ok = np.isfinite(x) & np.isfinite(y)
    if not ok.any() or np.allclose(x[ok], y[ok]):
        return math.nan if not ok.any() else 1.0
    return float(wilcoxon(x[ok], y[ok]).pvalue)
