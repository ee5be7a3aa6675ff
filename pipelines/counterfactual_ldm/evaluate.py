"""Table 1 (``eval``): counterfactuals of the eval split's MEL and NV images toward NV and MEL (``eval.pairs``) with
the chain's LDM and f_φ at the manifest's generate settings; L1 = mean |x^CF − x^F| and L2 = mean (x^CF − x^F)² on
[0, 1] images at the LDM resolution; FR = fraction classified as the target; FID between the factual and the
counterfactual sets with a user-given TorchScript Inception-v3 (2048-d pool features, ``eval.inception_weights``),
else reported as unavailable (never estimated)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from medrun.errors import EnvError
from medrun.metrics.reconstruction import frechet_distance

from ..report import markdown_table, paper_md, paper_table
from . import ldm as L
from .generate import Counterfactuals, to_png
from .pipeline import CLASSES, paper_note


def inception_features(path: str, images: torch.Tensor, pred) -> np.ndarray:
    p = Path(path).expanduser()
    if not p.is_file():
        raise EnvError(f"Inception weights not found: {p}", fix="pass a TorchScript Inception-v3 feature extractor "
                                                                  "(e.g. inception-2015-12-05.pt) or leave it unset")
    net = torch.jit.load(str(p), map_location="cpu").eval()
    x = (images * 255).round().to(torch.uint8)
    feats = [net(x[i:i + 16], return_features=True) for i in range(0, len(x), 16)]
    return torch.cat(feats).detach().double().numpy()


def evaluate(p) -> dict:
    cfg, size = p.m.generate, p.m.finetune_ldm.size
    data = p.split_of(p.splits(), p.m.eval.split)
    gen = Counterfactuals(p, L.load(p, cfg.finetuned), p.classifier(), cfg)
    rows, fact, cfs = [], [], []
    for src, tgt in p.ctx.track(p.m.eval.pairs, "pairs"):
        for s in [s for s in data if CLASSES[s.label] == src][: cfg.subset]:
            x = p.images([s], size)
            traj, prob = gen.run(x, [CLASSES.index(tgt)], cfg.lambda_c, p.m.seed + len(rows))
            xcf = traj[0, -1]
            fact.append(x[0])
            cfs.append(xcf)
            rows.append({"image": s.id, "source": src, "target": tgt, "p_target": float(prob[0]),
                         "flipped": int(prob[0] > 0.5), "l1": float((xcf - x[0]).abs().mean()),
                         "l2": float(((xcf - x[0]) ** 2).mean())})
    p.ctx.write_csv("per_case.csv", rows)
    metrics = {"n": len(rows), "L1": float(np.mean([r["l1"] for r in rows])) if rows else float("nan"),
               "L2": float(np.mean([r["l2"] for r in rows])) if rows else float("nan"),
               "FR": float(np.mean([r["flipped"] for r in rows])) if rows else float("nan"),
               "FID": None, "FID_status": "unavailable: no eval.inception_weights given"}
    if p.m.eval.inception_weights and rows:
        a = inception_features(p.m.eval.inception_weights, torch.stack(fact), p.ctx.predictor())
        b = inception_features(p.m.eval.inception_weights, torch.stack(cfs), p.ctx.predictor())
        metrics["FID"], metrics["FID_status"] = frechet_distance(a, b), "computed"
    if rows:
        k = min(6, len(rows))
        with p.ctx.figure("table1_examples", nrows=3, ncols=k, squeeze=False, figsize=(1.6 * k, 5)) as (_, ax):
            for j in range(k):
                ax[0, j].imshow(to_png(fact[j]))
                ax[1, j].imshow(to_png(cfs[j]))
                ax[2, j].imshow((cfs[j] - fact[j]).abs().mean(0).numpy(), cmap="magma")
                ax[0, j].set_title(f"{rows[j]['source']}→{rows[j]['target']}", fontsize=7)
                for r in range(3):
                    ax[r, j].axis("off")
    variant = f"{'Conditional' if cfg.conditional else 'Unconditional'} CDCT {'ft' if cfg.finetuned else 'wo-ft'}"
    choices = markdown_table(["choice", "value"], [
        ["pairs", ", ".join(f"{a}→{b}" for a, b in p.m.eval.pairs)], ["split", p.m.eval.split],
        ["pixel scale", "[0, 1]"], ["resolution", f"{size}×{size}"],
        ["FID reference", "factual set vs counterfactual set"],
        ["FID", metrics["FID_status"]], ["λ_c / guided steps / inference steps",
                                         f"{cfg.lambda_c:g} / {cfg.guided_steps} / {cfg.num_inference_steps}"]])
    p.ctx.write_text("paper.md", paper_md(p.ctx.spec, p.m, metrics, p.ctx, title=f"CDCT Table 1: {variant}",
                                          sections=[paper_table(p.ctx.spec, "table1"), "## Choices\n\n" + choices,
                                                    paper_note(p.ctx.spec, "comparison")]))
    return metrics
