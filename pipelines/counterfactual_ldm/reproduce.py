"""``reproduce``: the whole chain, each stage a run of its own on the one before (reused when complete), and one
summary of what the card's smoke run checks."""

from __future__ import annotations

from ..report import markdown_table, paper_md
from ..sweep import Child

PARENT = {"train-concepts": "train-classifier", "caption": "train-concepts", "finetune-ldm": "caption",
          "generate": "finetune-ldm", "train-vae": "generate", "discover": "train-vae", "eval": "finetune-ldm"}


def reproduce(p) -> dict:
    done, metrics, rows = {}, {}, []
    for stage in p.m.reproduce.stages:
        parent = PARENT.get(stage)
        run = str(done[parent].run_dir) if parent in done else None
        (child,) = p.ctx.sweep([Child(stage, {}, stage=stage, run=run)], title=stage)
        done[stage] = child
        rows.append([stage, child.run_id[:12], "reused" if child.reused else "ran"])
        metrics.update({f"{stage.replace('-', '_')}.{k}": v for k, v in child.metrics.items()
                        if isinstance(v, (int, float)) and not isinstance(v, bool)})
    g = p.m.generate
    if "generate" in done:
        gm = done["generate"].metrics
        metrics["images_per_source_ok"] = float(gm.get("images_per_source") == gm.get("expected_images_per_source"))
        for lam in g.compare_lambda:
            metrics[f"p_target_gain_over_lambda{lam:g}"] = gm.get(f"p_target_gain_over_lambda{lam:g}")
    if "discover" in done:
        metrics["topk_written"] = float((done["discover"].run_dir / "topk.csv").exists())
    p.ctx.write_text("paper.md", paper_md(p.ctx.spec, p.m, metrics, p.ctx, title="CDCT, the whole chain", expect={},
                                          keys=[k for k in metrics if not k.startswith(("train_", "caption"))][:30],
                                          sections=["## Runs\n\n" + markdown_table(["stage", "run", "state"], rows)]))
    return metrics
