"""epilepsy-mtl ``baselines`` (Table 2): the folds of ``dataset.protocol`` for the proposed model (the very runs of
``cv``, reused) and for the single-task CNN on each biomarker (``model.task`` hfo / ied: one stream of the same
backbone, one head, random init or ``model.weights``), each an ordinary train run reused when complete. The sweep
run writes ``per_fold.csv`` and ``paper.md``: mean ± sd over folds per model, and Table 2 with this run's rows
beside the paper's, each with a note where the two cannot be compared."""

from __future__ import annotations

from medrun.datasets.ncnp_ecog import TASKS

from ..report import markdown_table, paper_data, paper_md, paper_note
from ..sweep import Child, mean_sd_table, summarise
from .cv import _children, _folds, _setting

SHOWN = [f"{k}_{t}" for t in TASKS for k in ("accuracy", "f1", "auroc")]
NOTES = {  # the paper's Table 2 rows: why this pipeline has no run of its own for them
    "Proposed (paper)": "",
    "2D-CNN": "Zuo et al.'s CNN; its layers are not in the card (the single-task rows above are the proposed "
              "model's own stream)",
}
IMAGENET = "ImageNet model fine-tuned in MATLAB; not run here (no weights offline, 28×28 inputs)"


def baselines(pipe) -> dict:
    ctx, spec, d, mm = pipe.ctx, pipe.ctx.spec, pipe.m.dataset, pipe.m.model
    folds = _folds(pipe)
    proposed = [Child(c.name, {"model.task": "both", "model.weights": None, **c.overrides},
                      labels={"model": "proposed", **c.labels}) for c in _children(pipe, folds)]
    single = [Child(f"{t}-fold{k + 1}", {"model.task": t, "dataset.fold": k}, labels={"model": f"single-task {t}",
                                                                                       "fold": k + 1})
              for t in TASKS for k in range(len(folds))]
    runs = ctx.sweep([*proposed, *single], title="model")
    per_fold = [{k: v for k, v in r.row.items() if k not in ("name", "held_out")} for r in runs]
    ctx.write_csv("per_fold.csv", per_fold)
    summary = {s["model"]: s for s in summarise(per_fold, SHOWN, by=["model"])}
    p, st = summary["proposed"], {t: summary[f"single-task {t}"] for t in TASKS}
    metrics: dict = {"protocol": d.protocol, "folds": len(folds)}
    for t in TASKS:
        for k in ("accuracy", "f1", "auroc"):
            metrics[f"proposed.{k}_{t}"] = p[f"{k}_{t}"]
            metrics[f"single_task.{k}_{t}"] = st[t][f"{k}_{t}"]
            metrics[f"gain_{k}_{t}"] = p[f"{k}_{t}"] - st[t][f"{k}_{t}"]
    t2 = paper_data(spec)["tables"]["table2"]
    init = "from model.weights" if mm.weights else "random init"
    body = [["Proposed (this run)", 100 * metrics["proposed.accuracy_hfo"], 100 * metrics["proposed.accuracy_ied"],
             metrics["proposed.f1_hfo"], metrics["proposed.f1_ied"], "cross-stitch model, mean over folds"],
            ["Single-task CNN (this run)", 100 * metrics["single_task.accuracy_hfo"],
             100 * metrics["single_task.accuracy_ied"], metrics["single_task.f1_hfo"], metrics["single_task.f1_ied"],
             f"one stream + one head per task, {init}; the paper has no such row"]]
    body += [[*r, NOTES.get(r[0], IMAGENET) or "the paper's proposed model"] for r in t2["rows"]]
    setting = _setting(d, len(folds))
    sections = [f"## Table 2 beside this run ({setting}, {pipe.m.train.epochs} epochs)\n\n"
                + markdown_table([*t2["header"], "note"], body),
                "## Mean ± sd over folds per model\n\n" + mean_sd_table(list(summary.values()), SHOWN, by=["model"])
                + "\n\nA single-task model is scored on its own task only (the other task's cells are empty).",
                paper_note(spec, "baselines"), paper_note(spec, "comparison")]
    proposed_row = next(r for r in t2["rows"] if r[0] == "Proposed (paper)")
    expect = {"proposed.accuracy_hfo": proposed_row[1] / 100, "proposed.accuracy_ied": proposed_row[2] / 100,
              "proposed.f1_hfo": proposed_row[3], "proposed.f1_ied": proposed_row[4]}
    ctx.write_text("paper.md", paper_md(spec, pipe.m, metrics, ctx, title="Single-task baselines (Table 2)",
                                        table="Table 2", expect=expect, keys=list(expect),
                                        setting="5 patients, 1,500 images per task, 5-fold CV", sections=sections))
    return metrics
