"""sepsis-synth ``mix`` (Exp. 3, Table 5): one classifier on real:synthetic mixes of a fixed size.

Every ratio × repeat is a train run of its own (``train.source = mix.method``, ``train.real_fraction``,
``train.total = mix.total``, ``train.set = repeat``, ``train.classifiers = [mix.classifier]``), reused when
complete. Repeat i draws its real rows without replacement with a generator seeded (seed, i) and uses synthetic set
i, so the 0 % real row is the mean over the synthetic sets (the card's reading of Table 5). Writes ``runs.csv`` (one
row per child), ``table5.csv`` (mean, sample sd and 95 % CI per ratio) and the AUC-versus-share figure.
"""

from __future__ import annotations

from medrun.errors import UsageError

from ..report import markdown_table, paper_md, paper_table
from ..sweep import Child, summarise

SPLITS = ("test", "external")


def mix(p) -> dict:
    mx, ctx = p.m.mix, p.ctx
    total = mx.total or 2 * p.m.generate.n_per_class
    if mx.repeats > p.m.generate.sets:  # checked here, not in the manifest: a generate run never reads mix
        raise UsageError(f"mix.repeats {mx.repeats} needs as many synthetic sets (repeat i uses set i); "
                         f"generate.sets is {p.m.generate.sets}", fix="raise generate.sets or lower mix.repeats")
    children = [Child(f"real{r}-rep{i}", {"train.source": mx.method, "train.real_fraction": r / 100,
                                          "train.total": total, "train.set": i, "train.classifiers": [mx.classifier]},
                      labels={"real_pct": r, "synthetic_pct": 100 - r, "repeat": i})
                for r in mx.ratios for i in range(mx.repeats)]
    ctx.log(f"Table 5: {len(mx.ratios)} ratios × {mx.repeats} repeats of {total} rows ({mx.method}, {mx.classifier})")
    runs = ctx.sweep(children, title="mix")
    keys = [f"auc_{s}_{mx.classifier}" for s in SPLITS]
    per_run = [{**r.child.labels, **{k: r.metrics.get(k) for k in keys}, "run_id": r.run_id[:12]} for r in runs]
    ctx.write_csv("runs.csv", per_run)
    summary = summarise(per_run, keys, by=["real_pct"])
    ctx.write_csv("table5.csv", summary)
    paper = p.paper_numbers().get("table5", {})
    metrics = {"classifier": mx.classifier, "method": mx.method, "total": total}
    expect = {}
    body = []
    for s in summary:
        r = s["real_pct"]
        for split, k in zip(SPLITS, keys, strict=True):
            metrics[f"auc_{split}_r{r}"], metrics[f"auc_{split}_r{r}_sd"] = s[k], s[f"{k}_sd"]
            if r in paper:
                expect[f"auc_{split}_r{r}"] = paper[r][SPLITS.index(split)]
        ref = paper.get(r, (None, None))
        body.append([r, 100 - r, *(f"{s[k]:.4f} ± {s[f'{k}_sd']:.4f}" for k in keys), ref[0], ref[1],
                     s[f"{keys[0]}_n"]])
    figure(p, summary, keys, paper)
    ctx.write_text("paper.md", paper_md(
        ctx.spec, p.m, metrics, ctx, title=f"{mx.classifier} on real:{mx.method} mixes", table="Table 5",
        setting=f"{total} rows per mix, {mx.repeats} repeats per ratio; AUC mean ± sample sd", expect=expect,
        keys=list(expect) or [k for k in metrics if k.startswith("auc_") and not k.endswith("_sd")],
        sections=["## Table 5 beside the paper\n\n" + markdown_table(
            ["% real", "% synthetic", "internal test (ours)", "external (ours)", "MaDB (paper)", "SLDB (paper)", "n"],
            body) + "\n\nsd: sample standard deviation (ddof 1) over the repeats; the paper's ± is called a variance.",
                  paper_table(ctx.spec, "table5")]))
    return metrics


def figure(p, summary, keys, paper) -> None:
    with p.ctx.figure("table5", figsize=(6, 4)) as (fig, ax):
        xs = [100 - s["real_pct"] for s in summary]
        for k, split, colour in zip(keys, SPLITS, ("tab:blue", "tab:orange"), strict=True):
            ax.errorbar(xs, [s[k] for s in summary], yerr=[s[f"{k}_sd"] for s in summary], marker="o", capsize=3,
                        color=colour, label=f"{'internal test' if split == 'test' else 'external'} (this run)")
            ref = [(100 - r, v[SPLITS.index(split)]) for r, v in sorted(paper.items())]
            if ref:
                ax.plot(*zip(*ref, strict=True), ls=":", marker="x", color=colour,
                        label=f"paper ({'MaDB' if split == 'test' else 'SLDB'})")
        ax.set(xlabel="% synthetic rows", ylabel="AUC", title="Exp. 3: real + synthetic training rows")
        ax.legend(fontsize=7)
