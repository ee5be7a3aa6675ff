"""``prepare``: read and preprocess every side (high-pass, clip, mirror-masked normalisation), list the training
tiles and the held-out val/test patches; a table per side (``per_case.csv``), ``patches.csv`` and figures of the
depth preprocessing with the drawing."""

from __future__ import annotations

import numpy as np

from ..report import markdown_table, paper_md
from . import data as D


def prepare(p) -> dict:
    d = p.m.dataset
    p.record()
    held = p.held_out
    rows = []
    for key, m in sorted(p.mirrors.items()):
        role = "test" if key in d.test_mirrors else "train"
        rows.append({"side": key, "role": role, "height": m.size[0], "width": m.size[1], "mask_source": m.source,
                     "mirror_fraction": float(m.mask.mean()), "line_fraction": float(m.gt[m.mask].mean()),
                     "tiles_annotated": len(D.tiles(m, d.tile_grid)) if role == "train" else 0,
                     "val_patches": sum(q.key == key for q in held["val"]),
                     "test_patches": sum(q.key == key for q in held["test"]), **m.stats})
    p.ctx.write_csv("per_case.csv", rows)
    p.ctx.write_csv("patches.csv", [{"split": s, "side": q.key, "y": q.y, "x": q.x}
                                    for s, v in held.items() for q in v])
    for key in sorted(p.mirrors)[: p.m.prepare.figures]:
        m = p.mirrors[key]
        with p.ctx.figure(f"side_{key}", ncols=3, figsize=(13, 3.8)) as (fig, ax):
            lim = np.abs(m.x).max() or 1
            ax[0].imshow(m.x, cmap="gray", vmin=-lim, vmax=lim)
            ax[0].set_title("normalised high-pass X")
            ax[1].imshow(m.gt, cmap="gray")
            ax[1].set_title("drawing Y*")
            ax[2].imshow(m.x, cmap="gray", vmin=-lim, vmax=lim)
            ax[2].imshow(np.ma.masked_where(~m.gt, m.gt), cmap="autumn", alpha=0.6)
            ax[2].contour(m.mask, levels=[0.5], colors="c", linewidths=0.8)
            ax[2].set_title(f"overlay, mirror mask ({m.source})")
            for a in ax:
                a.axis("off")
    n_otsu = sum(r["mask_source"] == "otsu" for r in rows)
    if n_otsu:
        p.ctx.log(f"warning: {n_otsu} side(s) without MASKS_REL mask use the albedo-Otsu fallback (mask_source otsu)")
    metrics = {"sides": len(rows), "train_sides": sum(r["role"] == "train" for r in rows),
               "test_sides": sum(r["role"] == "test" for r in rows), "masks_otsu": n_otsu,
               "train_tiles": sum(r["tiles_annotated"] for r in rows), "val_patches": len(held["val"]),
               "test_patches": len(held["test"])}
    table = markdown_table(list(rows[0])[:10], [[r[k] for k in list(rows[0])[:10]] for r in rows])
    p.ctx.write_text("paper.md", paper_md(p.ctx.spec, p.m, metrics, p.ctx, title="fusing-forces data", expect={},
                                          keys=list(metrics), sections=["## Sides\n\n" + table]))
    return metrics
