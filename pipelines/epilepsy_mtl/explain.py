"""epilepsy-mtl ``explain``: captum saliency of both heads of a finished train run.

For each head (HFO, IED) and method (``Saliency``: |∂logit/∂x|, max over colour channels; ``IntegratedGradients``:
zero-image baseline, ``explain.ig_steps`` steps (50), |attribution| summed over channels) the attribution of the head's
predicted-class logit is taken with respect to both inputs of the pair:

- its own image: the saliency map of that task;
- the partner image: the cross-task attribution, which flows only through the cross-stitch units (exactly zero
  with ``model.n_stitch: 0``) and shows how much one task leans on the other.

The cross-task share measures sensitivity, not reliance: through full stitch units the partner's map spreads over
the whole partner image, so its mass can exceed the own map's while re-pairing hardly changes the prediction (see
``repair_acc_sd_*`` of train/eval for the effect of the partner on accuracy).

Outputs: ``maps/<method>_<head>.npy`` (N, 2, 28, 28) float32, channel 0 the map over the HFO image, 1 over the IED
image; ``per_case.csv`` one row per pair (files, labels, predictions, each map's mass on own and partner image, the
cross-task share, the own map's peak column); ``figures/saliency_<head>_<n>.png`` overlays; metrics: mean cross-task
share per head and method, the share of true positives whose own-map peak lies in the central 40 % of the time
axis (candidates are centred in their window; chance 0.4), and Integrated Gradients' completeness error.
"""

from __future__ import annotations

import numpy as np
import torch

from medrun.datasets.ncnp_ecog import CLASSES, TASKS

from ..report import markdown_table, paper_md

HEADS = {"hfo": 0, "ied": 1}
TITLES = {"saliency": "Saliency", "integrated_gradients": "Integrated Gradients"}


def attributions(net, xa: torch.Tensor, xb: torch.Tensor, head: str, method: str, target: torch.Tensor,
                 ig_steps: int = 50) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """(map over the HFO image, map over the IED image, IG completeness delta or None), maps (N, H, W) ≥ 0."""
    k = HEADS[head]
    if net.n_stitch == 0:  # independent streams: the partner is not in the graph, its attribution is exactly zero
        own, other = (xa, xb) if k == 0 else (xb, xa)

        def forward_own(x):
            return net(x, other)[k] if k == 0 else net(other, x)[k]

        m_own, delta = _attribute(forward_own, (own,), method, target, ig_steps)
        maps = (m_own[0], torch.zeros_like(m_own[0])) if k == 0 else (torch.zeros_like(m_own[0]), m_own[0])
        return (*maps, delta)

    def forward(a, b):
        return net(a, b)[k]

    (ma, mb), delta = _attribute(forward, (xa, xb), method, target, ig_steps)
    return ma, mb, delta


def _attribute(forward, inputs: tuple, method: str, target, ig_steps: int):
    from captum.attr import IntegratedGradients, Saliency

    if method == "saliency":
        grads = Saliency(forward).attribute(inputs, target=target, abs=True)
        return tuple(g.amax(1) for g in grads), None
    attr, delta = IntegratedGradients(forward).attribute(inputs, baselines=tuple(torch.zeros_like(x) for x in inputs),
                                                         target=target, n_steps=ig_steps, return_convergence_delta=True)
    return tuple(g.abs().sum(1) for g in attr), delta


def explain(pipe) -> dict:
    ex, ctx = pipe.m.explain, pipe.ctx
    net = pipe.trained_model().eval()
    for p in net.parameters():
        p.requires_grad_(False)
    samples, images = pipe.samples, pipe.images
    a, b = pipe.pairs(pipe.splits()[ex.split])
    if ex.max_pairs:
        a, b = a[:ex.max_pairs], b[:ex.max_pairs]
    xa, xb = torch.as_tensor(images["hfo"][a]), torch.as_tensor(images["ied"][b])
    ya, yb = pipe.labels("hfo", a), pipe.labels("ied", b)
    with torch.no_grad():  # the explained logits, on the CPU in float32 like the attributions
        la, lb = net(xa, xb)
    prob = {"hfo": torch.softmax(la, 1)[:, 1].numpy(), "ied": torch.softmax(lb, 1)[:, 1].numpy()}
    pred = {t: (prob[t] >= 0.5).astype(int) for t in TASKS}
    labels = {"hfo": ya, "ied": yb}
    rows = [{"pair": i, "hfo_file": samples["hfo"][ia].rel(pipe.root), "ied_file": samples["ied"][ib].rel(pipe.root),
             **{f"{t}_{k}": v for t in TASKS for k, v in (("label", CLASSES[t][labels[t][i]]),
                                                         ("pred", CLASSES[t][pred[t][i]]),
                                                         ("prob", round(float(prob[t][i]), 6)))}}
            for i, (ia, ib) in enumerate(zip(a, b, strict=True))]
    metrics: dict = {"n_pairs": len(a), "split": ex.split, "n_stitch": pipe.m.model.n_stitch,
                     "stitch": pipe.m.model.stitch}
    maps: dict[tuple[str, str], np.ndarray] = {}
    width = xa.shape[-1]
    lo, hi = int(round(0.3 * width)), int(round(0.7 * width))
    for head in TASKS:
        target = torch.as_tensor(pred[head])
        own_i = HEADS[head]
        for method in ex.methods:
            ma, mb, delta = attributions(net, xa, xb, head, method, target, ex.ig_steps)
            stack = torch.stack([ma, mb], 1).numpy().astype(np.float32)  # (N, 2, H, W)
            maps[(method, head)] = stack
            ctx.write_npy(f"maps/{method}_{head}.npy", stack)
            own, cross = stack[:, own_i].reshape(len(a), -1).sum(1), stack[:, 1 - own_i].reshape(len(a), -1).sum(1)
            share = cross / np.maximum(own + cross, 1e-12)
            peak_col = stack[:, own_i].reshape(len(a), -1).argmax(1) % width
            for i, r in enumerate(rows):
                r[f"{method}_{head}_own"] = round(float(own[i]), 6)
                r[f"{method}_{head}_cross"] = round(float(cross[i]), 6)
                r[f"{method}_{head}_cross_share"] = round(float(share[i]), 6)
                r[f"{method}_{head}_peak_col"] = int(peak_col[i])
            metrics[f"cross_share_{method}_{head}"] = float(share.mean())
            tp = (labels[head] == 1) & (pred[head] == 1)
            central = (peak_col[tp] >= lo) & (peak_col[tp] < hi)
            metrics[f"peak_central_{method}_{head}"] = float(np.mean(central)) if tp.any() else float("nan")
            if delta is not None:
                metrics[f"ig_delta_max_{head}"] = float(delta.abs().max())
            ctx.log(f"{TITLES[method]} [{head}]: cross-task share {share.mean():.4f}, "
                    f"own-map peak central in {metrics[f'peak_central_{method}_{head}']:.2f} of true positives")
    ctx.write_csv("per_case.csv", rows)
    _overlays(pipe, xa, xb, labels, pred, maps, a, b, samples)
    body = [[TITLES[m], t.upper(), metrics[f"cross_share_{m}_{t}"], metrics[f"peak_central_{m}_{t}"]]
            for t in TASKS for m in ex.methods]
    section = ("## Saliency (this run)\n\nThe paper shows no saliency maps; these are the card's `explain` "
               "diagnostics. "
               "Cross-task share: the part of a head's attribution that falls on the partner image (through the "
               "stitches). Peak central: true positives whose own-map peak lies in the central 40 % of the time axis "
               "(chance 0.4).\n\n" + markdown_table(["method", "head", "cross-task share", "peak central"], body))
    ctx.write_text("paper.md", paper_md(ctx.spec, pipe.m, metrics, ctx, title="Cross-stitch HFO + IED saliency",
                                        expect={}, keys=[], table="", setting="", sections=[section]))
    return metrics


def _overlays(pipe, xa, xb, labels, pred, maps, a, b, samples) -> None:
    n, methods = pipe.m.explain.overlays, pipe.m.explain.methods
    if not n:
        return
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    for head in TASKS:
        order = sorted(range(len(a)), key=lambda i: (-labels[head][i], i))[:n]
        for i in order:
            cols = 2 + 2 * len(methods)
            fig, axes = plt.subplots(1, cols, figsize=(2.0 * cols, 2.4), squeeze=False)
            imgs = {"hfo": xa[i].permute(1, 2, 0).numpy(), "ied": xb[i].permute(1, 2, 0).numpy()}
            for ax, t in zip(axes[0, :2], TASKS, strict=True):
                ax.imshow(imgs[t])
                ax.set_title(f"{t.upper()}: {CLASSES[t][labels[t][i]]}", fontsize=7)
            for j, method in enumerate(methods):
                stack = maps[(method, head)][i]
                vmax = float(stack.max()) or 1.0  # one scale for own and partner map: the cross-task part stays visible
                for c, t in enumerate(TASKS):
                    ax = axes[0, 2 + 2 * j + c]
                    ax.imshow(imgs[t], alpha=0.5)
                    ax.imshow(stack[c], cmap="inferno", alpha=0.6, vmin=0, vmax=vmax)
                    ax.set_title(f"{TITLES[method][:10]} {head.upper()}→{t.upper()}", fontsize=7)
            for ax in axes[0]:
                ax.axis("off")
            fig.suptitle(f"{head.upper()} head: pred {CLASSES[head][pred[head][i]]}", fontsize=8)
            fig.tight_layout()
            stem = samples[head][(a if head == "hfo" else b)[i]].path.stem
            pipe.ctx.save_figure(fig, f"saliency_{head}_{stem}", dpi=90)
