"""asd-transformer ``ablate`` (Table 2): each variant is a train run of its own (the whole protocol) with
``preprocess.combat``, ``preprocess.nle`` and ``model.interaction`` set, reused when complete; then the table."""

from __future__ import annotations

from ..report import markdown_table, paper_data, paper_md, paper_note
from ..sweep import Child
from .pipeline import METRICS, pm

VARIANTS = {  # name: (combat, nle, interaction)
    "proposed": (True, True, "add"),
    "with-nle": (True, True, "none"),
    "with-interaction": (True, False, "add"),
    "com-tf": (False, False, "none"),
    "literal-concat": (True, True, "concat"),
}


def ablate(p) -> dict:
    variants, dotted = list(p.m.ablate.variants), ("preprocess.combat", "preprocess.nle", "model.interaction")
    runs = p.ctx.sweep([Child(v, dict(zip(dotted, VARIANTS[v], strict=True)), labels={"variant": v}) for v in variants],
                       title="variant")
    paper = {r[0]: r[1:] for r in paper_data(p.ctx.spec)["tables"]["table2"]["rows"]}
    metrics, table, expect = {"variants": variants}, [], {}
    for r in runs:
        v, s = r.child.name, r.metrics
        combat, nle, interaction = VARIANTS[v]
        table.append([v, "on" if combat else "off", "on" if nle else "off", interaction,
                      *[pm(s, k) for k in METRICS], *paper.get(v, ("—",) * len(METRICS)), r.run_id[:12]])
        for i, k in enumerate(METRICS):
            metrics[f"{v}.{k}"] = s[k]
            metrics[f"{v}.{k}_sd"] = s[f"{k}_sd"]
            if v in paper:
                expect[f"{v}.{k}"] = round(float(str(paper[v][i]).split("±")[0]) / 100, 4)
    p.ctx.write_csv("per_variant.csv", [r.row for r in runs])
    md = markdown_table(["variant", "ComBat", "Nle", "interaction", *[f"{k} (run)" for k in METRICS],
                         *[f"{k} (paper)" for k in METRICS], "run"], table)
    keys = [f"{v}.{k}" for v in variants for k in METRICS]
    p.ctx.write_text("paper.md", paper_md(
        p.ctx.spec, p.m, metrics, p.ctx, title="ASD attention transformer ablation (Table 2)", expect=expect,
        keys=keys, table="Table 2", setting=f"ABIDE I, 1009 subjects, mean of 5 runs; this run: "
                                            f"{p.m.protocol.runs} run(s) of the protocol per variant",
        sections=["## Ablation: this run beside the paper's Table 2 (mean ± sd over runs, %; each variant a train "
                  "run of its own)\n\n" + md, paper_note(p.ctx.spec, "ablation")]))
    return metrics
