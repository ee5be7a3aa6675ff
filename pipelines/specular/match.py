"""The ``match`` stage: frame pairs (f, f + gap) from the videos, features per image and GC-RANSAC inliers per pair
for the affine-covariant detector and the OpenCV baselines, on raw and filtered (highlights inpainted) frames
(Tables 2–3). With a fixture's homography sidecar, the share of inliers within ``truth_px`` of the true homography.

Choices: pairs start at every ``stride``-th frame (the paper's "10 % of frames" has no rule; 10 by default) and need
f + gap < the frame count; Table 2 is the first pair (the paper does not say which pair it shows); Table 3 averages
features over every frame used and inliers over every pair. SURF (non-free contrib build), SuperPoint and E-SP
(weights) are not run: their rows are quoted from the paper.
"""

from __future__ import annotations

import time

import numpy as np

from medrun.datasets import specular as data

from ..report import markdown_table, paper_md, paper_note, paper_table
from . import features, method
from .config import folders


def _pairs(n: int, gap: int, stride: int, max_pairs: int | None) -> list[tuple[int, int]]:
    out = [(f, f + gap) for f in range(0, n, stride) if f + gap < n]
    return out[:max_pairs] if max_pairs else out


def match_stage(p) -> dict:
    m, cfg, ctx = p.m, p.m.match, p.ctx
    from .pipeline import params

    videos = data.read_videos(folders(m)["videos"])
    videos = videos[: m.dataset.limit] if m.dataset.limit else videos
    prm = params(m)
    pred = ctx.predictor() if "covariant" in cfg.detectors else None
    rows, feat_rows, secs = [], [], {d: [] for d in cfg.detectors}
    figures_left = cfg.figures
    for video in videos:
        limit = cfg.max_pairs * cfg.stride if cfg.max_pairs else None

        def wanted(i, limit=limit):
            starts = i % cfg.stride == 0 or (i >= cfg.gap and (i - cfg.gap) % cfg.stride == 0)
            return starts and (limit is None or i < limit + cfg.gap)

        frames, n, _ = data.read_video(video, wanted)
        hs = data.homographies(video)
        pairs = _pairs(n, cfg.gap, cfg.stride, cfg.max_pairs)
        grays: dict[tuple[int, str], np.ndarray] = {}
        for f in sorted({i for pr in pairs for i in pr}):
            rgb = frames[f]
            if "raw" in cfg.inputs:
                grays[(f, "raw")] = method.intensity(rgb)
            if "filtered" in cfg.inputs:
                sr = method.detect(rgb, prm)["fused"]
                grays[(f, "filtered")] = method.intensity(method.inpaint(rgb, sr, m.inpaint.method, m.inpaint.radius))
        feats = {}
        for (f, inp), g in grays.items():
            for d in cfg.detectors:
                t0 = time.perf_counter()
                feats[(f, inp, d)] = features.extract(g, d, cfg.num_features, cfg.response, pred)
                secs[d].append(time.perf_counter() - t0)
                feat_rows.append({"video": video.stem, "frame": f, "input": inp, "detector": d,
                                  "features": len(feats[(f, inp, d)].xy)})
        for f1, f2 in pairs:
            h = hs[f2] @ np.linalg.inv(hs[f1]) if hs else None
            for inp in cfg.inputs:
                for d in cfg.detectors:
                    a, b = feats[(f1, inp, d)], feats[(f2, inp, d)]
                    p1, p2, inl = features.match(a, b, cfg.ratio, cfg.ransac_threshold, cfg.confidence)
                    err = features.transfer_error(h, p1[inl], p2[inl]) if h is not None else np.zeros(0)
                    rows.append({"video": video.stem, "f1": f1, "f2": f2, "input": inp, "detector": d,
                                 "features_1": len(a.xy), "features_2": len(b.xy), "tentative": len(p1),
                                 "inliers": int(inl.sum()),
                                 "correct_frac": float((err <= cfg.truth_px).mean()) if len(err) else float("nan")})
                    if figures_left > 0 and d == "covariant" and inp == cfg.inputs[-1]:
                        _figure(ctx, f"matches/{video.stem}_{f1}_{f2}", frames[f1], frames[f2], p1, p2, inl, a, d)
            figures_left -= 1
    ctx.write_csv("per_case.csv", rows)
    ctx.write_csv("features.csv", feat_rows)
    ctx.record_splits({"videos": videos})
    metrics = _metrics(rows, feat_rows, secs, cfg)
    t2, t3 = _tables(rows, feat_rows, cfg)
    sections = ["## This run, Table 2 layout (the first pair; features of its first frame / inliers)", t2,
                "## This run, Table 3 layout (mean features per image, mean inliers per pair)", t3,
                paper_table(ctx.spec, "table2"), paper_table(ctx.spec, "table3"), paper_note(ctx.spec, "tables23")]
    expect = {"covariant_raw_feat_per_img": 1125.7, "covariant_raw_inliers": 281.3, "sift_raw_feat_per_img": 825.7,
              "sift_raw_inliers": 151.3, "orb_raw_feat_per_img": 361.3, "orb_raw_inliers": 137.2}
    ctx.write_text("paper.md", paper_md(ctx.spec, m, metrics, ctx, title="Covariant features and matching",
                                        table="Table 3", setting="Hyper-Kvasir BBPS-2-3, pairs (f, f+25)",
                                        expect=expect, keys=[*expect, *[k for k in metrics if k not in expect]],
                                        present_only=True, sections=sections))
    return metrics


def _metrics(rows, feat_rows, secs, cfg) -> dict:
    out: dict = {"n_pairs": len({(r["video"], r["f1"]) for r in rows}),
                 "n_images": len({(r["video"], r["frame"]) for r in feat_rows})}
    for d in cfg.detectors:
        if secs[d]:
            out[f"{d}_frames_per_s"] = len(secs[d]) / max(1e-9, sum(secs[d]))
        for inp in cfg.inputs:
            fr = [r["features"] for r in feat_rows if r["detector"] == d and r["input"] == inp]
            pr = [r for r in rows if r["detector"] == d and r["input"] == inp]
            if not fr:
                continue
            out[f"{d}_{inp}_feat_per_img"] = float(np.mean(fr))
            out[f"{d}_{inp}_inliers"] = float(np.mean([r["inliers"] for r in pr])) if pr else float("nan")
            out[f"{d}_{inp}_min_inliers"] = min((r["inliers"] for r in pr), default=0)
            cf = [r["correct_frac"] for r in pr if np.isfinite(r["correct_frac"])]
            if cf:
                out[f"{d}_{inp}_min_correct_frac"] = float(min(cf))
                out[f"{d}_{inp}_mean_correct_frac"] = float(np.mean(cf))
    if "covariant" in cfg.detectors:
        cov = [r for r in rows if r["detector"] == "covariant"]
        out["covariant_min_inliers"] = min((r["inliers"] for r in cov), default=0)
        cf = [r["correct_frac"] for r in cov if np.isfinite(r["correct_frac"])]
        if cf:
            out["covariant_min_correct_frac"] = float(min(cf))
        if "sift" in cfg.detectors:
            ratios = [out[f"covariant_{i}_feat_per_img"] / max(1e-9, out[f"sift_{i}_feat_per_img"])
                      for i in cfg.inputs]
            out["covariant_over_sift_features"] = float(min(ratios))
    return out


def _tables(rows, feat_rows, cfg) -> tuple[str, str]:
    first = rows[0] if rows else None
    t2 = []
    for d in cfg.detectors:
        cells = [d]
        for inp in ("raw", "filtered"):
            r = next((r for r in rows if first and r["video"] == first["video"] and r["f1"] == first["f1"]
                      and r["detector"] == d and r["input"] == inp), None)
            cells.append(f"{r['features_1']} / {r['inliers']}" if r else "—")
        t2.append(cells)
    t3 = []
    for d in cfg.detectors:
        for inp in cfg.inputs:
            fr = [r["features"] for r in feat_rows if r["detector"] == d and r["input"] == inp]
            pr = [r["inliers"] for r in rows if r["detector"] == d and r["input"] == inp]
            t3.append([d, inp, float(np.mean(fr)) if fr else None, float(np.mean(pr)) if pr else None])
    return (markdown_table(["detector", "specular image", "filtered image"], t2),
            markdown_table(["detector", "frames", "Feat/Img", "F Inl."], t3))


def _figure(ctx, name, im1, im2, p1, p2, inl, feats, detector) -> None:
    from matplotlib.patches import Ellipse

    with ctx.figure(name, figsize=(9, 3.6)) as (fig, ax):
        w = im1.shape[1]
        ax.imshow(np.concatenate([im1, im2], 1))
        for (x1, y1), (x2, y2) in zip(p1[inl][:300], p2[inl][:300], strict=True):
            ax.plot([x1, x2 + w], [y1, y2], "-", color="lime", lw=0.4)
        if feats.lafs is not None:  # a few affine frames as ellipses
            for laf in feats.lafs[:: max(1, len(feats.lafs) // 150)]:
                a = laf[:, :2]
                u, s, vt = np.linalg.svd(a)
                ang = np.degrees(np.arctan2(u[1, 0], u[0, 0]))
                ax.add_patch(Ellipse(laf[:, 2], 2 * s[0], 2 * s[1], angle=ang, fill=False, color="yellow", lw=0.4))
        ax.set_title(f"{detector}: {int(inl.sum())} GC-RANSAC inliers of {len(p1)} ratio-test matches", fontsize=9)
        ax.axis("off")
