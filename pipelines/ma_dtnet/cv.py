"""ma-dtnet ``cv`` (Tables 1–2): one train run per fold (``dataset.fold`` = 1 … ``dataset.folds``), each reused
when complete, so an interrupted cross-validation resumes at its first unfinished fold. Writes ``per_fold.csv``,
``per_case.csv`` (every image once, from the folds' own rows) and paper.md: mean, sample sd (ddof 1) and 95 %
t-interval over folds beside the paper's means."""

from __future__ import annotations

from ..report import markdown_table, paper_md, paper_note
from ..sweep import Child, headline, mean_sd_table, summarise
from .pipeline import KEYS


def cv(p) -> dict:
    ctx, k = p.ctx, p.m.dataset.folds
    runs = ctx.sweep([Child(f"fold{f}", {"dataset.fold": f}, labels={"fold": f}) for f in range(1, k + 1)],
                     title="fold")
    ctx.write_csv("per_case.csv", [{"fold": r.child.labels["fold"], **row} for r in runs for row in r.read_csv()])
    per_fold = [r.row for r in runs]
    ctx.write_csv("per_fold.csv", per_fold)
    keys = [key for key in (*KEYS, "secs_per_epoch") if any(key in r for r in per_fold)]
    summary = summarise(per_fold, keys)[0]
    metrics: dict = {"folds": k, **headline(summary, keys), "params_total": per_fold[0].get("params_total")}
    shown = [key for key in KEYS if key in keys]
    table = markdown_table(["fold", *shown, "run"], [[r["fold"], *[r.get(c) for c in shown], r["run_id"]]
                                                     for r in per_fold])
    expect = p.m.paper.expect if p.m.paper else {}
    ctx.write_text("paper.md", paper_md(ctx.spec, p.m, metrics, ctx, title=f"MA-DTNet, {k}-fold CV", sections=[
        "## Mean ± sd over folds\n\n" + mean_sd_table([summary], shown, paper={(): expect}),
        "## Folds (each a train run of its own)\n\n" + table, paper_note(ctx.spec, "comparison")]))
    return metrics
