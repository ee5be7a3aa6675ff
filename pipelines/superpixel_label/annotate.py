"""superpixel-label's training-free stages: ``annotate`` (superpixels + simulated sparse labels + fills → pseudo-GT
PNGs, 0 background / 1 lesion / 255 ignore, with figures) and ``gap-stats`` (Tables 2–3: N = M + E_f + E_b per
training image, per superpixel method and fill)."""

from __future__ import annotations

import time

import numpy as np

from ..report import markdown_table, paper_md, paper_note, paper_table
from . import method

GAP_FILLS = ("dist", "rw")


def _images(pipe, which: str):
    splits = pipe.splits()
    if which == "train":
        return splits["train"]
    if which == "trainval":
        from ..tasks.segmentation import Cases

        tr, va = splits["train"], splits["val"]
        return Cases(tr.ids + va.ids, tr.files + va.files, np.concatenate([tr.images, va.images]),
                     np.concatenate([tr.masks, va.masks]))
    from ..tasks.segmentation import Cases

    parts = list(splits.values())
    return Cases([i for c in parts for i in c.ids], [f for c in parts for f in c.files],
                 np.concatenate([c.images for c in parts]), np.concatenate([c.masks for c in parts]))


def _fill_rgb(image: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Labels over a dimmed image: lesion red, background blue, gap (255) yellow."""
    base = image if image.ndim == 3 else np.repeat(image[..., None], 3, -1)
    out = (base.astype(np.float32) * 0.5).astype(np.uint8)
    out[labels == 1] = (out[labels == 1] * 0.4 + np.array([255, 60, 60]) * 0.6).astype(np.uint8)
    out[labels == 0] = (out[labels == 0] * 0.4 + np.array([60, 60, 255]) * 0.6).astype(np.uint8)
    out[labels == method.IGNORE] = (255, 230, 0)
    return out


def _figure(ctx, name: str, image, gt, result: dict, fills) -> None:
    from skimage.segmentation import mark_boundaries

    from ..tasks.segmentation import _gray

    panels = [("superpixels", mark_boundaries(_gray(image), result["superpixels"], color=(1, 1, 0))),
              ("sparse labels (yellow: gap)", _fill_rgb(image, result["sparse"]))]
    panels += [(f"{f}", _fill_rgb(image, result[f])) for f in fills if f != "nofill"]
    with ctx.figure(name, ncols=len(panels), figsize=(2.6 * len(panels), 2.9)) as (fig, axes):
        for ax, (title, im) in zip(np.atleast_1d(axes), panels, strict=True):
            ax.imshow(im, cmap=None if np.ndim(im) == 3 else "gray")
            if np.any(gt) and not np.all(gt):
                ax.contour(gt > 0, levels=[0.5], colors="lime", linewidths=0.8)
            ax.set_title(title, fontsize=8)
            ax.axis("off")


def annotate(pipe) -> dict:
    from .pipeline import params

    m, ctx = pipe.m, pipe.ctx
    cfg, p = m.annotate, params(m)
    cases = _images(pipe, cfg.split)
    rows, metrics = [], {"n_images": len(cases)}
    for meth in dict.fromkeys(cfg.methods):
        t0 = time.perf_counter()
        for i, (cid, img, gt) in enumerate(zip(cases.ids, cases.images, cases.masks, strict=True)):
            r = method.annotate(img, gt, meth, cfg.fills, p)
            sparse = r["sparse"]
            kinds = np.bincount(np.where(sparse == method.IGNORE, 2, sparse).ravel(), minlength=3)
            first = np.unique(r["superpixels"].ravel(), return_index=True)[1]
            sp_kind = sparse.ravel()[first].tolist()  # one label per superpixel
            row = {"case": cid, "method": meth, "superpixels": len(sp_kind), "type_a": sp_kind.count(1),
                   "type_b": sp_kind.count(0), "type_c": sp_kind.count(method.IGNORE),
                   "fg_px": int(kinds[1]), "bg_px": int(kinds[0]), "gap_px": int(kinds[2]),
                   "labelled_fraction": float(1 - kinds[2] / sparse.size)}
            for f in cfg.fills:
                if cfg.write_png:
                    ctx.write_png(f"pseudo/{meth}/{f}/{cid}.png", r[f].astype(np.uint8))
                if f != "nofill":
                    row[f"{f}_M_over_N"] = method.gap_stats(sparse, r[f], gt)["M_over_N"]
            rows.append(row)
            if i < cfg.figures:
                _figure(ctx, f"fills/{meth}_{cid}", img, gt, r, cfg.fills)
        secs = time.perf_counter() - t0
        mine = [r for r in rows if r["method"] == meth]
        metrics[f"{meth}_images_per_s"] = len(cases) / secs if secs > 0 else float("nan")
        metrics[f"{meth}_superpixels"] = float(np.mean([r["superpixels"] for r in mine]))
        metrics[f"{meth}_labelled_fraction"] = float(np.mean([r["labelled_fraction"] for r in mine]))
    if "snic" in cfg.methods:
        metrics["snic_backend"] = method.snic_backend(p)
    ctx.write_csv("per_case.csv", rows)
    ctx.write_text("paper.md", paper_md(ctx.spec, m, metrics, ctx, keys=[k for k in metrics if k != "snic_backend"],
                                        expect={}, table="Method (labeling scheme)",
                                        setting="the simulated annotation itself; the paper has no table of it",
                                        sections=[
        "Pseudo-GT PNGs: `pseudo/<method>/<fill>/<case>.png` with 0 background, 1 lesion, 255 ignore (the gap, "
        "nofill only). Figures: `figures/fills/` (superpixels, sparse labels, each fill; green: the original GT)."]))
    return metrics


def gap_stats(pipe) -> dict:
    """Tables 2–3: per training image and method, N gap pixels, M correctly filled, E_f, E_b, for dist and rw."""
    from .pipeline import params

    m, ctx = pipe.m, pipe.ctx
    p = params(m)
    cases = pipe.splits()["train"]
    rows = []
    for meth in dict.fromkeys(m.gap_stats.methods):
        for cid, img, gt in zip(cases.ids, cases.images, cases.masks, strict=True):
            r = method.annotate(img, gt, meth, GAP_FILLS, p)
            for f in GAP_FILLS:
                s = method.gap_stats(r["sparse"], r[f], gt)
                rows.append({"case": cid, "method": meth, "fill": f, **s,
                             "identity_holds": int(s["N"] == s["M"] + s["E_f"] + s["E_b"])})
    ctx.write_csv("per_case.csv", rows)
    metrics: dict = {"n_images": len(cases), "identity_violations": sum(1 - r["identity_holds"] for r in rows)}
    table, ours = [], []
    for meth in dict.fromkeys(m.gap_stats.methods):
        for f in GAP_FILLS:
            mine = [r for r in rows if r["method"] == meth and r["fill"] == f]
            mean = {k: float(np.mean([r[k] for r in mine])) for k in ("N", "M", "E_b", "E_f")}
            ratio = mean["M"] / mean["N"] if mean["N"] else 1.0
            metrics[f"{meth}_{f}_m_over_n"] = ratio
            metrics[f"{meth}_{f}_mean_image_m_over_n"] = float(np.mean([r["M_over_N"] for r in mine]))
            for k, v in mean.items():
                metrics[f"{meth}_{f}_{k}"] = v
            table.append([meth, f, mean["N"], mean["M"], mean["E_b"], mean["E_f"], f"{100 * ratio:.2f}%"])
            ours.append({"method": meth, "fill": f, **mean, "M_over_N": ratio})
    ctx.write_csv("table2.csv", ours)
    first = m.gap_stats.methods[0]
    samples = [r for r in rows if r["method"] == first and r["fill"] == "dist"][: m.gap_stats.samples]
    t3 = markdown_table(["case", "N", "M", "E_b", "E_f", "M/N"],
                        [[r["case"], r["N"], r["M"], r["E_b"], r["E_f"], f"{100 * r['M_over_N']:.2f}%"]
                         for r in samples])
    _bars(ctx, ours)
    if "snic" in m.gap_stats.methods:
        metrics["snic_backend"] = method.snic_backend(p)
    key = f"{first}_dist_m_over_n"
    expect = _paper_ratio(ctx.spec, m.dataset.name)
    sections = [f"## This run: gap statistics (mean per training image, {len(cases)} images; M/N = mean M / mean N)",
                markdown_table(["method", "fill", "N", "M", "E_b", "E_f", "M/N"], table),
                f"Identity N = M + E_f + E_b violated in {metrics['identity_violations']} of {len(rows)} "
                "(image, method, fill) rows.",
                f"## This run: Table 3 (Dist_fill, {first}, first {len(samples)} training images)", t3,
                paper_table(ctx.spec, "table2"), paper_table(ctx.spec, "table3"), paper_note(ctx.spec, "gap_stats")]
    ctx.write_text("paper.md", paper_md(ctx.spec, m, metrics, ctx, table="Table 2",
                                        setting=f"{m.dataset.name}: SLIC gap statistics, mean over training images",
                                        expect=expect, keys=[k for k in ("slic_dist_m_over_n", "slic_rw_m_over_n")
                                                             if k in metrics] or [key], sections=sections))
    return metrics


def _paper_ratio(spec, dataset: str) -> dict:
    from ..report import paper_data

    t = paper_data(spec)["tables"]["table2"]
    name = {"isic2018": "skin", "cxr": "chest", "busi": "breast"}[dataset]
    out = {}
    for row in t["rows"]:
        if row[0] == name:
            out[f"slic_{row[1]}_m_over_n"] = float(str(row[-1]).rstrip("%")) / 100
    return out


def _bars(ctx, ours: list[dict]) -> None:
    with ctx.figure("gap_stats", figsize=(max(4, 1.3 * len(ours)), 3.2)) as (fig, ax):
        x = np.arange(len(ours))
        bottom = np.zeros(len(ours))
        for k, colour in (("M", "tab:green"), ("E_f", "tab:orange"), ("E_b", "tab:red")):
            vals = np.array([o[k] for o in ours])
            ax.bar(x, vals, 0.6, bottom=bottom, label=k, color=colour)
            bottom += vals
        ax.set_xticks(x, [f"{o['method']}\n{o['fill']}" for o in ours], fontsize=8)
        ax.set_ylabel("gap pixels per image")
        ax.set_title("N = M + E_f + E_b", fontsize=9)
        ax.legend(fontsize=8)
