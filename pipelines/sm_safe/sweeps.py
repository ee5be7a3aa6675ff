"""sm-safe ``cv`` and ``ablate``, sweeps of train runs (each reused when complete): one per fold with the card's
out-of-fold means and the mean ± sd over folds; one per ``ablate.variants`` entry (dotted overrides) in one table."""

from __future__ import annotations

import csv

from medrun.errors import UsageError

from ..report import markdown_table, paper_data, paper_md, paper_note
from ..sweep import Child, headline, mean_sd_table, summarise
from .pipeline import METRICS


def cv(pipe) -> dict:
    k = pipe.m.dataset.folds
    runs = pipe.ctx.sweep([Child(f"fold{i}", {"dataset.fold": i}, labels={"fold": i}) for i in range(k)],
                          title="fold")
    per_fold = [{"fold": r.child.labels["fold"], **{c: r.metrics[c] for c in ("n_tasks", *_with_sd(METRICS))},
                 "run_id": r.run_id[:12]} for r in runs]
    pipe.ctx.write_csv("per_fold.csv", per_fold)
    over_folds = summarise(per_fold, METRICS)[0]
    rows = [{"fold": r.child.labels["fold"], **row} for r in runs for row in _case_rows(r.run_dir)]
    folds_table = markdown_table(["fold", "tasks", *METRICS, "run"],
                                 [[r["fold"], r["n_tasks"], *[r[m] for m in METRICS], r["run_id"]] for r in per_fold])
    metrics = pipe.summarise(rows, title_extra=" (out-of-fold, all folds)", sections=[
        "## Folds (each a train run of its own)\n\n" + folds_table,
        "## Mean over folds\n\n" + mean_sd_table([over_folds], METRICS)])
    return {**metrics, "fold": "all", "folds": k, "over_folds": headline(over_folds, METRICS)}


def ablate(pipe) -> dict:
    """The paper's Table 1 as manifest variants, each a train run (``ablate.variants``: name → dotted overrides)."""
    variants = pipe.m.ablate.variants
    if not variants:
        raise UsageError("ablate.variants is empty", fix="list variants in the manifest: name → {dotted.key: value}")
    check_variants(pipe.m, variants)  # a bad key fails here, naming its variant, before anything trains
    runs = pipe.ctx.sweep([Child(name, over, labels={"variant": name}) for name, over in variants.items()],
                          title="variant")
    paper = {r[0]: r[1:] for r in paper_data(pipe.ctx.spec)["tables"]["table1"]["rows"]}
    rows, table, cases = [], [], []
    for r in runs:
        s, name = r.metrics, r.child.name
        rows.append({"variant": name, "model": s["variant"], **{c: s[c] for c in (*_with_sd(METRICS), "n_tasks")},
                     "params": s["params_total"], "run_id": r.run_id[:12]})
        table.append([name, s["variant"], *[f"{s[k]:.3f} ± {s[k + '_sd']:.3f}" for k in METRICS],
                      *paper.get(s["variant"], ["—"] * len(METRICS)), s["params_total"], r.run_id[:12]])
        cases += [{"variant": name, **row} for row in _case_rows(r.run_dir)]
    pipe.ctx.write_csv("per_case.csv", cases)
    pipe.ctx.write_csv("ablation.csv", rows)
    metrics = {r["variant"]: {k: r[k] for k in (*_with_sd(METRICS), "n_tasks")} for r in rows}
    metrics["ordering_as_paper"] = _ordering(rows)
    dice = ", ".join(f"{r['dice']:.3f}" for r in rows)
    pipe.ctx.log("ablate: " + "  ".join(f"{r['variant']} Dice {r['dice']:.3f}" for r in rows))
    header = ["variant", "model", "Dice (run)", "IoU (run)", "HD95 (run)", "Dice (paper)", "IoU (paper)",
              "HD95 (paper)", "params", "run"]
    pipe.ctx.write_text("paper.md", paper_md(pipe.ctx.spec, pipe.m, {}, pipe.ctx, title="SM-SAFE ablation (Table 1)",
                                             sections=[
        "## Table 1: mean ± SD across tasks (each variant a train run of its own)\n\n" + markdown_table(header, table),
        f"Paper's ordering U-Net < AMF-Net < SM-SAFE on Dice reproduced: {metrics['ordering_as_paper']} "
        f"(Dice {dice}).", paper_note(pipe.ctx.spec, "comparison")]))
    return metrics


def check_variants(m, variants: dict) -> None:
    """Each variant's overrides applied to the manifest and validated again: a bad key or value is a UsageError
    naming ``ablate.variants.<name>``."""
    from medrun import manifests

    base = manifests.Resolved(data=m.model_dump(mode="json"), source=None)
    for name, over in variants.items():
        try:
            manifests.validate(manifests.apply_overrides(base, over), type(m))
        except UsageError as e:
            where, _, rest = e.message.partition(": ")
            raise UsageError(f"ablate.variants.{name}: {rest if where.startswith('override ') else e.message}",
                             fix=e.fix or "use dotted keys and valid values of this manifest, e.g. model.variant: unet"
                             ) from None


def _case_rows(run_dir) -> list[dict]:
    """A child's per_case.csv with its metric columns as floats."""
    with open(run_dir / "per_case.csv") as f:
        return [{k: float(v) if k in METRICS else v for k, v in r.items()} for r in csv.DictReader(f)]


def _with_sd(names) -> list[str]:
    return [c for k in names for c in (k, f"{k}_sd")]


def _ordering(rows: list[dict]) -> bool | None:
    by = {r["model"]: r["dice"] for r in rows}
    if not {"unet", "amf-net", "sm-safe"} <= set(by):
        return None
    return bool(by["unet"] < by["amf-net"] < by["sm-safe"])
