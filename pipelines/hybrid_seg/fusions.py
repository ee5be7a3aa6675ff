"""hybrid-seg ``fusions``: the card's table per metadata fusion mode (target b) and the CNN-only ablation (target a).

One train run per ``fusions.modes`` (``model.fusion``, arch hybrid) plus one per ``fusions.archs`` at fusion none
(default: the CNN-only bottleneck), each a child run of its own (reused when complete). The table gives each run's
test NP Dice, bPQ, mPQ, AJI and AP50; ``hybrid_minus_cnn_mpq`` is target (a)."""

from __future__ import annotations

from ..report import paper_md, paper_table
from ..sweep import Child


def fusions(p) -> dict:
    f = p.m.fusions
    children = [Child(f"hybrid-{mode}", {"model.arch": "hybrid", "model.fusion": mode},
                      labels={"arch": "hybrid", "fusion": mode}) for mode in f.modes]
    children += [Child(f"{arch}-none", {"model.arch": arch, "model.fusion": "none"},
                       labels={"arch": arch, "fusion": "none"}) for arch in f.archs if arch != "hybrid"]
    runs = p.ctx.sweep(children, title="variant")
    rows = [{**r.row, "variant": r.child.name} for r in runs]
    p.ctx.write_csv("fusions.csv", rows)
    metrics = {"variants": len(rows), "modes_run": sum(r["arch"] == "hybrid" for r in rows),
               **{f"{r['variant']}_{k}": r.get(k) for r in rows for k in ("np_dice", "bpq", "mpq")}}
    by = {r["variant"]: r for r in rows}
    if "hybrid-none" in by and "cnn-none" in by:
        metrics["hybrid_minus_cnn_mpq"] = by["hybrid-none"]["mpq"] - by["cnn-none"]["mpq"]
    p.ctx.write_text("paper.md", paper_md(p.ctx.spec, p.m, metrics, p.ctx, title="HybridNet: metadata fusion modes",
                                          expect={}, keys=["modes_run", "hybrid_minus_cnn_mpq"], present_only=True,
                                          sections=["## Test metrics per variant (each a train run)\n\n"
                                                    + p.table(rows, "variant"),
                                                    paper_table(p.ctx.spec, "acceptance")]))
    return metrics
