"""mrd-flow ``benchmark``: the model zoo of Tables 2–5 as one sweep, summarised in one table.

Every row of ``benchmark.models`` (names of the paper's rows: MLP, ST, GIN-ST-FPS, …; ``config.ZOO`` maps each to
its overrides) × every seed of ``benchmark.seeds`` is a train run of its own (best validation epoch, scored on the
test split), reused when complete, so an interrupted benchmark resumes at its first unfinished model. The summary
is the kit's: mean, sample sd (ddof 1) and 95 % t-interval over seeds, beside the paper's mean ± sd.
"""

from __future__ import annotations

import numpy as np

from ..report import markdown_table, paper_data, paper_md
from ..sweep import Child, mean_sd_table, summarise
from .config import ZOO

KEYS = ("f1", "f1_median", "precision", "recall")


def slug(name: str) -> str:
    return name.lower().replace("-", "_")


def benchmark(p) -> dict:
    b, ctx = p.m.benchmark, p.ctx
    children = [Child(f"{name}-seed{s}", {**ZOO[name], "seed": s}, labels={"model": name, "seed": s})
                for name in b.models for s in b.seeds]
    ctx.log(f"benchmark: {len(b.models)} models × {len(b.seeds)} seeds")
    runs = ctx.sweep(children, title="model")
    per_run = [{**r.child.labels, **{k: r.metrics.get(k) for k in KEYS},
                "f1_all_positive": r.metrics.get("f1_all_positive"), "params": r.metrics.get("params_total"),
                "best_epoch": r.metrics.get("best_epoch"), "secs_per_epoch": r.metrics.get("secs_per_epoch"),
                "run_id": r.run_id[:12]} for r in runs]
    ctx.write_csv("per_run.csv", per_run)
    summary = summarise(per_run, KEYS, by=["model"])
    paper = {r[0]: r for r in paper_data(ctx.spec)["tables"]["zoo"]["rows"]}
    table = []
    for s in summary:
        ref = paper.get(s["model"], [None] * 8)
        params = next(r["params"] for r in per_run if r["model"] == s["model"])
        table.append({"model": s["model"], "params": params, "precision": s["precision"], "recall": s["recall"],
                      "f1": s["f1"], "f1_sd": s["f1_sd"], "f1_median": s["f1_median"],
                      "f1_median_sd": s["f1_median_sd"],
                      "runs": s["f1_n"], "paper_precision": ref[1], "paper_recall": ref[2], "paper_f1": ref[3],
                      "paper_f1_sd": ref[4], "paper_f1_median": ref[5], "paper_table": ref[7]})
    ctx.write_csv("benchmark.csv", table)
    with ctx.figure("benchmark", figsize=(max(5.0, 0.55 * len(table) + 2), 4)) as (_, ax):
        x = np.arange(len(table))
        ax.bar(x - 0.2, [r["f1"] for r in table], 0.4, yerr=[r["f1_sd"] if np.isfinite(r["f1_sd"]) else 0
                                                                for r in table], label="this benchmark")
        ax.bar(x + 0.2, [r["paper_f1"] or 0 for r in table], 0.4, label="paper (Vie)")
        ax.set_xticks(x, [r["model"] for r in table], rotation=40, ha="right")
        ax.set(ylabel="avg F1 (per sample)", ylim=(0, 1))
        ax.legend(fontsize=8)
    head = b.models[0]
    top = next(s for s in summary if s["model"] == head)
    baseline = float(np.mean([r["f1_all_positive"] for r in per_run if r["f1_all_positive"] is not None]))
    metrics = {"f1": top["f1"], "f1_median": top["f1_median"], "headline_model": head, "f1_all_positive": baseline,
               "models": len(b.models), "seeds": len(b.seeds),
               **{f"f1_{slug(s['model'])}": s["f1"] for s in summary}}
    ref = paper.get(head)
    md = markdown_table(["model", "params", "p", "r", "avg F1", "sd", "med F1", "med sd", "runs", "paper p",
                         "paper r", "paper avg F1", "paper sd", "paper med F1", "table"],
                        [[v if not (k in ("f1_sd", "f1_median_sd") and r["runs"] < 2) else None for k, v in r.items()]
                         for r in table])  # no sd from one run
    ctx.write_text("paper.md", paper_md(
        ctx.spec, p.m, metrics, ctx, title="MRD detection model zoo (Tables 2–5)", keys=["f1", "f1_median"],
        expect={"f1": ref[3], "f1_median": ref[5]} if ref else {}, table="Tables 2–5",
        setting=f"Vie test split, {head}, mean of at least 5 runs",
        sections=[f"## {len(b.models)} models × {len(b.seeds)} seeds (each a train run of its own)\n\n"
                  f"Calling every event a blast scores avg F1 {baseline:.4f}.\n\n" + md,
                  "## Mean over seeds\n\n" + mean_sd_table(summary, list(KEYS), by=["model"]),
                  paper_data(ctx.spec)["notes"]["comparison"].rstrip()]))
    return metrics
