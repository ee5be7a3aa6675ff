"""sepsis-synth ``prepare``: both cohorts as one row per patient (timelines flattened at the cut-off hour).

Writes ``internal.csv`` and ``external.csv`` in the ``sepsis-csv`` layout (patient_id, the features in their own
units, empty where never measured, sepsis 0/1), so a prepared run folder can be the ``--data-dir`` of
``--dataset sepsis-csv`` (with ``dataset.features`` set when fewer than the 27 features exist); ``per_case.csv``
(every patient of both cohorts: cohort, id, label, how many features are missing); ``missing.csv`` (per feature the
missing share and the median by class); figures of the missingness and of four features by class. Metrics: patients,
sepsis patients and share, patients dropped (labelled within the cut-off, or no row in it), missing share.
"""

from __future__ import annotations

import numpy as np

from ..report import markdown_table, paper_md


def prepare(p) -> dict:
    ctx, d = p.ctx, p.m.dataset
    internal, external = p.tables()
    metrics, per_case, missing = {"features": len(internal.features)}, [], []
    for what, t in (("internal", internal), ("external", external)):
        ctx.write_csv(f"{what}.csv", [{"patient_id": pid, **{f: (None if np.isnan(v) else float(v))
                                                             for f, v in zip(t.features, row, strict=True)},
                                       "sepsis": int(lab)} for pid, row, lab in zip(t.ids, t.x, t.y, strict=True)],
                      digits=None)
        n = len(t.ids)
        metrics.update({f"n_{what}": n, f"n_sepsis_{what}": t.n_sepsis, f"sepsis_share_{what}": t.n_sepsis / n,
                        f"dropped_early_{what}": len(t.dropped_early), f"dropped_empty_{what}": len(t.dropped_empty),
                        f"missing_{what}": float(np.isnan(t.x).mean())})
        per_case += [{"cohort": what, "patient": pid, "sepsis": int(lab), "missing_features": int(np.isnan(row).sum())}
                     for pid, row, lab in zip(t.ids, t.x, t.y, strict=True)]
    for j, f in enumerate(internal.features):
        row = {"feature": f}
        for what, t in (("internal", internal), ("external", external)):
            row[f"missing_{what}"] = float(np.isnan(t.x[:, j]).mean())
            for cls in (0, 1):
                v = t.x[t.y == cls, j]
                row[f"median_{what}_{'sepsis' if cls else 'non_sepsis'}"] = \
                    float(np.nanmedian(v)) if (~np.isnan(v)).any() else None
        missing.append(row)
    ctx.write_csv("per_case.csv", per_case)
    ctx.write_csv("missing.csv", missing)
    figures(p, internal, external)
    ctx.log(f"wrote internal.csv ({metrics['n_internal']} patients) and external.csv ({metrics['n_external']})")
    paper = [["MaDB (paper)", 1275, 296, "23.2 % (the text says 18.55 %)", 27],
             ["SLDB (paper)", 2028, 1014, "50.0 %", 27],
             ["internal (this run)", metrics["n_internal"], metrics["n_sepsis_internal"],
              f"{100 * metrics['sepsis_share_internal']:.1f} %", len(internal.features)],
             ["external (this run)", metrics["n_external"], metrics["n_sepsis_external"],
              f"{100 * metrics['sepsis_share_external']:.1f} %", len(internal.features)]]
    ctx.write_text("paper.md", paper_md(
        ctx.spec, p.m, metrics, ctx, title="cohorts at the cut-off", table="Table 2", expect={},
        setting=f"one row per patient: last value of each feature within {d.cutoff_hours:g} h",
        keys=list(k for k in metrics if k != "features"),
        sections=["## Cohorts beside Table 2\n\n" + markdown_table(
            ["cohort", "patients", "sepsis", "sepsis share", "features"], paper)]))
    return metrics


def figures(p, internal, external) -> None:
    ctx, feats = p.ctx, internal.features
    with ctx.figure("missingness", figsize=(max(6.0, 0.35 * len(feats)), 3.8)) as (fig, ax):
        pos = np.arange(len(feats))
        ax.bar(pos - 0.2, np.isnan(internal.x).mean(0), 0.4, label="internal")
        ax.bar(pos + 0.2, np.isnan(external.x).mean(0), 0.4, label="external")
        ax.set_xticks(pos, feats, rotation=70, ha="right", fontsize=7)
        ax.set_ylabel("missing share")
        ax.legend()
    shown = [f for f in ("lactate", "heart_rate", "respiratory_rate", "leukocytes") if f in feats] or feats[:4]
    with ctx.figure("by_class", ncols=len(shown), figsize=(3.3 * len(shown), 3.0), squeeze=False) as (fig, axes):
        for ax, f in zip(axes[0], shown, strict=True):
            j = feats.index(f)
            for t, ls, what in ((internal, "-", "internal"), (external, "--", "external")):
                for cls, colour in ((0, "tab:blue"), (1, "tab:red")):
                    v = t.x[t.y == cls, j]
                    v = v[~np.isnan(v)]
                    if v.size:
                        ax.hist(v, 25, density=True, histtype="step", ls=ls, color=colour,
                                label=f"{what} {'sepsis' if cls else 'non-sepsis'}")
            ax.set_title(f, fontsize=9)
        axes[0][0].legend(fontsize=6)
