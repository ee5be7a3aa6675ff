"""idqce's ``explain``: Grad-CAM (captum ``LayerGradCam`` on ``layer4``) of a linear-eval run's probe, the paper's
Fig. 2 (heat maps of the 1 % NIH linear models)."""

from __future__ import annotations

import numpy as np
import torch

from medrun.errors import UsageError
from medrun.models import idqce as M

from .. import training
from . import figures
from .linear import pct
from .pipeline import to_trunk


class _Logits(torch.nn.Module):
    def __init__(self, net):
        super().__init__()
        self.net = net

    def forward(self, x):
        return self.net(to_trunk(x))


def explain(pl) -> dict:
    from captum.attr import LayerAttribution, LayerGradCam

    d, e, ctx = pl.m.dataset, pl.m.explain, pl.ctx
    net = pl.trained_model(M.LinearProbe(pl.m.model.backbone, len(d.labels)))
    heads = training.load_state(ctx.parent_file("checkpoints/heads.safetensors"))
    key = pct(e.fraction)
    if f"{key}.weight" not in heads:
        have = sorted({k.split(".")[0] for k in heads})
        raise UsageError(f"the linear-eval run has no probe for fraction {e.fraction} (has {', '.join(have)})",
                         fix="set explain.fraction to one of linear.fractions")
    net.head.load_state_dict({"weight": heads[f"{key}.weight"], "bias": heads[f"{key}.bias"]})
    if e.label is not None and e.label not in d.labels:
        raise UsageError(f"explain.label {e.label} is not one of dataset.labels", fix=f"use one of {d.labels}")
    part = pl.splits()["test"]
    order = sorted(range(len(part.names)), key=lambda i: -int(part.y[i].sum()))[:e.n_images]
    arr = np.asarray(pl.images(part))[order]
    x = torch.from_numpy(arr.astype(np.float32) / 255.0)[:, None]
    model = _Logits(net).to(pl.predictor.device).eval()
    x = x.to(pl.predictor.device)
    with torch.no_grad():
        scores = torch.sigmoid(model(x)).cpu()
    target = [d.labels.index(e.label) if e.label else int(s.argmax()) for s in scores]
    cam = LayerGradCam(model, net.encoder.layer4).attribute(x, target=target, relu_attributions=True)
    cam = LayerAttribution.interpolate(cam, x.shape[-2:], interpolate_mode="bilinear").detach().cpu()[:, 0].numpy()
    cam = cam / np.maximum(cam.reshape(len(cam), -1).max(1), 1e-8)[:, None, None]
    rows, titles = [], []
    for i, j in enumerate(order):
        truth = "|".join(lab for k, lab in enumerate(d.labels) if part.y[j, k]) or "No Finding"
        rows.append({"image": part.names[j], "labels": truth, "explained": d.labels[target[i]],
                     "score": float(scores[i, target[i]])})
        titles.append(f"{truth}\n→ {d.labels[target[i]]} {float(scores[i, target[i]]):.2f}")
    ctx.write_csv("per_case.csv", rows)
    ctx.write_npz("cams.npz", cams=cam.astype(np.float32), images=np.asarray(part.names)[order].astype(str))
    figures.heatmaps(ctx, arr, cam, titles)
    return {"n": len(rows), "fraction": e.fraction}
