"""hybrid-seg ``explain`` (card R3, captum) on a trained run, for the first ``explain.images`` eval-split images.

- Semantic target: T_c(x) = mean over the predicted class-c region R_c (fixed from the unperturbed image) of the NC
  logit c, with c the most frequent predicted nucleus class of the image. Methods: ``IntegratedGradients``
  (``explain.ig_steps`` steps, baseline the Gaussian-blurred image, σ = ``explain.blur_sigma``), ``LayerGradCam``
  on S4 (``LayerAttribution.interpolate`` to the input size), ``Occlusion`` (window/stride, the blurred image as
  the filler) and Grad-CAM++ (hooks on S4; weights from the 2nd/3rd-order terms under the exponential assumption).
- InstanceContrast-IG: for ``explain.instances`` predicted nuclei, T_k(x) = mean over M_k of the NP nucleus logit
  + 0.5·mean over the boundary ∂M_k of |∇HV| (finite differences); A_k = IG(T_k); the contrast map C_k = A_k − the
  mean of A_j over the other explained nuclei whose centroids lie within ``explain.neighbour_px``. Pointing game:
  is the argmax of |A_k| inside M_k?
- Metadata importance (fusion ≠ none): IG on the metadata vector (zero baseline), summed per input feature.
- Deletion / insertion: pixels ranked by |attribution| are replaced by (deletion) or restored from (insertion) the
  blurred image in ``explain.step_fraction`` steps; the score is T_c rescaled so that the blurred image scores 0
  and the image itself 1 (ours: logits have no fixed range); AUC by the trapezoid rule over the fraction. A useful
  map has insertion AUC
  above deletion AUC. Runtime per method is reported.
All forward passes of the network go through the predictor's device; the attributions need gradients, so they
call the network directly on that device (captum drives the backward passes).
"""

from __future__ import annotations

import time

import numpy as np
import torch
import torch.nn.functional as F

from ..report import markdown_table, paper_md

METHODS = ("ig", "gradcam", "occlusion", "gradcampp")


def blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    from scipy import ndimage

    return torch.from_numpy(ndimage.gaussian_filter(x.numpy(), (0, 0, sigma, sigma))).float()


class SemanticTarget(torch.nn.Module):
    """x ↦ mean over the fixed region of NC logit c (``prob``: of the softmax probability), one value per image."""

    def __init__(self, net, region: torch.Tensor, c: int, prob: bool = False):
        super().__init__()
        self.net, self.region, self.c, self.prob = net, region.float(), c, prob

    def forward(self, x):
        nc = self.net(x)["nc"]
        v = torch.softmax(nc, 1)[:, self.c] if self.prob else nc[:, self.c]
        return (v * self.region).sum((1, 2)) / self.region.sum().clamp(min=1)


class InstanceTarget(torch.nn.Module):
    """x ↦ mean NP nucleus logit over M_k + 0.5·mean |∇HV| over ∂M_k."""

    def __init__(self, net, mask: np.ndarray):
        super().__init__()
        from skimage.segmentation import find_boundaries

        self.net = net
        self.mask = torch.from_numpy(mask).float()
        self.edge = torch.from_numpy(find_boundaries(mask, mode="inner")).float()

    def forward(self, x):
        out = self.net(x)
        hv = out["hv"]
        gy = F.pad((hv[:, :, 1:] - hv[:, :, :-1]).abs(), (0, 0, 0, 1))
        gx = F.pad((hv[:, :, :, 1:] - hv[:, :, :, :-1]).abs(), (0, 1))
        grad = (gx + gy).sum(1)
        inside = (out["np"][:, 1] * self.mask).sum((1, 2)) / self.mask.sum().clamp(min=1)
        return inside + 0.5 * (grad * self.edge).sum((1, 2)) / self.edge.sum().clamp(min=1)


def gradcam_pp(net, layer, target, x) -> torch.Tensor:
    """Grad-CAM++ (Chattopadhay et al.) of a scalar target per image at ``layer``, upsampled to x's size."""
    store = {}
    h = layer.register_forward_hook(lambda m, i, o: store.__setitem__("a", o))
    try:
        x = x.clone().requires_grad_(False)
        score = target(x).sum()
        grads = torch.autograd.grad(score, store["a"])[0]
    finally:
        h.remove()
    a = store["a"].detach()
    # exponential assumption: with S = exp(score), the 2nd/3rd derivatives are powers of the first
    g2, g3 = grads.pow(2), grads.pow(3)
    denom = 2 * g2 + (a * g3).sum((2, 3), keepdim=True)
    alpha = g2 / torch.where(denom != 0, denom, torch.ones_like(denom))
    weights = (alpha * F.relu(grads)).sum((2, 3), keepdim=True)
    cam = F.relu((weights * a).sum(1, keepdim=True))
    return F.interpolate(cam, size=x.shape[-2:], mode="bilinear", align_corners=False)


def curves(score_fn, x, base, attr: np.ndarray, step: float) -> tuple[float, float]:
    """Deletion and insertion AUC of one attribution map (H, W) for one image x (1, 3, H, W)."""
    order = np.argsort(-attr.ravel(), kind="stable")
    n = order.size
    fracs = np.arange(0, 1 + 1e-9, step)
    dele, ins = [], []
    for f in fracs:
        m = np.zeros(n, np.float32)
        m[order[:int(round(f * n))]] = 1
        mt = torch.from_numpy(m.reshape(attr.shape))[None, None]
        dele.append(x * (1 - mt) + base * mt)
        ins.append(base * (1 - mt) + x * mt)
    with torch.no_grad():
        d = torch.cat([score_fn(b) for b in torch.cat(dele).split(8)]).numpy()
        i = torch.cat([score_fn(b) for b in torch.cat(ins).split(8)]).numpy()
    lo, hi = i[0], d[0]  # the blurred image's and the image's own score
    span = hi - lo if abs(hi - lo) > 1e-8 else 1.0
    return float(np.trapezoid((d - lo) / span, fracs)), float(np.trapezoid((i - lo) / span, fracs))


def explain(p) -> dict:
    from captum.attr import IntegratedGradients, LayerAttribution, LayerGradCam, Occlusion

    from .method import normalise

    e, ctx = p.m.explain, p.ctx
    data = p.split_of(p.splits())
    n = min(e.images, len(data))
    net = p.trained_model().eval()
    decoded = p.decode_all(net, data.take(range(n)))
    rows, inst_rows, meta_imp = [], [], []
    for i in range(n):
        x = normalise(data.images[i:i + 1], *p.stats)
        base = normalise(np.clip(blur(torch.from_numpy(data.images[i:i + 1].astype(np.float32)).permute(0, 3, 1, 2),
                                      e.blur_sigma).permute(0, 2, 3, 1).numpy(), 0, 255), *p.stats)
        meta = torch.from_numpy(data.meta[i:i + 1])
        model = _Bound(net, meta if p.use_meta else None)
        tmap = decoded[i]["type_map"]
        present = np.bincount(tmap.ravel(), minlength=6)[1:]
        c = int(present.argmax()) + 1 if present.any() else 1
        region = torch.from_numpy(tmap == c) if present.any() else torch.from_numpy(decoded[i]["inst"] > 0)
        logit_t = SemanticTarget(model, region, c)
        maps, secs = {}, {}
        t0 = time.perf_counter()
        maps["ig"] = IntegratedGradients(logit_t).attribute(x, baselines=base, n_steps=e.ig_steps,
                                                            internal_batch_size=8)
        secs["ig"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        layer = net.enc4 if hasattr(net, "enc4") else None
        if layer is not None:
            cam = LayerGradCam(logit_t, layer).attribute(x, relu_attributions=True)
            maps["gradcam"] = LayerAttribution.interpolate(cam, x.shape[-2:], "bilinear")
            secs["gradcam"] = time.perf_counter() - t0
            t0 = time.perf_counter()
            maps["gradcampp"] = gradcam_pp(model, layer, logit_t, x)
            secs["gradcampp"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        maps["occlusion"] = Occlusion(logit_t).attribute(x, sliding_window_shapes=(3, e.window, e.window),
                                                         strides=(3, e.stride, e.stride), baselines=base)
        secs["occlusion"] = time.perf_counter() - t0
        row = {"case": data.ids[i], "class": c}
        flat = {}
        for name, a in maps.items():
            flat[name] = a.detach().abs().sum(1)[0].numpy() if a.shape[1] > 1 else a.detach()[0, 0].numpy()
            row[f"{name}_finite"] = float(np.isfinite(flat[name]).all())
            row[f"{name}_deletion_auc"], row[f"{name}_insertion_auc"] = curves(logit_t, x, base, flat[name],
                                                                               e.step_fraction)
            row[f"{name}_seconds"] = secs[name]
        rows.append(row)
        inst_rows += _instances(p, model, x, base, decoded[i], data.ids[i])
        if p.use_meta:
            ig = IntegratedGradients(_MetaTarget(net, x, region, c))
            meta_imp.append(ig.attribute(meta, baselines=torch.zeros_like(meta), n_steps=e.ig_steps)[0].abs().numpy())
        _figure(ctx, data.ids[i], data.images[i], flat, tmap == c)
    ctx.write_csv("explain.csv", rows)
    if inst_rows:
        ctx.write_csv("instances.csv", inst_rows)
    metrics = {"images": n}
    for name in {k for r in rows for k in METHODS if f"{k}_deletion_auc" in r}:
        for key in ("deletion_auc", "insertion_auc", "seconds", "finite"):
            metrics[f"{name}_{key}"] = float(np.mean([r[f"{name}_{key}"] for r in rows]))
        metrics[f"{name}_insertion_minus_deletion"] = metrics[f"{name}_insertion_auc"] - metrics[f"{name}_deletion_auc"]
    if inst_rows:
        metrics["pointing_game"] = float(np.mean([r["pointing_hit"] for r in inst_rows]))
        metrics["instance_maps_finite"] = float(all(r["finite"] for r in inst_rows))
    if meta_imp:
        from medrun.datasets import pannuke

        imp = np.mean(meta_imp, 0)
        names = list(pannuke.TISSUES) + [f"meta_{j}" for j in range(len(imp) - len(pannuke.TISSUES))]
        ctx.write_csv("metadata_importance.csv", [{"feature": f, "ig_abs": float(v)} for f, v in zip(names, imp,
                                                                                                     strict=True)])
    table = markdown_table(["method", "deletion AUC ↓", "insertion AUC ↑", "s/image"],
                           [[m, metrics.get(f"{m}_deletion_auc"), metrics.get(f"{m}_insertion_auc"),
                             metrics.get(f"{m}_seconds")] for m in METHODS if f"{m}_deletion_auc" in metrics])
    ctx.write_text("paper.md", paper_md(ctx.spec, p.m, metrics, ctx, title="HybridNet explanations", expect={},
                                        keys=["ig_insertion_minus_deletion", "pointing_game"], present_only=True,
                                        sections=["## Deletion / insertion (mean over images)\n\n" + table]))
    return metrics


class _MetaTarget(torch.nn.Module):
    """metadata ↦ T_c of the fixed image (IG over the metadata inputs)."""

    def __init__(self, net, x, region, c):
        super().__init__()
        self.net, self.x, self.region, self.c = net, x, region.float(), c

    def forward(self, meta):
        nc = self.net(self.x.expand(len(meta), -1, -1, -1), meta)["nc"][:, self.c]
        return (nc * self.region).sum((1, 2)) / self.region.sum().clamp(min=1)


class _Bound(torch.nn.Module):
    """The network with the image's metadata bound, so captum sees a function of the image alone."""

    def __init__(self, net, meta):
        super().__init__()
        self.net, self.meta = net, meta

    def forward(self, x):
        meta = None if self.meta is None else self.meta.expand(len(x), -1)
        return self.net(x, meta)

    def __getattr__(self, name):
        try:
            return super().__getattr__(name)
        except AttributeError:
            return getattr(self.net, name)


def _instances(p, model, x, base, d, case) -> list[dict]:
    from captum.attr import IntegratedGradients

    e = p.m.explain
    ids = [k for k, _ in sorted(d["scores"].items(), key=lambda kv: -kv[1])][:e.instances]
    attrs, cents, rows = {}, {}, []
    for k in ids:
        mask = d["inst"] == k
        a = IntegratedGradients(InstanceTarget(model, mask)).attribute(x, baselines=base, n_steps=e.ig_steps,
                                                                       internal_batch_size=8)
        attrs[k] = a.detach().abs().sum(1)[0].numpy()
        ys, xs = np.nonzero(mask)
        cents[k] = (ys.mean(), xs.mean())
    for k in ids:
        near = [j for j in ids if j != k and np.hypot(*np.subtract(cents[k], cents[j])) <= e.neighbour_px]
        contrast = attrs[k] - (np.mean([attrs[j] for j in near], 0) if near else 0)
        peak = np.unravel_index(np.argmax(attrs[k]), attrs[k].shape)
        rows.append({"case": case, "instance": k, "neighbours": len(near), "pointing_hit": float(d["inst"][peak] == k),
                     "finite": bool(np.isfinite(contrast).all()), "contrast_max": float(contrast.max())})
    return rows


def _figure(ctx, case, image, maps, region):
    with ctx.figure(f"explain_{case}", ncols=len(maps) + 1, figsize=(3 * (len(maps) + 1), 3)) as (fig, axes):
        axes[0].imshow(image)
        axes[0].contour(region, levels=[0.5], colors="yellow", linewidths=0.7)
        axes[0].set_title(f"{case} (target region)", fontsize=7)
        for ax, (name, a) in zip(axes[1:], maps.items(), strict=True):
            ax.imshow(a, cmap="magma")
            ax.set_title(name, fontsize=8)
        for ax in axes:
            ax.set_axis_off()
