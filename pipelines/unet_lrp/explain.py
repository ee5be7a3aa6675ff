"""unet-lrp on a finished train run: ``explain`` writes per validation image the raw relevance
(``maps/<case>_relevance.npy``), its log transform (``maps/<case>_log.npy``, t = ``explain.thresh``, never normalised
first) and Captum's blended heat map of the positive part (``figures/lrp_<case>.png``); ``lrp-stats`` gives max |R|,
conservation and focus with and without the residual fix, as does the LRP check that ends a train run."""

from __future__ import annotations

import math

import numpy as np
import torch

from medrun.errors import UsageError
from medrun.models import lrp_unet as L

from ..report import markdown_table, paper_data, paper_md, paper_note


def relevance(pipe, net, image: np.ndarray, e, fix: bool, case):
    """(input window (C, s, s), object mask, start value, relevance (C, s, s) or a layer's (C', h, w)) for the centre
    crop window; relevance None when the prediction has no object. Runs where the network is, in float32."""
    x = centre_crop(image, pipe.m.dataset.crop)
    device = next(net.parameters()).device
    xt = torch.from_numpy(x)[None].to(device)
    with torch.no_grad():  # the object to explain: the prediction on the window LRP sees
        prob = torch.sigmoid(net.eval()(xt))[0, 0].cpu().numpy()
    try:
        obj = L.select_object(prob, "largest" if e.object == "largest" else int(e.object))
    except ValueError as err:
        raise UsageError(f"{case.image}: {err}", fix="-o explain.object=largest, or a number in that range") from None
    if not obj.any():
        pipe.ctx.log(f"{case.id}: no object predicted; skipped")
        return x, obj, 0.0, None
    m = torch.from_numpy(obj)[None, None].to(device)
    if layer := getattr(e, "layer", None):
        names = L.layer_names(net)
        if layer not in names:
            raise UsageError(f"explain.layer '{layer}' is not a layer of this {pipe.m.model.arch}; valid: "
                             + ", ".join(names), fix="-o explain.layer=NAME with one of these, or drop it to "
                                                     "explain the input")
        r, start = L.layer_relevance(net, xt, m, layer, e.epsilon, fix)
    else:
        r, start = L.relevance(net, xt, m, e.epsilon, fix)
    return x, obj, float(start[0]), r[0].cpu().numpy().astype(np.float64)


def lrp_stats(pipe, net, cases, arrays, e) -> tuple[dict, list[dict]]:
    """The statistics of the input relevance (``explain.layer`` is explain's), with and without the residual fix."""
    e = e.model_copy(update={"layer": None})
    has_res = L.residual_fix(net, on=True) > 0
    L.residual_fix(net, on=False)
    rows = []
    for case, (image, _) in zip(cases, arrays, strict=True):
        _, obj, start, r = relevance(pipe, net, image, e, True, case)
        if r is None:
            rows.append({"case": case.id, "object_px": 0})
            continue
        row = {"case": case.id, **L.relevance_stats(r.sum(axis=0), obj, start, e.dilate_px)}
        if has_res:
            _, _, _, r0 = relevance(pipe, net, image, e, False, case)
            s0 = L.relevance_stats(r0.sum(axis=0), obj, start, e.dilate_px)
        else:
            s0 = row
        row.update({"max_abs_r_nofix": s0["max_abs_r"], "conservation_nofix": s0["conservation"],
                    "fix_ratio": s0["max_abs_r"] / row["max_abs_r"] if row["max_abs_r"] > 0 else math.nan})
        rows.append(row)
    stats = summary(rows)
    stats["residual_units"] = has_res
    pipe.ctx.log(f"LRP: focus {stats['focus']:.3f} vs area share {stats['area_share']:.3f}; max|R| "
                 f"{stats.get('max_abs_r', math.nan):.3g} with the fix, "
                 f"{stats.get('max_abs_r_nofix', math.nan):.3g} without")
    return stats, rows


def lrp_section(pipe, stats: dict, rows: list[dict], title: str) -> str:
    """Fig. 3 (max |R| with and without the fix) beside this run, focus and conservation, and the per-image table."""
    mm, e = pipe.m.model, pipe.m.explain
    cols = [k for k in ("max_abs_r", "max_abs_r_nofix", "fix_ratio", "conservation", "conservation_nofix",
                        "focus", "area_share", "object_px") if any(k in r for r in rows)]
    table = markdown_table(["case", *cols], [[r["case"], *[r.get(k) for k in cols]] for r in rows])
    fig3 = paper_data(pipe.ctx.spec)["tables"]["fig3"]
    paper = markdown_table(fig3["header"], [[name, theirs, _g(stats.get(key))] for name, theirs, key in fig3["rows"]])
    return (f"## {title} ({mm.arch}, {mm.norm} norm, object: {e.object})\n\n" + paper +
            f"\n\nFocus (positive relevance inside the object dilated by {e.dilate_px} px): "
            f"{_g(stats.get('focus'))} against the region's area share {_g(stats.get('area_share'))} "
            f"(focus / area {_g(stats.get('focus_over_area'))}). Conservation Σ R / start value: "
            f"{_g(stats.get('conservation'))}.\n\n" + table)


def _explained(pipe):
    net = pipe.trained_model().eval()
    cases = pipe.splits()["val"]
    n = pipe.m.explain.images
    cases = cases[:n] if n else cases
    return net, cases, pipe.arrays(cases)


def explain(pipe) -> dict:
    """Relevance maps of the chosen object for the validation images: raw .npy, log-scaled .npy, PNG overlays."""
    e, ctx = pipe.m.explain, pipe.ctx
    net, cases, arrays = _explained(pipe)
    rows = []
    for case, (image, _) in zip(cases, arrays, strict=True):
        x, obj, start, r = relevance(pipe, net, image, e, e.residual_fix, case)
        if r is None:
            rows.append({"case": case.id, "object_px": 0})
            continue
        rmap = r.sum(axis=0)
        ctx.write_npy(f"maps/{case.id}_relevance.npy", rmap.astype(np.float32))
        raw = L.relevance_stats(rmap, np.ones_like(rmap, bool), start, 0)
        if rmap.shape != obj.shape:  # a layer's map: spread each value over the pixels it covers (sum kept)
            from skimage.transform import resize

            rmap = resize(rmap, obj.shape, order=0, preserve_range=True, anti_aliasing=False) * rmap.size / obj.size
        scaled = L.log_scale(rmap, e.thresh).astype(np.float32)
        ctx.write_npy(f"maps/{case.id}_log.npy", scaled)
        where = f"at {e.layer}" if e.layer else "at the input"
        ctx.save_figure(relevance_figure(x, scaled, obj, f"{case.id}: LRP-ε {where}, log-scaled (t={e.thresh})"),
                        f"lrp_{case.id}", bbox_inches="tight")
        stats = L.relevance_stats(rmap, obj, start, e.dilate_px)
        stats.update({k: raw[k] for k in ("max_abs_r", "sum_r", "conservation")})
        rows.append({"case": case.id, **stats})
    stats = summary(rows)
    ctx.write_csv("per_case.csv", rows)
    ctx.log(f"explained {stats['n_explained']} of {len(rows)} images; focus {stats['focus']:.3f} "
            f"(area share {stats['area_share']:.3f}); max|R| {stats['max_abs_r']:.3g}")
    _paper(pipe, stats, rows, "relevance maps", "Relevance maps")
    return stats


def stats_stage(pipe) -> dict:
    """``lrp-stats``: max |R|, conservation and focus for every validation image, with and without the fix."""
    net, cases, arrays = _explained(pipe)
    stats, rows = lrp_stats(pipe, net, cases, arrays, pipe.m.explain)
    pipe.ctx.write_csv("per_case.csv", rows)
    _paper(pipe, stats, rows, "statistics", "LRP statistics")
    return stats


def _paper(pipe, stats: dict, rows: list[dict], page: str, section: str) -> None:
    ctx = pipe.ctx
    ctx.write_text("paper.md", paper_md(ctx.spec, pipe.m, stats, ctx, title=f"LRP on U-Nets: {page}",
                                        sections=[lrp_section(pipe, stats, rows, section),
                                                  paper_note(ctx.spec, "comparison")]))


def centre_crop(image: np.ndarray, size: int) -> np.ndarray:
    h, w = image.shape[-2:]
    y, x = (h - size) // 2, (w - size) // 2
    return np.ascontiguousarray(image[..., y:y + size, x:x + size])


def relevance_figure(x: np.ndarray, scaled: np.ndarray, obj: np.ndarray, title: str):
    """Captum ``visualize_image_attr`` blended heat map of the positive log-scaled relevance (5 % outliers clipped)
    over the input, the object outlined; a matplotlib figure."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from captum.attr import visualization as viz

    img = np.moveaxis(x, 0, -1)
    img = np.repeat(img, 3, axis=-1) if img.shape[-1] == 1 else img
    fig, ax = plt.subplots(figsize=(4, 4), dpi=100)
    if np.any(scaled > 0):
        viz.visualize_image_attr(scaled[..., None], img, method="blended_heat_map", sign="positive", outlier_perc=5,
                                 plt_fig_axis=(fig, ax), use_pyplot=False, alpha_overlay=0.5)
    else:
        ax.imshow(img)
    if obj.any() and not obj.all():
        ax.contour(obj, levels=[0.5], colors="cyan", linewidths=0.8)
    ax.set_title(title, fontsize=7)
    ax.set_axis_off()
    return fig


def summary(rows: list[dict]) -> dict:
    """Means (focus, area share, conservation) and medians (max |R|, fix ratio) over explained images."""
    done = [r for r in rows if r.get("object_px", 0) > 0]
    out: dict = {"n_images": len(rows), "n_explained": len(done)}
    for k in ("focus", "area_share", "conservation", "conservation_nofix"):
        vals = np.array([r[k] for r in done if k in r], dtype=float)
        vals = vals[np.isfinite(vals)]
        if len(vals) or k in ("focus", "area_share"):
            out[k] = float(vals.mean()) if len(vals) else math.nan
    for k in ("max_abs_r", "max_abs_r_nofix", "fix_ratio"):
        vals = np.array([r[k] for r in done if k in r], dtype=float)
        if len(vals):
            out[k] = float(np.median(vals))
    out["focus_over_area"] = out["focus"] / out["area_share"] if out.get("area_share") else math.nan
    return out


def _g(v) -> str:
    return "—" if v is None or (isinstance(v, float) and not math.isfinite(v)) else f"{v:.3g}"
