"""sepsis-synth ``generate``: fit one generator on the training split and draw ``generate.sets`` class-balanced sets.

Writes ``synthetic.npz`` (standardised rows ``x_set<k>``, labels ``y_set<k>``, the feature names: what train, mix and
privacy read), ``synthetic/set<k>.csv`` (the same rows in the features' own units, for people), ``sets.csv`` (rows,
candidates drawn and the KDE-KNN acceptance per set and class), ``per_case.csv`` (set 0, one row per synthetic
patient: its distance to the closest real training row and that row's patient id), and figures: every feature's
marginal by class (real vs synthetic), the paper's Fig. 2 (four features in the internal, external and synthetic
data, z-scored) and the correlation matrices. TabDDPM also writes its denoiser (``checkpoints/model.safetensors``)
and learning curves. Each set k is drawn with a generator seeded (seed, k); TabDDPM draws all sets in one
batch of reverse diffusion seeded (seed, 0), which needs a thousand denoiser calls instead of a thousand per set.

Metrics: the rows per class (the card's check: exactly ``n_per_class``), the acceptance rates, seconds to fit and to
sample (wall clock; ``cpu_seconds`` is the process time of both), rows per second of sampling, and how close set 0
is to the real rows: mean two-sample KS statistic over the features, mean absolute difference of the correlation
matrices, and DCR (synthetic → real, standardised space).
"""

from __future__ import annotations

import time

import numpy as np

from medrun.metrics.privacy import dcr

from .. import training
from ..report import paper_md
from . import generators as gen

FIG2 = ("lactate", "heart_rate", "respiratory_rate", "leukocytes", "temperature", "thrombocytes")


def draw(p, method: str, x, y, k: int, fitted: dict):
    """Set k of ``method`` (fitted state in ``fitted``: TabDDPM's network and transformer)."""
    g = p.m.generate
    seed = int(np.random.SeedSequence([p.m.seed, k]).generate_state(1)[0])
    rng = np.random.default_rng(seed)
    if method == "kdeknn":
        return gen.sample_kdeknn(x, y, g.n_per_class, rng, k=g.knn_k, bandwidth=g.bandwidth, batch=g.draw_batch,
                                 max_draws=g.max_draws)
    if method == "kde":
        return gen.sample_kde(x, y, g.n_per_class, rng, g.bandwidth)
    if method == "smote":
        return gen.sample_smote(x, y, g.n_per_class, seed, k=g.smote_k)
    if k not in fitted.setdefault("sets", {}):  # TabDDPM samples every set in one batch, seeded (seed, 0)
        drawn = gen.sample_tabddpm(fitted["pred"], fitted["net"], fitted["qt"], g.n_per_class, x.shape[1], g.tabddpm,
                                   seed, sets=g.sets)
        fitted["sets"] = dict(enumerate(drawn))
    return fitted["sets"][k]


def generate(p) -> dict:
    from medrun.models.tabddpm import MLPDiffusion

    g, c, ctx = p.m.generate, p.cohort, p.ctx
    x, y = c.z(c.train.x), c.train.y
    fitted, fit_seconds, extra = {}, 0.0, {}
    cpu0 = time.process_time()
    if g.method == "tabddpm":
        t = g.tabddpm
        net = MLPDiffusion(x.shape[1], 2, t.layers, t.dim_t, t.dropout)
        ctx.log(f"TabDDPM: {t.steps} steps, T {t.timesteps}, MLP {'×'.join(map(str, t.layers))}, "
                f"{sum(q.numel() for q in net.parameters()):,} parameters")
        net, qt, fit_seconds = gen.fit_tabddpm(ctx, net, x, y, t, p.m.seed)
        training.save_weights(net, ctx.path / "checkpoints" / "model.safetensors",
                              {"pipeline": "sepsis-synth", "features": ",".join(c.features)})
        ctx.learning_curves()
        fitted = {"net": net, "qt": qt, "pred": ctx.predictor()}
        extra = training.count_params(net)
    sets, stats = {}, []
    t0 = time.perf_counter()
    for k in range(g.sets):
        xs, ys, st = draw(p, g.method, x, y, k, fitted)
        sets[f"x_set{k}"], sets[f"y_set{k}"] = xs, ys
        raw = c.scaler.inverse_transform(xs)
        ctx.write_csv(f"synthetic/set{k}.csv", [{**dict(zip(c.features, map(float, r), strict=True)), "sepsis": int(v)}
                                               for r, v in zip(raw, ys, strict=True)])
        for cls in (0, 1):
            n = int((ys == cls).sum())
            stats.append({"set": k, "sepsis": cls, "rows": n, "drawn": st.get(f"drawn_{cls}"),
                          "acceptance": st.get(f"acceptance_{cls}", 1.0), "sample_seconds": st["sample_seconds"]})
        ctx.log(f"set {k}: {int((ys == 0).sum())} + {int((ys == 1).sum())} rows in {st['sample_seconds']:.2f} s"
                + (f" (KDE-KNN kept {st['acceptance_0']:.1%} / {st['acceptance_1']:.1%} of the candidates)"
                   if "acceptance_0" in st else ""))
    sample_seconds = time.perf_counter() - t0
    cpu_seconds = time.process_time() - cpu0  # fit + sampling, all threads (wall time varies with the load)
    ctx.write_npz("synthetic.npz", features=np.array(c.features), **sets)
    ctx.write_csv("sets.csv", stats)

    xs0, ys0 = sets["x_set0"], sets["y_set0"]
    d0 = dcr(xs0, x, return_all=True)
    nearest = _nearest(xs0, x)
    ctx.write_csv("per_case.csv", [{"set": 0, "row": i, "sepsis": int(ys0[i]), "dcr": float(d0[i]),
                                    "closest_real_patient": c.train.ids[nearest[i]]} for i in range(len(ys0))])
    figures(p, x, y, xs0, ys0)
    rows = [s["rows"] for s in stats]
    n_rows = g.sets * 2 * g.n_per_class
    metrics = {
        "method": g.method, "n_per_class": g.n_per_class, "sets": g.sets,
        "rows_min": min(rows), "rows_max": max(rows),
        "rows_sepsis_min": min(s["rows"] for s in stats if s["sepsis"] == 1),
        "rows_non_sepsis_min": min(s["rows"] for s in stats if s["sepsis"] == 0),
        "acceptance_sepsis": float(np.mean([s["acceptance"] for s in stats if s["sepsis"] == 1])),
        "acceptance_non_sepsis": float(np.mean([s["acceptance"] for s in stats if s["sepsis"] == 0])),
        "fit_seconds": round(fit_seconds, 3), "sample_seconds": round(sample_seconds, 3),
        "seconds": round(fit_seconds + sample_seconds, 3), "rows_per_second": n_rows / max(sample_seconds, 1e-9),
        "cpu_seconds": round(cpu_seconds, 3),
        "dcr": float(d0.mean()), "exact_copies": int((d0 < 1e-9).sum()), **resemblance(x, xs0),
        "train_rows": len(y), "train_sepsis_share": float(y.mean()), **extra,
    }
    paper_dcr = p.paper_numbers().get("dcr", {}).get(g.method)
    ctx.write_text("paper.md", paper_md(
        ctx.spec, p.m, metrics, ctx, title=f"synthetic data by {g.method}", table="Sect. 3.5 / Exp. 4",
        setting=f"{g.sets} sets of {g.n_per_class} + {g.n_per_class} rows from the training split "
                f"({len(y)} rows, {y.mean():.1%} sepsis); the paper: 540 + 540",
        expect={"rows_min": float(g.n_per_class), "rows_max": float(g.n_per_class),
                **({"dcr": paper_dcr} if paper_dcr else {})},
        keys=["rows_min", "rows_max", "acceptance_sepsis", "acceptance_non_sepsis", "dcr", "ks_mean", "corr_mae",
              "fit_seconds", "sample_seconds", "rows_per_second"]))
    return metrics


def _nearest(a, b) -> np.ndarray:
    from sklearn.neighbors import NearestNeighbors

    return NearestNeighbors(n_neighbors=1).fit(b).kneighbors(a, return_distance=False)[:, 0]


def resemblance(real, syn) -> dict:
    """Mean two-sample KS statistic over the features and mean |Δ| of the off-diagonal correlations."""
    from scipy.stats import ks_2samp

    ks = [ks_2samp(real[:, j], syn[:, j]).statistic for j in range(real.shape[1])]
    cr, cs = np.corrcoef(real, rowvar=False), np.corrcoef(syn, rowvar=False)
    off = ~np.eye(len(cr), dtype=bool)
    diff = np.abs(np.nan_to_num(cr) - np.nan_to_num(cs))[off]
    return {"ks_mean": float(np.mean(ks)), "corr_mae": float(diff.mean()) if diff.size else 0.0}


def figures(p, x, y, xs, ys) -> None:
    c, ctx, method = p.cohort, p.ctx, p.m.generate.method
    feats = c.features
    ncols = 6
    nrows = -(-len(feats) // ncols)
    # 27 small panels: histograms as stairs and a fixed layout (tight_layout over 30 axes costs seconds)
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(nrows, ncols, figsize=(2.4 * ncols, 2.0 * nrows), squeeze=False)
    for j, ax in enumerate(axes.flat):
        if j >= len(feats):
            ax.axis("off")
            continue
        lo, hi = np.percentile(np.concatenate([x[:, j], xs[:, j]]), [0.5, 99.5])
        bins = np.linspace(lo, hi + 1e-9, 30)
        for cls, colour in ((0, "tab:blue"), (1, "tab:red")):
            for v, ls in ((x[y == cls, j], "-"), (xs[ys == cls, j], "--")):
                ax.stairs(np.histogram(v, bins, density=True)[0], bins, color=colour, ls=ls, lw=1.2)
        ax.set_title(feats[j], fontsize=8)
        ax.tick_params(labelsize=6)
        ax.set_yticks([])
    fig.suptitle(f"{method}: real (solid) vs synthetic (dashed), non-sepsis blue, sepsis red (z-scores)")
    fig.subplots_adjust(left=0.02, right=0.99, bottom=0.04, top=1 - 0.6 / (2.0 * nrows), hspace=0.5, wspace=0.12)
    ctx.save_figure(fig, "marginals")
    shown = [f for f in FIG2 if f in feats][:4] or feats[:4]
    ext = c.z(c.external.x)
    with ctx.figure("fig2_distributions", ncols=len(shown), figsize=(3.4 * len(shown), 3.0),
                    squeeze=False) as (fig, axes):
        for ax, f in zip(axes[0], shown, strict=True):
            j = feats.index(f)
            bins = np.linspace(*np.percentile(np.concatenate([x[:, j], ext[:, j], xs[:, j]]), [0.5, 99.5]), 30)
            ax.hist(ext[:, j], bins, density=True, histtype="step", color="black", lw=1.4, label="external")
            ax.hist(x[:, j], bins, density=True, histtype="step", color="grey", lw=1.4, label="internal (train)")
            ax.hist(xs[:, j], bins, density=True, histtype="step", color="black", ls="--", lw=1.2, label=method)
            ax.set_title(f, fontsize=9)
        axes[0][0].legend(fontsize=7)
        fig.suptitle("Fig. 2: feature distributions, z-scored with the training split")
    cr, cs = np.corrcoef(x, rowvar=False), np.corrcoef(xs, rowvar=False)
    with ctx.figure("correlations", ncols=3, figsize=(13, 4.2)) as (fig, axes):
        titles = ("real (training split)", method, "synthetic − real")
        for ax, m, t in zip(axes, (cr, cs, cs - cr), titles, strict=True):
            im = ax.imshow(np.nan_to_num(m), vmin=-1, vmax=1, cmap="RdBu_r")
            ax.set_title(t, fontsize=9)
            ax.set_xticks([])
            ax.set_yticks([])
        fig.colorbar(im, ax=axes[-1], shrink=0.8, use_gridspec=True)
