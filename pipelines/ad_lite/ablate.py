"""ad-lite ``ablate`` (Table 2): AD-Lite Net with and without the parallel concatenation block (pcb), each an
ordinary train run of the manifest (``model.pcb`` true / false, ``model.arch`` adlite), reused when complete. The
sweep run writes ``per_variant.csv`` and ``paper.md``: both variants' accuracy, macro precision / recall / F1 and
parameter count beside the paper's Table 2, and the gain of the pcb."""

from __future__ import annotations

from ..report import markdown_table, paper_data, paper_md, paper_note
from ..sweep import Child

KEYS = ("accuracy", "precision_macro", "recall_macro", "f1_macro")
VARIANTS = (("with_pcb", "with pcb", True), ("without_pcb", "without pcb", False))


def ablate(pipe) -> dict:
    ctx, spec = pipe.ctx, pipe.ctx.spec
    children = [Child(name.replace("_", "-"), {"model.arch": "adlite", "model.pcb": pcb}, labels={"variant": label})
                for name, label, pcb in VARIANTS]
    runs = ctx.sweep(children, title="variant")
    rows = [r.row for r in runs]
    ctx.write_csv("per_variant.csv", rows)
    metrics: dict = {}
    for (name, _, _), r in zip(VARIANTS, runs, strict=True):
        metrics.update({f"{name}.{k}": r.metrics[k] for k in (*KEYS, "f1_weighted", "params_total")})
    metrics.update({f"gain_{k}": metrics[f"with_pcb.{k}"] - metrics[f"without_pcb.{k}"] for k in KEYS})
    t2 = paper_data(spec)["tables"]["table2"]
    paper = {r[0]: r[1:] for r in t2["rows"]}
    body = []
    for (_, label, _), r in zip(VARIANTS, runs, strict=True):
        body.append([label, "this run", *[r.metrics[k] for k in KEYS], int(r.metrics["params_total"]), r.run_id[:12]])
        body.append([label, "paper", *paper[label], "—"])
    body.append(["pcb gain", "this run", *[metrics[f"gain_{k}"] for k in KEYS], "—", "—"])
    body.append(["pcb gain", "paper", *[round(a - b, 2) for a, b in zip(paper["with pcb"][:4], paper["without pcb"][:4],
                                                                       strict=True)], "—", "—"])
    table = markdown_table(["variant", "source", *KEYS, "params", "run"], body)
    setting = f"{pipe.m.dataset.name} test split, {pipe.m.train.epochs} epochs"
    expect = {f"{n}.{k}": v for n, label, _ in VARIANTS for k, v in zip(KEYS, paper[label], strict=False)}
    ctx.write_text("paper.md", paper_md(spec, pipe.m, metrics, ctx, title="AD-Lite Net ablation (Table 2)",
                                        table="Table 2", setting="AD-Dataset test split (1280 images)",
                                        expect=expect, keys=list(expect), sections=[
                                            f"## Table 2 beside this run ({setting})\n\n" + table,
                                            paper_note(spec, "ablation"), paper_note(spec, "comparison")]))
    return metrics
