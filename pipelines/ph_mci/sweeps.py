"""ph-mci's multi-run stages as sweeps: every fold (``cv``), seed (``repeat``), Table 1 cell (``grid``) and baseline
network (``baseline``) is a train run of its own (``ctx.sweep``: reused when complete, a killed sweep resumes at its
first unfinished child); the stage here writes the table beside the paper's."""

from __future__ import annotations

import numpy as np

from ..report import markdown_table, paper_md, paper_note
from ..sweep import Child, headline, mean_sd_table, summarise
from .pipeline import scores, table1, table2, table_md

KEYS = ("accuracy", "accuracy_peak", "auroc")  # mean over children: the paper's peak accuracy, the honest last epoch


def _paper(p, metrics: dict, title: str, extra: list[str]) -> None:
    p.ctx.write_text("paper.md", paper_md(p.ctx.spec, p.m, metrics, p.ctx, title=title,
                                          sections=p.paper_sections(metrics, extra)))


def cv(p) -> dict:
    """Stratified k-fold CV (the card's honest mode): one train run per fold (``train.fold``)."""
    tk = p.m.task
    s = p.samples(tk.classes, tk.network, tk.dim)
    folds = p.folds(s)  # a bad folds file stops here, before any fold trains
    p.ctx.record_splits({f"fold{i + 1}": [s.ids[j] for j in te] for i, (_, te) in enumerate(folds)})
    runs = p.ctx.sweep([Child(f"fold{i + 1}", {"train.fold": i}, labels={"fold": i + 1}) for i in range(len(folds))],
                       title="fold")
    rows = [r.row for r in runs]
    p.ctx.write_csv("per_fold.csv", rows)
    summary = summarise(rows, KEYS)[0]
    metrics = {"folds": len(folds), **headline(summary, KEYS)}
    table = markdown_table(["fold", "accuracy (last)", "accuracy (peak)", "AUROC", "n", "run"],
                           [[r["fold"], r["accuracy"], r.get("accuracy_peak"), r["auroc"], r["n"], r["run_id"]]
                            for r in rows])
    _paper(p, metrics, f"PH-MCI, {len(folds)}-fold CV",
           ["## Folds (each a train run of its own)\n\nLast-epoch accuracy is the honest estimate; no fold's test part "
            f"picks its epoch.\n\n{table}", "## Mean over folds\n\n" + mean_sd_table([summary], KEYS)])
    return metrics


def repeat(p) -> dict:
    """One train run per seed of ``repeat.seeds``, each the split seed and the model seed (the smoke run)."""
    seeds = p.m.repeat.seeds
    runs = p.ctx.sweep([Child(f"seed{s}", {"train.split_seed": s, "seed": s}, labels={"seed": s}) for s in seeds],
                       title="seed")
    rows = [r.row for r in runs]
    p.ctx.write_csv("per_repeat.csv", rows)
    summary = summarise(rows, KEYS)[0]
    metrics = {"repeats": len(rows), **headline(summary, KEYS), "n_test": rows[0]["n"],
               "params_total": rows[0]["params_total"], "params_trainable": rows[0]["params_trainable"]}
    table = markdown_table(["seed", "accuracy (last)", "accuracy (peak)", "AUROC", "test n", "run"],
                           [[r["seed"], r["accuracy"], r.get("accuracy_peak"), r["auroc"], r["n"], r["run_id"]]
                            for r in rows])
    _paper(p, metrics, f"PH-MCI, {len(rows)} seeds",
           [f"## Seeds (each the split seed and the model seed; a train run of its own)\n\n{table}",
            "## Mean over seeds\n\n" + mean_sd_table([summary], KEYS)])
    return metrics


def grid(p) -> dict:
    """Table 1: one train run per comparison × network × homology dimension."""
    g = p.m.grid
    cells = [(c, n, k) for c in g.comparisons for n in g.networks for k in g.dims]
    runs = p.ctx.sweep([Child(f"{c[0]}-{c[1]}_{n}_h{k}", {"task.classes": list(c), "task.network": n, "task.dim": k},
                              labels={"comparison": f"{c[0]}-{c[1]}", "network": n, "dim": k}) for c, n, k in cells],
                       title="cell")
    rows = [{**r.row, "paper": table1(p.ctx.spec, c, n, k)} for r, (c, n, k) in zip(runs, cells, strict=True)]
    p.ctx.write_csv("per_cell.csv", rows)
    peaks = np.array([r["accuracy_peak"] for r in rows])
    best = rows[int(peaks.argmax())]
    metrics = {"cells": len(rows), "accuracy_mean": float(np.mean([r["accuracy"] for r in rows])),
               "accuracy_peak_mean": float(peaks.mean()),
               "best": {k: best[k] for k in ("comparison", "network", "dim", "accuracy_peak")}}
    table = markdown_table(["comparison", "network", "H", "test n", "last epoch", "peak", "paper (Table 1)", "run"],
                           [[r["comparison"], r["network"], r["dim"], r["n"], r["accuracy"], r["accuracy_peak"],
                             r["paper"], r["run_id"]] for r in rows])
    p.ctx.write_text("paper.md", paper_md(p.ctx.spec, p.m, metrics, p.ctx, title="PH-MCI Table 1 grid", expect={},
                                          keys=["cells", "accuracy_mean", "accuracy_peak_mean"],
                                          sections=["## This run beside Table 1 (accuracy; each cell a train run)\n\n"
                                                    + table, table_md(p.ctx.spec, "table1"),
                                                    paper_note(p.ctx.spec, "comparison")]))
    return metrics


NAMES = {"rf": "random forest (flattened PR)", "densenet121": "DenseNet-121", "proposed": "proposed (train)"}


def baseline(p) -> dict:
    """Table 2: a random forest on the flattened PR matrix (fitted here), DenseNet-121 on its image and the proposed
    network (train runs of their own), all on train's split."""
    tk, b, spec = p.m.task, p.m.baseline, p.ctx.spec
    split = p.splits()
    s, tr, te = p.s, split["train"], split["test"]
    metrics, rows = {"n_train": len(tr), "n_test": len(te)}, []
    if "rf" in b.models:
        from sklearn.ensemble import RandomForestClassifier

        iu = np.triu_indices(s.x.shape[1], 1)
        flat = s.x[:, iu[0], iu[1]]
        rf = RandomForestClassifier(b.rf_trees, random_state=p.m.seed, n_jobs=1).fit(flat[tr], s.y[tr])
        m, _ = scores(rf.predict_proba(flat[te]), s.y[te], [s.ids[i] for i in te], s.classes)
        metrics.update({"rf_accuracy": m["accuracy"], "rf_auroc": m["auroc"]})
        rows.append({"model": NAMES["rf"], "accuracy": m["accuracy"], "accuracy_peak": None,
                     "paper_adni": table2(spec, tk.network, "rf"), "run_id": None})
        p.ctx.log(f"random forest: accuracy {m['accuracy']:.4f} on {len(te)}")
    epochs = {"train.epochs": b.epochs} if b.epochs else {}
    children = [Child(n, {"model.arch": "densenet121", **epochs} if n == "densenet121" else {"model.arch": "prnet"},
                      labels={"model": n}) for n in ("densenet121", "proposed") if n in b.models]
    for r in p.ctx.sweep(children, title="network") if children else []:
        n, m = r.child.name, r.metrics
        metrics.update({f"{n}_accuracy": m["accuracy"], f"{n}_accuracy_peak": m.get("accuracy_peak"),
                        f"{n}_auroc": m["auroc"], f"{n}_secs_per_epoch": m.get("secs_per_epoch"),
                        f"{n}_params": m.get("params_total")})
        rows.append({"model": NAMES[n], "accuracy": m["accuracy"], "accuracy_peak": m.get("accuracy_peak"),
                     "paper_adni": table2(spec, tk.network, n), "run_id": r.run_id[:12]})
    p.ctx.write_csv("per_model.csv", rows)
    table = markdown_table(["model", "accuracy (last)", "accuracy (peak)", "paper, ADNI HC vs MCI (Table 2)", "run"],
                           [list(r.values()) for r in rows])
    hc_mci = tk.classes == ["HC", "MCI"]
    note = "" if hc_mci else f"\n\nTable 2 is HC vs MCI only; this run's comparison is {' vs '.join(tk.classes)}."
    # the paper's numbers are peak accuracies; the forest has no epochs
    keys = [k for k in ("rf_accuracy", "densenet121_accuracy_peak", "proposed_accuracy_peak",
                        "densenet121_accuracy", "proposed_accuracy") if k in metrics]
    expect = {k: table2(spec, tk.network, k.split("_")[0]) for k in keys if k.endswith("_peak") or k.startswith("rf")}
    p.ctx.write_text("paper.md", paper_md(spec, p.m, metrics, p.ctx, title="PH-MCI baselines (Table 2)",
                                          expect=expect if hc_mci else {}, keys=keys, table="Table 2",
                                          setting=f"ADNI HC vs MCI, {tk.network} network, peak test accuracy",
                                          sections=[f"## {tk.network}, H{tk.dim}, the train split\n\n{table}{note}",
                                                    table_md(spec, "table2"), paper_note(spec, "comparison")]))
    return metrics
