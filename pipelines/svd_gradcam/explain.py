"""svd-gradcam ``explain``: the CAM metrics table of a finished train run (Table 2; ``svd_n<rank>`` and
``svd_<variant>`` rows for Exp. 1 and Table 1), and the two checks the train stage runs on the valid split.
Outputs: ``maps/<row>.npy`` (N, P, Q), ``per_case.csv``, overlays (abnormal images first) and ``paper.md``.
"""

from __future__ import annotations

import math
import time
from pathlib import Path

import numpy as np
import torch

from medrun.datasets import mura
from medrun.errors import UsageError
from medrun.metrics import saliency

from ..report import markdown_table, paper_data, paper_md, paper_note
from . import cams

CAM_KEYS = ("avg_drop", "avg_increase", "coherency", "complexity", "adcc")
NAMES = {"cam": "CAM", "gradcam": "Grad-CAM", "gradcampp": "Grad-CAM++", "smooth": "Smooth-Grad-CAM",
         "ablation": "Ablation-CAM", "score": "Score-CAM", "eigen": "Eigen-CAM", "svd": "SVD-Grad-CAM"}


def _device(net) -> torch.device:
    return next(net.parameters()).device


def cam_checks(p, net, samples) -> dict:
    """Full-rank SVD-Grad-CAM vs Grad-CAM (max |Δ| of the normalised maps: must be 0), the manifest's SVD-Grad-CAM
    (``explain.rank``, ``explain.variant``) vs Grad-CAM (max |Δ| and the ADCC gain, which the paper reports
    positive: 86.26 vs 70.38) on the explained class, and, with lesion positions, pointing; all at the card's target
    layer (the net's ``relu``). The gain shows a smoke run whether the SVD filter changes anything (on a pooled
    head it barely can: docs/papers/svd-gradcam.md)."""
    ex, layer = p.m.explain, net.relu
    x = p.images(samples)
    logits = p.predictor(net, x).reshape(-1)
    sign = torch.where(logits >= 0, 1.0, -1.0)
    out = {"svd_fullrank_vs_gradcam_maxdiff": fullrank_gap(net, layer, x, sign, ex.gradient)}
    y, bs, maps, adcc = torch.sigmoid(sign * logits), ex.batch_size, {}, {}
    for name, kw in (("gradcam", {}), ("svd", {"n": ex.rank, "variant": ex.variant, "literal_eq": ex.literal_eq})):
        _, maps[name], _, _, row = scored(p.predictor, net, net, layer, x, sign, y, name,
                                          {**kw, "gradient": ex.gradient}, bs)
        adcc[name] = row["adcc"]
    out.update(adcc_gradcam=adcc["gradcam"], adcc_svd=adcc["svd"], adcc_gain_svd=adcc["svd"] - adcc["gradcam"],
               svd_vs_gradcam_maxdiff=float((maps["svd"] - maps["gradcam"]).abs().max()))
    out.update(pointing(p, net, layer, samples, x, {"svd": {"gradient": ex.gradient}}))
    return out


def fullrank_gap(net, layer, x, sign, gradient: str) -> float:
    dev = _device(net)
    xd, sd = x.to(dev), sign.to(dev)
    full = cams.upsample(cams.svd_gradcam(net, layer, xd, sd, n=10**6, gradient=gradient).cpu(), x.shape[-2:])
    grad = cams.upsample(cams.gradcam(net, layer, xd, sd, gradient).cpu(), x.shape[-2:])
    return float((full - grad).abs().max())


def pointing(p, net, layer, samples, x, methods: dict) -> dict:
    """Share of abnormal images with a known lesion whose map (for the "abnormal" score) peaks inside it."""
    from PIL import Image

    lesions = mura.read_lesions(p.root)
    rel = [Path(s.path).relative_to(p.root).as_posix() for s in samples]
    idx = [i for i, s in enumerate(samples) if s.label == 1 and rel[i] in lesions]
    if not idx:
        return {}
    size = p.m.dataset.img_size
    xs = x[idx].to(_device(net))
    discs = []
    for i in idx:
        cy, cx, r = lesions[rel[i]]
        with Image.open(samples[i].path) as im:
            w, h = im.size
        discs.append((cy * size / h, cx * size / w, r * size / max(w, h)))
    out = {}
    for name, kw in methods.items():
        low = cams.compute(name.split("_")[0], net, layer, xs, torch.ones(len(xs), device=xs.device), **kw).cpu()
        cell = size / low.shape[-1]
        peaks = cams.upsample(low, (size, size)).reshape(len(xs), -1).argmax(1)
        hits = [math.hypot(int(q) // size - cy, int(q) % size - cx) <= r + cell / 2
                for q, (cy, cx, r) in zip(peaks, discs, strict=True)]
        out[f"pointing_{name}"] = float(np.mean(hits))
    cell = size / low.shape[-1]
    out["pointing_chance"] = float(np.mean([min(1.0, math.pi * (r + cell / 2) ** 2 / size**2) for _, _, r in discs]))
    out["pointing_n"] = len(idx)
    return out


def target_layer(p, net):
    name = p.m.explain.target_layer
    modules = dict(net.named_modules())
    if name not in modules or name == "":
        top = [n for n, _ in net.named_children()]
        last = [n for n in modules if n.startswith("features.")][-6:]
        raise UsageError(f"target layer '{name}' is not a module of the {p.m.model.arch} classifier",
                         fix=f"-o explain.target_layer=NAME with NAME one of {', '.join(top + last)} "
                             f"(or any of the {len(modules) - 1} names of net.named_modules())")
    return modules[name]


def method_rows(p, net, layer) -> dict[str, tuple[str, dict]]:
    """{row name: (method, kwargs)}: the manifest's methods, then the rank sweep and the variant rows."""
    ex = p.m.explain
    svd = {"n": ex.rank, "variant": ex.variant, "literal_eq": ex.literal_eq}
    rows: dict[str, tuple[str, dict]] = {}
    for method in ex.methods:
        if method == "cam" and not (isinstance(getattr(net, "head", None), torch.nn.Linear) and layer is net.relu):
            p.ctx.log("CAM left out: it needs the single Linear head on the default target layer")
            continue
        rows[method] = (method, svd if method == "svd" else {})
    for n in ex.sweep_ranks:
        rows[f"svd_n{n}"] = ("svd", {**svd, "n": n})
    for v in ex.variants:
        rows[f"svd_{v}"] = ("svd", {**svd, "variant": v})
    return rows


def explain(p) -> dict:
    ex, ctx, pred = p.m.explain, p.ctx, p.predictor
    net = p.trained_model()
    fnet = pred.setup(net)  # eval mode on the inference device; `net` (the same module) is hooked by the CAMs
    for prm in net.parameters():
        prm.requires_grad_(False)
    layer = target_layer(p, net)
    samples = p.samples(ex.split)
    if ex.max_images and ex.max_images < len(samples):
        keep = np.random.default_rng(p.m.seed).choice(len(samples), ex.max_images, replace=False)
        samples = [samples[i] for i in sorted(keep)]
    ctx.record_splits({ex.split: samples})
    x = p.images(samples)
    bs = ex.batch_size
    logits = torch.cat([pred(fnet, x[i:i + bs]).reshape(-1) for i in range(0, len(x), bs)])
    sign = torch.where(logits >= 0, 1.0, -1.0)
    y = torch.sigmoid(sign * logits)
    gen = torch.Generator().manual_seed(p.m.seed)
    common = {"smooth_n": ex.smooth_samples, "smooth_sigma": ex.smooth_sigma, "batch": ex.mask_batch,
              "generator": gen, "gradient": ex.gradient}
    rows = method_rows(p, net, layer)
    classes = p.classes()
    per_case = [{"file": Path(s.path).relative_to(p.root).as_posix(), "label": classes[s.label],
                 "pred": classes[int(z >= 0)], "y": float(q)} for s, z, q in zip(samples, logits, y, strict=True)]

    table, upsampled, secs = {}, {}, {}
    for name, (method, kw) in rows.items():
        t0 = time.perf_counter()
        low, lmap, lmap_e, ye, table[name] = scored(pred, fnet, net, layer, x, sign, y, method, {**kw, **common}, bs)
        secs[name] = (time.perf_counter() - t0) / max(1, len(x))
        ctx.write_npy(f"maps/{name}.npy", low.numpy().astype(np.float32))
        upsampled[name] = lmap
        for j, r in enumerate(per_case):
            yy, yej = float(y[j]), float(ye[j])
            r[f"{name}_drop"] = round(100 * max(0.0, yy - yej) / yy, 4)
            r[f"{name}_increase"] = int(yy < yej)
            r[f"{name}_coherency"] = round(100 * saliency.coherency(lmap_e[j], lmap[j]), 4)
            r[f"{name}_complexity"] = round(100 * float(lmap[j].mean()), 4)
        ctx.log(f"{NAMES.get(method, method)} [{name}]: " + "  ".join(f"{k} {v:.2f}" for k, v in table[name].items())
                + f"  ({secs[name]:.2f} s/image)")
    ctx.write_csv("per_case.csv", per_case)
    metrics: dict = {"n_images": len(samples), "split": ex.split, "target_layer": ex.target_layer,
                     "rank": ex.rank, "variant": ex.variant}
    for name, vals in table.items():
        metrics.update({f"{k}_{name}": round(v, 4) for k, v in vals.items()})
        metrics[f"secs_per_image_{name}"] = round(secs[name], 4)
    if "svd" in table and "gradcam" in table:
        metrics["adcc_gain_svd"] = round(table["svd"]["adcc"] - table["gradcam"]["adcc"], 4)
        metrics["svd_vs_gradcam_maxdiff"] = float((upsampled["svd"] - upsampled["gradcam"]).abs().max())
    if "svd" in rows or "gradcam" in rows:
        metrics["svd_fullrank_vs_gradcam_maxdiff"] = fullrank_gap(net, layer, x, sign, ex.gradient)
    metrics.update(pointing(p, net, layer, samples, x, {k: {**v[1], "gradient": ex.gradient}
                                                        for k, v in rows.items() if v[0] in ("svd", "gradcam")}))
    overlays(p, samples, x, upsampled, [r["pred"] for r in per_case])
    ctx.write_text("paper.md", paper_md(ctx.spec, p.m, metrics, ctx, title="SVD-Grad-CAM explanations",
                                        sections=sections(p, table), present_only=True))
    return metrics


def scored(pred, fnet, net, layer, x, sign, y, method: str, kw: dict, bs: int):
    """One method on images ``x`` (explained class ``sign``, score y = σ(Y^c)): the low-resolution maps, the
    upsampled ones, the maps of E = x ⊙ L, y_E, and the Table 2 row (percent) from the averaged terms."""
    dev, size = _device(net), tuple(x.shape[-2:])

    def low_map(xb, sb):
        return cams.compute(method, net, layer, xb.to(dev), sb.to(dev), **kw).cpu()

    lows, maps, maps_e, y_e = [], [], [], []
    for i in range(0, len(x), bs):
        xb, sb = x[i:i + bs], sign[i:i + bs]
        low = low_map(xb, sb)
        lmap = cams.upsample(low, size)
        e = xb * lmap[:, None]
        y_e.append(torch.sigmoid(sb * pred(fnet, e).reshape(-1)))
        maps_e.append(cams.upsample(low_map(e, sb), size))
        lows.append(low)
        maps.append(lmap)
    low, lmap, lmap_e, ye = torch.cat(lows), torch.cat(maps), torch.cat(maps_e), torch.cat(y_e)
    drop = saliency.average_drop(y, ye)
    coh, comp = saliency.coherency(lmap_e, lmap), saliency.complexity(lmap)
    row = {"avg_drop": drop, "avg_increase": saliency.increase_in_confidence(y, ye), "coherency": 100 * coh,
           "complexity": 100 * comp, "adcc": 100 * saliency.adcc(drop, coh, comp)}
    return low, lmap, lmap_e, ye, row


def sections(p, table: dict) -> list[str]:
    tables = paper_data(p.ctx.spec)["tables"]
    ref = {r[0]: r[1:] for t in ("table2", "table1") for r in tables[t]["rows"]}
    head = ["method", "AvgDrop↓", "AvgInc↑", "Coherency↑", "Complexity↓", "ADCC↑", *(f"paper {h}" for h in
                                                                                   tables["table2"]["header"][1:])]
    body = [[name, *[round(v[k], 2) for k in CAM_KEYS], *(ref.get(name) or ("—",) * 5)] for name, v in table.items()]
    ex = p.m.explain
    return [f"## CAM metrics (this run beside Table 2; Table 1 for svd_uv / svd_usv)\n\n"
            f"SVD-Grad-CAM: variant {ex.variant}, n = {ex.rank}{', printed Eq. 7–10' if ex.literal_eq else ''}; "
            f"target layer `{ex.target_layer}`. All values in percent.\n\n" + markdown_table(head, body),
            paper_note(p.ctx.spec, "explain")]


def overlays(p, samples, x, maps: dict, explained: list[str]) -> None:
    n = p.m.explain.overlays
    if not n or not maps:
        return
    names = list(maps)
    base = p.root if p.own else p.root / p.m.explain.split / p.m.dataset.study_type
    for i in sorted(range(len(samples)), key=lambda i: -samples[i].label)[:n]:
        rel = Path(samples[i].path).relative_to(base)
        name = "overlay_" + "_".join(rel.with_suffix("").parts)
        with p.ctx.figure(name, ncols=len(names) + 1, figsize=(2.2 * (len(names) + 1), 2.5), squeeze=False,
                          dpi=90) as (_, axes):
            img = x[i, 0].numpy() / 255.0
            axes[0, 0].imshow(img, cmap="gray", vmin=0, vmax=1)
            axes[0, 0].set_title(f"{p.classes()[samples[i].label]} (maps: {explained[i]})", fontsize=8)
            for ax, m in zip(axes[0, 1:], names, strict=True):
                ax.imshow(img, cmap="gray", vmin=0, vmax=1)
                ax.imshow(maps[m][i].numpy(), cmap="jet", alpha=0.45, vmin=0, vmax=1)
                ax.set_title(m, fontsize=8)
            for ax in axes[0]:
                ax.axis("off")
