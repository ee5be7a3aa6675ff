"""The ``tune`` stage: a grid over MMSER's Δt and A_max (``tune.deltas`` × ``tune.a_max``) scored by the mean
Jaccard of the fused detector on a held-out ``tune.fraction`` of the frames (a seeded random draw, at least one
frame), then the chosen values scored on the other frames. The paper does not state Δt or A_max; this is how
the card asks for them to be chosen. The grid runs in-process (each point is seconds of classical image
processing), not as child runs."""

from __future__ import annotations

import numpy as np

from medrun.datasets import specular as data

from ..report import markdown_table, paper_md
from . import method


def tune_stage(p) -> dict:
    from dataclasses import replace

    from .pipeline import params

    m, cfg, ctx = p.m, p.m.tune, p.ctx
    frames = p.frames()
    rng = np.random.default_rng(cfg.seed)
    order = rng.permutation(len(frames))
    k = max(1, int(round(cfg.fraction * len(frames))))
    held, rest = [frames[i] for i in sorted(order[:k])], [frames[i] for i in sorted(order[k:])]
    loaded = {fr.stem: (lambda rgb, fr=fr: (rgb, data.load_mask(fr.mask, rgb.shape[:2])))(data.load_rgb(fr.image))
              for fr in frames}
    base = params(m)

    def score(prm, items) -> float:
        return float(np.mean([method.scores(method.detect(loaded[f.stem][0], prm)["fused"], loaded[f.stem][1])
                              ["jaccard"] for f in items])) if items else float("nan")

    rows = []
    for d in cfg.deltas:
        for a in cfg.a_max:
            rows.append({"delta": d, "a_max": a, "jaccard_tune": score(replace(base, delta=d, a_max=a), held)})
    best = max(rows, key=lambda r: (r["jaccard_tune"], -r["delta"], -r["a_max"]))
    chosen = replace(base, delta=best["delta"], a_max=best["a_max"])
    metrics = {"best_delta": best["delta"], "best_a_max": best["a_max"], "jaccard_tune": best["jaccard_tune"],
               "jaccard_rest": score(chosen, rest), "jaccard_rest_default": score(base, rest),
               "n_tune": len(held), "n_rest": len(rest)}
    ctx.write_csv("per_case.csv", rows)
    ctx.record_splits({"tune": [f.image for f in held], "rest": [f.image for f in rest]})
    with ctx.figure("tune_grid", figsize=(4.5, 3.5)) as (fig, ax):
        grid = np.array([[next(r["jaccard_tune"] for r in rows if r["delta"] == d and r["a_max"] == a)
                          for a in cfg.a_max] for d in cfg.deltas])
        im = ax.imshow(grid, cmap="viridis")
        ax.set_xticks(range(len(cfg.a_max)), [f"{a:g}" for a in cfg.a_max])
        ax.set_yticks(range(len(cfg.deltas)), [str(d) for d in cfg.deltas])
        ax.set_xlabel("A_max (fraction of the image)")
        ax.set_ylabel("Δt")
        ax.set_title("fused Jaccard on the tuning frames", fontsize=9)
        fig.colorbar(im, ax=ax)
    table = markdown_table(["Δt", "A_max", "Jaccard (tuning frames)"],
                           [[r["delta"], r["a_max"], r["jaccard_tune"]] for r in rows])
    ctx.write_text("paper.md", paper_md(ctx.spec, m, metrics, ctx, title="MMSER parameters (not in the paper)",
                                        expect={}, keys=list(metrics), sections=["## The grid", table]))
    return metrics
