"""asd-transformer ``baselines`` (Table 1): one train run per ``baselines.archs`` (``model.arch`` brainnetcnn,
fbnetgen, bnt and the proposed model), each the whole protocol on the same splits and seeds, reused when complete;
then one table of this run's mean ± sd beside the paper's Table 1 row of each model.

Each child overrides ``model.arch`` and, for a baseline with ``baselines.features: raw`` (default), switches ComBat
and Nle off (Pearson FC, as in the baselines' papers); the proposed model keeps the manifest's preprocessing, so
its child is the very run ``medrun train`` makes (reused either way). The ``baselines`` section goes back to its
default in each child, so that a child is the run ``medrun train -o model.arch=…`` (with the same preprocessing
overrides) makes, whatever subset this sweep runs.
"""

from __future__ import annotations

from ..report import markdown_table, paper_data, paper_md, paper_note
from ..sweep import Child
from .pipeline import METRICS, PAPER_ROW, paper_expect, pm


def overrides(arch: str, b) -> dict:
    """The dotted overrides of ``arch``'s child run."""
    out = {"model.arch": arch, "baselines.archs": type(b)().archs, "baselines.features": type(b)().features}
    if arch != "asd-transformer" and b.features == "raw":
        out.update({"preprocess.combat": False, "preprocess.nle": False})
    return out


def baselines(p) -> dict:
    b, spec = p.m.baselines, p.ctx.spec
    archs = list(b.archs)
    runs = p.ctx.sweep([Child(a, overrides(a, b), labels={"model": a}) for a in archs], title="model")
    paper = {r[0]: r[1:] for r in paper_data(spec)["tables"]["table1"]["rows"]}
    metrics: dict = {"models": archs}
    body, expect = [], {}
    for a, r in zip(archs, runs, strict=True):
        s = r.metrics
        metrics.update({f"{a}.{k}": s[k] for k in (*METRICS, *(f"{m}_sd" for m in METRICS), "params_total")})
        feats = "manifest" if a == "asd-transformer" or b.features == "manifest" else "raw FC"
        feats += " + time series" if a == "fbnetgen" else ""
        body.append([a, "this run", feats, *[pm(s, k) for k in METRICS], f"{int(s['params_total']):,}",
                     r.run_id[:12]])
        body.append([a, "paper", "", *paper[PAPER_ROW[a]], "", ""])
        expect.update({f"{a}.{k}": v for k, v in paper_expect(spec, a).items()})
    body.append(["Com-TF", "paper", "", *paper["Com-TF"], "", "`medrun ablate` (com-tf)"])
    table = markdown_table(["model", "source", "input", *METRICS, "params", "run"], body)
    p.ctx.write_csv("per_model.csv", [r.row for r in runs])
    p.ctx.write_text("paper.md", paper_md(
        spec, p.m, metrics, p.ctx, title="ASD attention transformer and baselines (Table 1)", expect=expect,
        keys=list(expect), table="Table 1", setting=f"ABIDE I, 1009 subjects, mean of 5 runs; this run: "
                                                    f"{p.m.protocol.runs} run(s) of the protocol per model",
        sections=["## Table 1: this run beside the paper (mean ± sd over runs, %; each model a train run of its "
                  "own on the same splits)\n\n" + table, paper_note(spec, "baselines")]))
    return metrics
