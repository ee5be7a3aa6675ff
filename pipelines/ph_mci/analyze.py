"""ph-mci's ``topo`` (every subject's diagrams and PR matrices, written into the run) and ``analyze`` (Wilcoxon
P-plots, PS matrices and persistence-diagram figures of a finished topo run's features)."""

from __future__ import annotations

import io

import numpy as np

from medrun.datasets import adni_rsfmri as ds
from medrun.errors import UsageError

from ..report import markdown_table, paper_md, paper_note
from . import topo
from .config import CLASSES


def topo_stage(p) -> dict:
    classes, nets = p.classes_present(), list(p.m.dataset.networks)
    series = ds.list_series(p.root(), classes, nets)
    subjects = {(s.cls, s.subject) for s in series}
    p.ctx.log(f"topo: {len(subjects)} subjects ({', '.join(classes)}) × networks {', '.join(nets)}: {len(series)} CSVs")
    paths, stats = p.topology(series)
    rows, dropped, example = [], 0, {}
    for s in series:
        path = paths[f"{s.cls}/{s.network}/{s.subject}"]
        t = topo.load(path)
        dropped += t.dropped
        rows.append({"class": s.cls, "network": s.network, "subject": s.subject, "csv": str(s.path),
                     "cache": path.name, "dropped": int(t.dropped)})
        if not t.dropped:
            for k in range(t.pr.shape[0]):
                p.ctx.write_text(f"features/{s.network}/{s.cls}/{s.subject}_h{k}.csv", _csv(t.pr[k]))
            if s.network == nets[0] and s.cls not in example:
                example[s.cls] = (s, t)
    p.ctx.write_csv("features/index.csv", rows)
    if example:
        p.ctx.save_figure(diagram_figure(example, 0), "persistence_diagrams")
    computed = stats["computed"]
    metrics = {"subjects": len(subjects), "csvs": len(series), "dropped": dropped, "cached": stats["cached"],
               "computed": computed, "seconds": round(stats["seconds"], 3),
               "secs_per_csv_computed": round(stats["compute_seconds"] / computed, 4) if computed else None,
               "workers": p.m.ph.workers, "cache_dir": str(p.cache_dir())}
    section = (f"## Topology\n\nClasses {', '.join(classes)}; networks {', '.join(nets)}. {metrics['csvs']} subject "
               f"CSVs: {computed} computed, {metrics['cached']} from the cache (`{metrics['cache_dir']}`), {dropped} "
               f"dropped (an exact zero). PR matrices: `features/<NET>/<CLASS>/<subject>_h<k>.csv`.\n\n"
               + paper_note(p.ctx.spec, "topology"))
    p.ctx.write_text("paper.md", paper_md(p.ctx.spec, p.m, metrics, p.ctx, title="PH-MCI topology", expect={},
                                          keys=["csvs", "computed", "cached", "dropped", "seconds",
                                                "secs_per_csv_computed"],
                                          sections=[section, paper_note(p.ctx.spec, "comparison")]))
    return metrics


def analyze_stage(p) -> dict:
    import yaml
    from scipy.stats import ranksums

    parent_ph = yaml.safe_load(p.ctx.parent_file("manifest.yaml").read_text()).get("ph")
    if {k: v for k, v in (parent_ph or {}).items() if k != "workers"} != p.m.ph.model_dump(exclude={"workers"}):
        raise UsageError(f"topo run {p.ctx.parent.path} used other ph settings than this manifest",
                         fix="analyze with the same ph section, or pass the matching --run")
    a, present = p.m.analyze, p.classes_present()
    comps = [c for c in a.comparisons if all(x in present for x in c)]
    if not comps:
        raise UsageError(f"none of analyze.comparisons has both class folders under {p.root()} (present: "
                         f"{', '.join(present)})",
                         fix=f"list pairs of present classes in analyze.comparisons, e.g. {present[0]} with "
                             f"{present[-1]}")
    nets = list(p.m.dataset.networks)
    classes = sorted({c for comp in comps for c in comp}, key=CLASSES.index)
    paths, stats = p.topology(ds.list_series(p.root(), classes, nets))
    loaded = {key: topo.load(path) for key, path in paths.items()}
    rows, summary = [], []
    for net in nets:
        for k in range(p.m.ph.max_dim + 1):
            for comp in comps:
                groups = [np.stack([t.pr[k] for key, t in loaded.items()
                                    if key.startswith(f"{c}/{net}/") and not t.dropped]) for c in comp]
                n = groups[0].shape[1]
                iu = np.triu_indices(n, 1)
                _, pv = ranksums(groups[0][:, iu[0], iu[1]], groups[1][:, iu[0], iu[1]], axis=0)
                pmap = np.ones((n, n))
                pmap[iu] = pv
                pmap[iu[1], iu[0]] = pv
                name = f"{comp[0]}-{comp[1]}_{net}_h{k}"
                p.ctx.write_text(f"analyze/pvalues_{name}.csv", _csv(pmap))
                with p.ctx.figure(f"pplot_{name}", figsize=(5, 4.4)) as (fig, ax):
                    pplot(fig, ax, pmap, a.alpha, f"{comp[0]} vs {comp[1]}, {net}, H{k}")
                sig = np.flatnonzero(pv < a.alpha)
                for j in sig:
                    i1, i2 = int(iu[0][j]), int(iu[1][j])
                    rows.append({"comparison": f"{comp[0]}-{comp[1]}", "network": net, "dim": k, "roi_i": i1 + 1,
                                 "roi_j": i2 + 1, "p": float(pv[j]),
                                 f"mean_{comp[0]}": float(groups[0][:, i1, i2].mean()),
                                 f"mean_{comp[1]}": float(groups[1][:, i1, i2].mean())})
                summary.append([f"{comp[0]} vs {comp[1]}", net, f"H{k}", len(groups[0]), len(groups[1]), len(pv),
                                len(sig), float(np.nanmin(pv)) if len(pv) else None])
    p.ctx.write_csv("significant_pairs.csv", rows, digits=None)
    # persistence diagrams and the PS matrices of a few ROIs of task.network
    tn = p.m.task.network if p.m.task.network in nets else nets[0]
    example = {}
    for key, t in loaded.items():
        c, net, _ = key.split("/")
        if net == tn and c not in example and not t.dropped:
            example[c] = (key, t)
    for r in a.ps_rois:
        if not 1 <= r <= ds.NETWORKS[tn]:
            raise UsageError(f"analyze.ps_rois has ROI {r}, but network {tn} has ROIs 1..{ds.NETWORKS[tn]}",
                             fix="list 1-based ROI numbers of task.network")
        if example:
            p.ctx.save_figure(diagram_figure(example, r - 1), f"persistence_diagrams_{tn}_roi{r}")
        keys = sorted(k for k, t in loaded.items() if k.split("/")[1] == tn and not t.dropped)
        ids = [f"{key.split('/')[0]}/{key.split('/')[2]}" for key in keys]
        for k in range(p.m.ph.max_dim + 1):
            ps = _pairwise([loaded[key].diagrams[k][r - 1] for key in keys], p.m.ph.order, p.m.ph.workers)
            p.ctx.write_text(f"analyze/ps_{tn}_roi{r}_h{k}.csv", _csv(ps, header=ids))
    metrics = {"comparisons": ["-".join(c) for c in comps], "tests": int(sum(r[5] for r in summary)),
               "significant": len(rows), "alpha": a.alpha, "cached": stats["cached"], "computed": stats["computed"],
               "by_setting": {f"{r[0]} {r[1]} {r[2]}": r[6] for r in summary}}
    table = markdown_table(["comparison", "network", "dim", "n A", "n B", "ROI pairs", f"p < {a.alpha}", "min p"],
                           summary)
    p.ctx.write_text("paper.md", paper_md(p.ctx.spec, p.m, metrics, p.ctx, title="PH-MCI group statistics", expect={},
                                          keys=["tests", "significant", "alpha"],
                                          sections=["## Wilcoxon rank-sum per ROI pair (uncorrected, as the paper)\n\n"
                                                    + table, paper_note(p.ctx.spec, "comparison")]))
    return metrics


def _pairwise(diagrams: list[np.ndarray], order: float, workers: int) -> np.ndarray:
    """Subject × subject distance matrix (the PS matrix), rows spread over ``workers`` processes."""
    n = len(diagrams)
    if workers > 1 and n > 2:
        from joblib import Parallel, delayed

        parts = Parallel(n_jobs=workers)(delayed(topo.cross_distances)([diagrams[i]], diagrams[i + 1:], order)
                                         for i in range(n - 1))
        out = np.zeros((n, n))
        for i, part in enumerate(parts):
            out[i, i + 1:] = part[0]
        return out + out.T
    return topo.distance_matrix(diagrams, order)


def _csv(m: np.ndarray, header: list[str] | None = None) -> str:
    buf = io.StringIO()
    if header:
        buf.write(",".join(header) + "\n")
    np.savetxt(buf, m, delimiter=",", fmt="%.8g")
    return buf.getvalue()


def diagram_figure(example: dict, roi: int):
    """Persistence diagrams (H0–H2) of one ROI, one subject per class: ``example`` maps class → (id, Topology)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(example), figsize=(4.2 * len(example), 4), squeeze=False)
    for ax, (cls, (sid, t)) in zip(axes[0], example.items(), strict=True):
        hi = 0.0
        for k, dg in enumerate(t.diagrams):
            d = dg[roi]
            if len(d):
                ax.scatter(d[:, 0], d[:, 1], s=10, label=f"H{k} ({len(d)})")
                hi = max(hi, float(d.max()))
        ax.plot([0, hi or 1], [0, hi or 1], "k--", lw=0.8)
        ax.set_xlabel("birth")
        ax.set_ylabel("death")
        ax.set_title(f"{cls}: {getattr(sid, 'subject', sid)}, ROI {roi + 1}", fontsize=9)
        ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def pplot(fig, ax, pmap: np.ndarray, alpha: float, title: str) -> None:
    im = ax.imshow(-np.log10(np.clip(pmap, 1e-300, 1)), cmap="magma")
    ys, xs = np.nonzero(pmap < alpha)
    ax.scatter(xs, ys, marker="s", s=6, facecolors="none", edgecolors="cyan", linewidths=0.6)
    ax.set_title(f"{title}: −log10 p (boxes: p < {alpha})", fontsize=9)
    ax.set_xlabel("ROI")
    ax.set_ylabel("ROI")
    fig.colorbar(im, ax=ax)
