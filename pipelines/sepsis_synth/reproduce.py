"""sepsis-synth ``reproduce``: the paper's four experiments in one run, every part a run of its own.

1. Table 3: a train run on the real training split per ``reproduce.real_seeds`` (each a ``dataset.split_seed``).
2. Table 4: a train run per method of ``reproduce.methods`` × synthetic set (``generate.sets``), all on the
   manifest's split; each method's generate run is run first (and reused by its train runs).
3. Table 5: the ``mix`` stage.  4. DCR: the ``privacy`` stage.

Every child is reused when complete, so an interrupted ``reproduce`` resumes at its first unfinished run. Writes
``runs.csv`` (one row per train run), ``tables34.csv`` (mean, sample sd and 95 % CI per source and classifier), the
tables beside the paper's in ``paper.md`` and a figure of the AUCs. Metrics are ``<source>_auc_<split>_<classifier>``
(mean) with ``_sd``, each generator's ``<method>_rows_min/max`` and ``<method>_seconds`` (fit and sampling of its
generate run), the mix's ``mix_auc_<split>_r<% real>`` and the privacy stage's ``dcr_*``.
"""

from __future__ import annotations

from ..report import markdown_table, paper_md, paper_note, paper_table
from ..sweep import Child, summarise
from .pipeline import CONSUMERS, NAMES

SPLITS = ("test", "external")


def reproduce(p) -> dict:
    r, ctx, g = p.m.reproduce, p.ctx, p.m.generate
    exps, classifiers = set(r.experiments), p.m.train.classifiers
    metrics, sections = {}, []
    methods = list(dict.fromkeys([*(r.methods if 2 in exps else []), *([p.m.mix.method] if 3 in exps else []),
                                  *(p.m.privacy.methods if 4 in exps else [])]))
    if methods:
        reset = {s: {} for s in CONSUMERS}
        gens = ctx.sweep([Child(f"generate-{m}", {**reset, "generate.method": m}, stage="generate",
                                labels={"method": m}) for m in methods], title="generate")
        gen_rows = []
        for run in gens:
            m, gm = run.child.labels["method"], run.metrics
            for k in ("rows_min", "rows_max", "seconds", "fit_seconds", "cpu_seconds", "rows_per_second", "dcr",
                      "ks_mean"):
                metrics[f"{m}_{k}"] = gm.get(k)
            gen_rows.append([m, gm.get("rows_min"), gm.get("rows_max"),
                             gm.get("acceptance_sepsis") if m == "kdeknn" else None, gm.get("seconds"),
                             gm.get("cpu_seconds"), gm.get("ks_mean"), gm.get("corr_mae"), run.run_id[:12]])
        sections.append("## Generators\n\n" + markdown_table(
            ["method", "rows/class min", "max", "KDE-KNN acceptance (sepsis)", "seconds", "CPU seconds", "KS mean",
             "corr |Δ|", "run"], gen_rows) + f"\n\nrequested: {g.n_per_class} rows per class, {g.sets} sets.")
    children = []
    if 1 in exps:
        children += [Child(f"real-split{s}", {"train.source": "real", "dataset.split_seed": s},
                           labels={"source": "real", "replicate": s}) for s in r.real_seeds]
    if 2 in exps:
        children += [Child(f"{m}-set{k}", {"train.source": m, "train.set": k}, labels={"source": m, "replicate": k})
                     for m in r.methods for k in range(g.sets)]
    if children:
        runs = ctx.sweep(children, title="train")
        keys = [f"auc_{s}_{c}" for c in classifiers for s in SPLITS]
        per_run = [{**x.child.labels, **{k: x.metrics.get(k) for k in keys}, "run_id": x.run_id[:12]} for x in runs]
        ctx.write_csv("runs.csv", per_run)
        summary = summarise(per_run, keys, by=["source"])
        ctx.write_csv("tables34.csv", summary)
        for s in summary:
            for k in keys:
                metrics[f"{s['source']}_{k}"], metrics[f"{s['source']}_{k}_sd"] = s[k], s[f"{k}_sd"]
        sections.append(tables(p, summary, classifiers))
        figure(p, summary, classifiers)
    if 3 in exps:
        (run,) = ctx.sweep([Child("mix", {}, stage="mix")], title="Table 5")
        metrics.update({f"mix_{k}": v for k, v in run.metrics.items()
                        if k.startswith("auc_") and not k.endswith("_sd")})
        rows = run.read_csv("table5.csv")
        key = f"auc_%s_{p.m.mix.classifier}"
        t5 = p.paper_numbers().get("table5", {})
        sections.append("## Table 5 (Exp. 3, " + p.m.mix.classifier + " on real + " + p.m.mix.method + ")\n\n" +
                        markdown_table(["% real", "internal test", "external", "MaDB (paper)", "SLDB (paper)"],
                                       [[x["real_pct"], _pm(x, key % "test"), _pm(x, key % "external"),
                                         *t5.get(int(x["real_pct"]), (None, None))] for x in rows]))
    if 4 in exps:
        (run,) = ctx.sweep([Child("privacy", {}, stage="privacy")], title="DCR")
        metrics.update({k: v for k, v in run.metrics.items() if k.startswith("dcr_")})
        dcr = p.paper_numbers().get("dcr", {})
        sections.append("## DCR (Exp. 4)\n\n" + markdown_table(
            ["method", "mean DCR (this run)", "paper"],
            [[m, run.metrics.get(f"dcr_{m}"), dcr.get(m)] for m in p.m.privacy.methods]
            + [["real–real", run.metrics.get("dcr_rr"), dcr.get("real")]]))
    sections += [paper_table(p.ctx.spec, t) for t in ("table3", "table4", "table5", "dcr")]
    sections.append(paper_note(p.ctx.spec, "comparison"))
    expect = {f"{src}_auc_{s}_{c}": v[i] for src, row in p.paper_numbers().get("table4", {}).items()
              if src in (r.methods if 2 in exps else []) for c, v in row.items() if c in classifiers
              for i, s in enumerate(SPLITS)}
    if 1 in exps:
        expect.update({f"real_auc_{s}_{c}": v[i] for c, v in p.paper_numbers().get("table3", {}).items()
                       if c in classifiers for i, s in enumerate(SPLITS)})
    ctx.write_text("paper.md", paper_md(
        ctx.spec, p.m, metrics, ctx, title="Tables 3–5 and DCR", table="Tables 3, 4, 5; Fig. 4", expect=expect,
        keys=[k for k in expect if k in metrics], setting="AUC mean ± sample sd over replicates (splits for real data, "
                                                           "synthetic sets otherwise)", sections=sections))
    return metrics


def _pm(row: dict, k: str) -> str:
    return f"{float(row[k]):.4f} ± {float(row[k + '_sd']):.4f}" if row.get(k) not in (None, "") else "—"


def tables(p, summary, classifiers) -> str:
    nums = p.paper_numbers()
    body = []
    for s in summary:
        src = s["source"]
        ref = nums.get("table3", {}) if src == "real" else nums.get("table4", {}).get(src, {})
        for c in classifiers:
            cells = [f"{s[f'auc_{x}_{c}']:.4f} ± {s[f'auc_{x}_{c}_sd']:.4f}" for x in SPLITS]
            body.append([src, NAMES[c], *cells, *(ref.get(c) or (None, None)), s[f"auc_test_{c}_n"]])
    return ("## Tables 3 (real) and 4 (synthetic): AUC\n\n" +
            markdown_table(["source", "classifier", "internal test", "external", "MaDB (paper)", "SLDB (paper)", "n"],
                           body) + "\n\nmean ± sample sd (ddof 1) over the replicates; the paper's ± is called a "
                                   "variance and is most likely a standard deviation.")


def figure(p, summary, classifiers) -> None:
    import numpy as np

    nums = p.paper_numbers()
    sources = [s["source"] for s in summary]
    with p.ctx.figure("auc", ncols=2, figsize=(11, 4), sharey=True) as (fig, axes):
        width = 0.8 / len(classifiers)
        for ax, split in zip(axes, SPLITS, strict=True):
            for j, c in enumerate(classifiers):
                xs = np.arange(len(sources)) + (j - (len(classifiers) - 1) / 2) * width
                ax.bar(xs, [s[f"auc_{split}_{c}"] for s in summary], width,
                       yerr=[s[f"auc_{split}_{c}_sd"] for s in summary], capsize=2, label=NAMES[c])
                ref = [(nums.get("table3", {}) if src == "real" else nums.get("table4", {}).get(src, {})).get(c)
                       for src in sources]
                ax.plot(xs, [v[SPLITS.index(split)] if v else np.nan for v in ref], "k_", ms=12,
                        label="paper" if j == 0 else None)
            ax.axhline(0.5, color="grey", lw=0.8, ls=":")
            ax.set_xticks(range(len(sources)), sources)
            ax.set(title="internal test" if split == "test" else "external", ylabel="AUC", ylim=(0.3, 1.0))
        axes[0].legend(fontsize=7)
