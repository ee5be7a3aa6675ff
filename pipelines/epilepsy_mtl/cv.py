"""epilepsy-mtl ``cv`` (Table 1) and ``ablate`` (Fig. 5): one train run per fold of ``dataset.protocol``
(``dataset.fold`` = 0 … n − 1; for ``ablate`` once per ``ablate.n_stitch``, so the proposed model's folds are the
``cv`` runs), each reused when complete, so a killed sweep resumes at its first unfinished fold. The sweep run
records the folds' test splits and writes ``per_fold.csv``, ``per_case.csv`` (every fold's test images), the
confusion matrices summed over folds (cv) and ``paper.md``: mean ± sd (95 % t-interval) over folds beside the
paper's column of Table 1, or per variant with the gains of two stitch units over separate models (Fig. 5)."""

from __future__ import annotations

import numpy as np

from medrun.datasets.ncnp_ecog import TASKS

from ..report import markdown_table, paper_data, paper_md, paper_note
from ..sweep import Child, headline, mean_sd_table, summarise
from . import data
from .pipeline import COLUMNS, TASK_METRICS, confusion_figures, paper_column, table_sections

FOLD_KEYS = [f"{k}_{t}" for k in (*TASK_METRICS, "majority", "over_majority", "n", "repair_acc_mean", "repair_acc_sd")
             for t in TASKS] + ["secs_per_epoch"]
SHOWN = [f"{k}_{t}" for t in TASKS for k in ("accuracy", "f1", "auroc")]


def _setting(d, n_folds: int) -> str:
    return data.protocol(d) + ("" if d.protocol == "cv" else f", {n_folds} folds")


def _folds(pipe) -> list[dict]:
    """The protocol's folds; their test splits go into this run's data.lock.json."""
    folds = data.folds(pipe.samples, pipe.m.dataset)
    pipe.ctx.record_splits({f"fold{k + 1}_test_{t}": [pipe.samples[t][i].path for i in f["test"][t]]
                            for k, f in enumerate(folds) for t in TASKS})
    return folds


def _children(pipe, folds, n_stitch: int | None = None) -> list[Child]:
    """One train run per fold (of the variant with ``n_stitch`` stitch units)."""
    lopo, variant = pipe.m.dataset.protocol == "lopo", {} if n_stitch is None else {"n_stitch": n_stitch}
    held = [" ".join(sorted({pipe.samples["hfo"][i].patient for i in f["test"].hfo})) if lopo else "" for f in folds]
    return [Child(f"fold{k + 1}" if n_stitch is None else f"n{n_stitch}-fold{k + 1}",
                  {**({} if n_stitch is None else {"model.n_stitch": n_stitch}), "dataset.fold": k},
                  labels={**variant, "fold": k + 1, "held_out": held[k]}) for k in range(len(folds))]


def _collect(pipe, runs) -> tuple[list[dict], list[dict], dict]:
    """Per-fold rows (labels, metrics, run id), every fold's per-image rows, confusion matrices summed over folds."""
    confusion = {t: np.zeros((2, 2), dtype=np.int64) for t in TASKS}
    per_fold, per_case = [], []
    for r in runs:
        for t in TASKS:
            confusion[t] += np.asarray(r.metrics[f"confusion_{t}"], dtype=np.int64)
        per_fold.append({k: v for k, v in r.row.items() if k != "name"})
        per_case += [{**r.child.labels, **row} for row in r.read_csv()]
        pipe.ctx.log(pipe.summary_line(r.child.name, r.metrics))
    return per_fold, per_case, confusion


def cv(pipe) -> dict:
    ctx, spec, d = pipe.ctx, pipe.ctx.spec, pipe.m.dataset
    folds = _folds(pipe)
    per_fold, per_case, confusion = _collect(pipe, ctx.sweep(_children(pipe, folds), title="fold"))
    keys = [k for k in FOLD_KEYS if k in per_fold[0]]
    summary = summarise(per_fold, keys)[0]
    metrics = {"protocol": d.protocol, "folds": len(folds), **headline(summary, keys)}
    ctx.write_csv("per_fold.csv", per_fold)
    ctx.write_csv("per_case.csv", per_case)
    confusion_figures(ctx, confusion, f"{d.protocol}, all folds")
    ctx.log(pipe.summary_line(f"{d.protocol} mean over {len(folds)} folds", metrics))
    table = markdown_table(["fold", "held out", *SHOWN, "run"],
                           [[r["fold"], r["held_out"] or "—", *[r[c] for c in SHOWN], r["run_id"]] for r in per_fold])
    col = COLUMNS[d.protocol]
    sections = [*table_sections(spec, metrics, d.protocol, _setting(d, len(folds))),
                "## Folds (each a train run of its own)\n\n" + table,
                "## Mean over folds\n\n" + mean_sd_table([summary], SHOWN), paper_note(spec, "comparison")]
    ctx.write_text("paper.md", paper_md(spec, pipe.m, metrics, ctx, expect=paper_column(spec, d.protocol),
                                        table=f"Table 1 ({col})", sections=sections,
                                        setting=f"5 patients, 1,500 images per task, {col}, 200 epochs"))
    return metrics


def ablate(pipe) -> dict:
    """The paper's baseline study (Fig. 5): the folds once per number of stitch units."""
    ctx, spec, d, variants = pipe.ctx, pipe.ctx.spec, pipe.m.dataset, pipe.m.ablate.n_stitch
    folds = _folds(pipe)
    runs = ctx.sweep([c for n in variants for c in _children(pipe, folds, n)], title="variant")
    per_fold, per_case, _ = _collect(pipe, runs)
    summary = summarise(per_fold, [*SHOWN, "params_keras"], by=["n_stitch"])
    metrics: dict = {"protocol": d.protocol, "folds": len(folds), "variants": [f"n{n}" for n in variants]}
    for s in summary:
        metrics.update({f"n{s['n_stitch']}.{k}{x}": s[f"{k}{x}"] for k in SHOWN for x in ("", "_sd")})
    if 0 in variants and 2 in variants:
        metrics.update({f"gain_{k}_{t}": metrics[f"n2.{k}_{t}"] - metrics[f"n0.{k}_{t}"]
                        for t in TASKS for k in ("accuracy", "f1")})
    ctx.write_csv("per_fold.csv", per_fold)
    ctx.write_csv("per_case.csv", per_case)
    fig5 = paper_data(spec)["tables"]["fig5"]
    params = ", ".join(f"{s['n_stitch']} stitch units {int(s['params_keras']):,}" for s in summary)
    sections = [f"## Stitch units (this run: {_setting(d, len(folds))}, {pipe.m.model.stitch} stitches)\n\n"
                + mean_sd_table(summary, SHOWN, by=["n_stitch"]) + f"\n\nParameters (Keras count): {params}.",
                paper_note(spec, "comparison")]
    expect = {r[0]: r[1] for r in fig5["rows"]}
    ctx.write_text("paper.md", paper_md(spec, pipe.m, metrics, ctx, title="Cross-stitch baseline study (Fig. 5)",
                                        expect=expect, keys=list(expect), table="Fig. 5 (text)",
                                        setting=fig5["title"], sections=sections))
    return metrics
