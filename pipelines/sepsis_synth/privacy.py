"""sepsis-synth ``privacy`` (Exp. 4): distance to closest record, in the standardised space.

For each method of ``privacy.methods`` (its generate run, run or reused as a child): DCR_RS, the mean over every
synthetic row of all sets of the Euclidean distance to the nearest real training row (the card's direction, as
TabDDPM); DCR_SR, the mean over real training rows of the distance to the nearest synthetic row (the paper's other
wording); the share of exact copies. DCR_RR: each real training row to its nearest other real row. Writes
``per_case.csv`` (every synthetic row: method, set, class, DCR), ``dcr.csv`` and the Fig. 4 histograms.
"""

from __future__ import annotations

import numpy as np

from medrun.metrics.privacy import dcr

from ..report import markdown_table, paper_md, paper_table


def privacy(p) -> dict:
    pv, c, ctx = p.m.privacy, p.cohort, p.ctx
    real = c.z(c.train.x)
    rr = dcr(real, leave_one_out=True, return_all=True)
    dist, rows, table = {"real": rr}, [], []
    metrics = {"dcr_rr": float(rr.mean())}
    for method in pv.methods:
        syn = p.generated(method)
        n_sets = sum(1 for k in syn if k.startswith("x_set"))
        per = []
        for k in range(n_sets):
            xs, ys = syn[f"x_set{k}"], syn[f"y_set{k}"]
            d = dcr(xs, real, return_all=True)
            per.append(d)
            rows += [{"method": method, "set": k, "row": i, "sepsis": int(ys[i]), "dcr": float(d[i])}
                     for i in range(len(d))]
            metrics.setdefault(f"dcr_sr_{method}_sets", []).append(dcr(real, xs))
        d = np.concatenate(per)
        dist[method] = d
        metrics[f"dcr_{method}"] = float(d.mean())
        metrics[f"dcr_sr_{method}"] = float(np.mean(metrics.pop(f"dcr_sr_{method}_sets")))
        metrics[f"copies_{method}"] = int((d < 1e-9).sum())
        metrics[f"dcr_{method}_sd_sets"] = float(np.std([q.mean() for q in per], ddof=1)) if len(per) > 1 else 0.0
        table.append({"method": method, "dcr_rs": metrics[f"dcr_{method}"], "dcr_sr": metrics[f"dcr_sr_{method}"],
                      "dcr_rs_median": float(np.median(d)), "exact_copies": metrics[f"copies_{method}"],
                      "sets": n_sets, "rows": len(d)})
        ctx.log(f"DCR {method}: {metrics[f'dcr_{method}']:.3f} (real → {method}: {metrics[f'dcr_sr_{method}']:.3f})")
    ctx.log(f"DCR real–real: {metrics['dcr_rr']:.3f}")
    table.append({"method": "real (leave-one-out)", "dcr_rs": metrics["dcr_rr"], "dcr_sr": None,
                  "dcr_rs_median": float(np.median(rr)), "exact_copies": int((rr < 1e-9).sum()), "sets": 1,
                  "rows": len(rr)})
    if "smote" in pv.methods and "kdeknn" in pv.methods:
        metrics["dcr_kdeknn_minus_smote"] = metrics["dcr_kdeknn"] - metrics["dcr_smote"]
    ctx.write_csv("per_case.csv", rows)
    ctx.write_csv("dcr.csv", table)
    histogram(p, dist)
    paper = p.paper_numbers().get("dcr", {})
    expect = {f"dcr_{m}": v for m, v in paper.items() if m in pv.methods}
    if "real" in paper:
        expect["dcr_rr"] = paper["real"]
    body = [[r["method"], r["dcr_rs"], r["dcr_sr"], r["dcr_rs_median"], r["exact_copies"],
             paper.get(r["method"] if r["method"] in paper else "real" if r["method"].startswith("real") else "")]
            for r in table]
    ctx.write_text("paper.md", paper_md(
        ctx.spec, p.m, metrics, ctx, title="distance to closest record", table="Exp. 4 / Fig. 4",
        setting="mean Euclidean distance of each synthetic row to the nearest real training row, z-scored features",
        expect=expect, keys=[*expect, *(k for k in metrics if k.startswith("dcr_") and k not in expect)],
        sections=["## DCR beside the paper\n\n" + markdown_table(
            ["method", "DCR synthetic → real", "DCR real → synthetic", "median", "exact copies", "paper (mean)"], body)
            + "\n\nThe paper's distances come from its 27 MaDB features; with another feature count or cohort only "
              "the order of the methods compares.", paper_table(ctx.spec, "dcr")]))
    return metrics


def histogram(p, dist: dict) -> None:
    with p.ctx.figure("fig4_dcr", figsize=(7, 4)) as (fig, ax):
        hi = np.percentile(np.concatenate(list(dist.values())), 99.5)
        bins = np.linspace(0, hi, p.m.privacy.bins)
        for name, d in dist.items():
            ax.hist(d, bins, density=True, histtype="step", lw=1.5,
                    label=f"{'real–real (d_R-R)' if name == 'real' else name + ' (d_R-S)'}: mean {d.mean():.3f}",
                    ls="--" if name == "real" else "-", color="black" if name == "real" else None)
        ax.set(xlabel="distance to closest record", ylabel="density", title="Fig. 4: DCR distributions")
        ax.legend(fontsize=8)
