"""cmu-net ``morphology`` (Fig. 5–6): the dot / rod / network read-out of a finished train run's predicted masks
against the ground truth, for any split (``morphology.split``).

Writes ``per_case.csv`` (overlap metrics and per-class counts and areas of both masks), ``components.csv`` (one
row per 8-connected component: case, mask, area, class), ``figures/morphology.png`` (counts and total areas per
class, ground truth beside the model) and paper.md. The paper gives no numbers for this read-out, so the
comparison is qualitative.
"""

from __future__ import annotations

import numpy as np

from medrun.datasets import nnunet_raw

from ..report import paper_md, paper_note
from .pipeline import CLASSES, components, morph_section


def morphology_stage(p) -> dict:
    ctx, split, name = p.ctx, p.m.morphology.split, p.m.model.name
    net = p.trained_model()
    cases = p.load(p.split_of(p.splits(), split))
    rows, preds = p.score(net, cases)
    comp_rows = [{"case": c.case.id, "mask": who, "area_px": a, "class": nnunet_raw.morph_class(a)}
                 for c, pred in zip(cases, preds, strict=True) for who, mask in (("gt", c.label), (name, pred))
                 for a in components(mask)]
    ctx.write_csv("per_case.csv", rows)
    ctx.write_csv("components.csv", comp_rows)
    metrics = {"split": split, "n_cases": len(rows), **p.morph_totals(rows)}
    with ctx.figure("morphology", ncols=2, figsize=(8, 3.2)) as (_, axes):
        x = np.arange(len(CLASSES))
        for ax, k, title in ((axes[0], "n", "count"), (axes[1], "area", "total area (px)")):
            ax.bar(x - 0.2, [metrics[f"morph_gt_{c}_{k}"] for c in CLASSES], 0.4, label="ground truth")
            ax.bar(x + 0.2, [metrics[f"morph_pred_{c}_{k}"] for c in CLASSES], 0.4, label=name)
            ax.set_xticks(x, CLASSES)
            ax.set_title(title)
        axes[0].legend()
    ctx.log("morphology (gt → pred): " + ", ".join(
        f"{c} {metrics[f'morph_gt_{c}_n']} → {metrics[f'morph_pred_{c}_n']}" for c in CLASSES))
    ctx.write_text("paper.md", paper_md(ctx.spec, p.m, metrics, ctx, title="CMU-Net morphology read-out (Fig. 5–6)",
                                        sections=[morph_section(metrics), paper_note(ctx.spec, "morphology")]))
    return metrics
