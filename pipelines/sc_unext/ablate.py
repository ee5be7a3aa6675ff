"""sc-unext ``ablate`` (Table 2): every variant × every fold is a train run of its own, then one table.

``ablate.variants`` maps a name to dotted overrides of the ``model`` and ``loss`` sections (validated with the
manifest). Each child is ``train`` with the variant's overrides, ``dataset.subset = ablate.subset`` (the paper's
120-image subset, drawn with ``split_seed``), ``dataset.fold`` (KFold over ``dataset.folds``, shuffled,
``split_seed``) and ``train.epochs = ablate.epochs``; it trains on k−1 folds and scores its held-out fold. Children
are reused when complete, so an interrupted ablation resumes at its first unfinished variant-fold. The summary is
the kit's (mean, sample sd with ddof 1, 95 % t-interval); the variance column is that sd squared, in %².
"""

from __future__ import annotations

from medrun.errors import UsageError

from ..report import markdown_table, paper_data, paper_md, paper_note
from ..sweep import Child, mean_sd_table, summarise

KEYS = ("dice", "iou", "dice_batch")


def ablate(p) -> dict:
    a, d, ctx = p.m.ablate, p.m.dataset, p.ctx
    if not a.variants:
        raise UsageError("ablate.variants is empty",
                         fix="list variants (name: {model.pfm: false, …}) in the manifest's ablate section")
    common = {**({"dataset.subset": a.subset} if a.subset else {}), **({"train.epochs": a.epochs} if a.epochs else {})}
    children = [Child(f"{name}-fold{k + 1}", {**ov, **common, "dataset.fold": k},
                      labels={"variant": name, "fold": k + 1})
                for name, ov in a.variants.items() for k in range(d.folds)]
    ctx.log(f"ablation: {len(a.variants)} variants × {d.folds} folds")
    runs = ctx.sweep(children, title="ablation")
    per_fold = [{**r.child.labels, **{k: r.metrics.get(k) for k in KEYS}, "params": r.metrics.get("params_total"),
                 "n_cases": r.metrics.get("n_cases"), "secs_per_epoch": r.metrics.get("secs_per_epoch"),
                 "run_id": r.run_id[:12]} for r in runs]
    ctx.write_csv("per_fold.csv", per_fold)
    summary = summarise(per_fold, KEYS, by=["variant"])
    paper = {row[0]: (row[1], row[2]) for row in paper_data(ctx.spec)["tables"]["table2"]["rows"]}
    table, variants = [], {}
    for s in summary:
        name = s["variant"]
        folds = [r for r in per_fold if r["variant"] == name]
        ref = paper.get(name, (None, None))
        row = {"variant": name, "params": folds[0]["params"], "dice_mean_pct": round(100 * s["dice"], 2),
               "dice_var_pct2": round((100 * s["dice_sd"]) ** 2, 3), "dice_sd_pct": round(100 * s["dice_sd"], 3),
               "iou_mean_pct": round(100 * s["iou"], 2), "folds": ";".join(f"{100 * r['dice']:.2f}" for r in folds),
               "paper_dice_mean_pct": ref[0], "paper_dice_var": ref[1]}
        table.append(row)
        variants[name] = {"dice_mean": s["dice"], "dice_sd": s["dice_sd"], "dice_var_pct2": row["dice_var_pct2"],
                          "dice_ci95": [s["dice_ci95_lo"], s["dice_ci95_hi"]], "iou_mean": s["iou"],
                          "params": row["params"]}
    ctx.write_csv("ablation.csv", table)
    first = next(iter(a.variants))
    n_cases = sum(r["n_cases"] or 0 for r in per_fold if r["variant"] == first)  # the folds partition the cases
    md = markdown_table(["variant", "params", "Dice % (mean)", "var", "sd", "IoU %", "folds", "paper Dice %",
                         "paper var"], [list(r.values()) for r in table])
    overrides = "\n".join(f"- `{n}`: " + (", ".join(f"`{k}={v}`" for k, v in ov.items()) or "the manifest as is")
                          for n, ov in a.variants.items())
    full = variants.get("all")  # the headline row: the full model against Table 2's "all three"
    expect = {"dice": paper["all"][0] / 100} if full and "all" in paper else {}
    ctx.write_text("paper.md", paper_md(
        ctx.spec, p.m, {"dice": full["dice_mean"]} if full else {}, ctx, title="SC-UNeXt ablation (Table 2)",
        expect=expect, table="Table 2", keys=["dice"],
        setting=f"{d.folds}-fold CV on a {a.subset or 'all'}-image ISIC 2018 subset, full SC-UNeXt ('all')",
        sections=[f"## Ablation, {d.folds}-fold CV on {n_cases} cases (each variant-fold a train run of its own)\n\n"
                  "Variance: sample variance (ddof 1) of the fold Dice in %² (the paper's is not reproducible from "
                  "its folds).\n\n" + md,
                  "## Mean over folds\n\n" + mean_sd_table(summary, ["dice", "iou"], by=["variant"]),
                  "## Variants\n\n" + overrides, paper_note(ctx.spec, "table2")]))
    best = max(variants, key=lambda n: variants[n]["dice_mean"])
    return {"folds": d.folds, "n_cases": n_cases, "best_variant": best, "variants": variants}
