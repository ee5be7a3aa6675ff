"""``eval``: agreement of a segment run's scores with the radiologist grades (the paper's Tables 1 and 2).

For each mask source (the predicted infection mask; the rasterised dataset annotations when the segment run had
them): quadratic weighted kappa on the CTSS (0–25) and on the 3 severity classes (also the authors' code's 4-class
variant, an extra), coverage(α) = fraction of scans with |predicted − radiologist CTSS| ≤ α for α = 0…5, and the
mean absolute error. Kappa is scikit-learn's ``cohen_kappa_score(weights='quadratic')`` without a fixed label list,
as the authors' code calls it (its weights follow the rank of the values present, which the paper's numbers
reflect); a group with fewer than two scans, or one label on both sides, has no kappa (—). Fairness (Table 2): the
same per sex and per age band within each sex (≤40, 41–50, 51–60, 61–70, >70 by default), for the predicted masks.
"""

from __future__ import annotations

import math
import warnings

import numpy as np

from medrun.errors import DataError
from medrun.metrics import classification as C

from ..report import markdown_table, paper_data, paper_md, paper_note, paper_table
from . import figures, method
from .grade import check_source, grades_of


def _kappa(a, b) -> float:
    if len(a) < 2 or (len(set(a)) == 1 and len(set(b)) == 1):
        return math.nan
    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore")
        return C.quadratic_kappa(np.asarray(a), np.asarray(b))


def agreement(truth, pred, alphas: int = 6) -> dict:
    """QWK (CTSS, severity 3 and 4 classes), coverage(α) for α < ``alphas``, MAE, n."""
    truth, pred = [int(t) for t in truth], [int(p) for p in pred]
    sev = lambda xs, k=3: [method.severity(x, k) for x in xs]  # noqa: E731
    out = {"n": len(truth), "qwk_severity": _kappa(sev(truth), sev(pred)), "qwk_ctss": _kappa(truth, pred),
           "qwk_severity4": _kappa(sev(truth, 4), sev(pred, 4))}
    out.update({f"coverage_a{a}": C.coverage(truth, pred, a) for a in range(alphas)})
    out["mae_ctss"] = float(np.mean(np.abs(np.subtract(pred, truth)))) if truth else math.nan
    return out


def age_band(age, bounds: list[int]) -> str | None:
    if age is None or (isinstance(age, float) and math.isnan(age)):
        return None
    for i, b in enumerate(bounds):
        if age <= b:
            return f"<={b}" if i == 0 else f"{bounds[i - 1] + 1}-{b}"
    return f">{bounds[-1]}"


def fairness(graded: list[dict], bounds: list[int], alphas: int) -> list[dict]:
    """Table 2: per sex, then per age band within each sex."""
    rows = []
    bands = [age_band(b, bounds) for b in bounds] + [f">{bounds[-1]}"]
    for sex in ("F", "M"):
        mine = [g for g in graded if g["sex"] == sex]
        groups = [("all", mine)] + [(b, [g for g in mine if age_band(g["age"], bounds) == b]) for b in bands]
        for band, grp in groups:
            a = agreement([g["truth_ctss"] for g in grp], [g["ctss"] for g in grp], alphas)
            rows.append({"sex": sex, "age": band, **a})
    return rows


def evaluate(p) -> dict:
    ctx, ev = p.ctx, p.m.eval
    rows = p.parent_rows()
    graded_rows = [r for r in rows if isinstance(r.get("truth_ctss"), int)]
    if not graded_rows:
        raise DataError("the segment run has no radiologist grades to compare with",
                        fix="set dataset.grades to COVID_grade.xlsx and run `medrun segment` again")
    sources = {"pred": grades_of(graded_rows, "pred")}
    if graded_rows[0].get("ann_ctss") is not None:
        check_source(graded_rows, "annotations")
        sources["annotations"] = grades_of(graded_rows, "annotations")
    table = {src: agreement([g["truth_ctss"] for g in gs], [g["ctss"] for g in gs], ev.alphas)
             for src, gs in sources.items()}
    pred = sources["pred"]
    metrics = {"n_cases": len(pred), **table["pred"],
               **{f"annotations_{k}": v for k, v in table.get("annotations", {}).items() if k != "n"},
               "within1": table["pred"]["coverage_a1"] if ev.alphas > 1 else math.nan}
    zero = [g["ctss"] for g in pred if g["truth_ctss"] == 0]
    if zero:  # the radiologist saw no involvement (the fixture's vessels-only control): what did we score?
        metrics["zero_truth_max_ctss"] = int(max(zero))
    seg = ctx.parent.metrics() if hasattr(ctx.parent, "metrics") else {}
    if "secs_per_scan" in seg:
        metrics["secs_per_scan"] = seg["secs_per_scan"]
    fair = fairness(pred, ev.age_bands, ev.alphas)
    ctx.write_csv("fairness.csv", fair)
    ctx.write_csv("table1.csv", [{"mask_source": s, **a} for s, a in table.items()])
    per_case = []
    for i, g in enumerate(pred):
        row = {"case": g["case"], "sex": g["sex"], "age": g["age"], "age_band": age_band(g["age"], ev.age_bands),
               "truth_ctss": g["truth_ctss"], "truth_severity": g["truth_severity"], "pred_ctss": g["ctss"],
               "pred_severity": g["severity"], "error": g["ctss"] - g["truth_ctss"]}
        if "annotations" in sources:
            a = sources["annotations"][i]
            row.update({"ann_ctss": a["ctss"], "ann_severity": a["severity"], "ann_error": a["ctss"] - a["truth_ctss"],
                        "annotated": a.get("annotated")})
        per_case.append(row)
    ctx.write_csv("per_case.csv", per_case)
    _figures(ctx, p.ctx.spec, sources, table, fair, ev.alphas)
    ctx.write_text("paper.md", _page(p, metrics, table, fair))
    return metrics


def _figures(ctx, spec, sources: dict, table: dict, fair: list[dict], alphas: int) -> None:
    truth = [g["truth_ctss"] for g in sources["pred"]]
    figures.scatter(ctx, "ctss_scatter", truth, {k: [g["ctss"] for g in v] for k, v in sources.items()})
    curves = {f"{k} (this run)": [a[f"coverage_a{j}"] for j in range(alphas)] for k, a in table.items()}
    for row in paper_data(spec).get("tables", {}).get("table1", {}).get("rows", []):
        curves[f"paper: {row[0]}"] = row[3:9]
    figures.coverage_plot(ctx, "coverage", curves)
    figures.fairness_plot(ctx, "fairness", fair, alphas)
    from ..report import confusion_axes

    for src, gs in sources.items():
        cm = C.confusion_matrix([method.severity(g["truth_ctss"]) for g in gs],
                                [method.severity(g["ctss"]) for g in gs], 3)
        with ctx.figure(f"confusion_severity_{src}", figsize=(4.2, 3.8)) as (fig, ax):
            confusion_axes(ax, cm, method.SEVERITY, f"severity ({src} masks)")


def _page(p, metrics: dict, table: dict, fair: list[dict]) -> str:
    a = p.m.eval.alphas
    cols = ["mask", "severity QWK", "CTSS QWK", *[f"α={j}" for j in range(a)], "n"]
    names = {"pred": "this run: proposed (predicted masks)", "annotations": "this run: dataset annotations"}
    ours = markdown_table(cols, [[names[s], t["qwk_severity"], t["qwk_ctss"], *[t[f"coverage_a{j}"] for j in range(a)],
                                  t["n"]] for s, t in table.items()])
    fair_t = markdown_table(["sex", "age", "severity QWK", "CTSS QWK", *[f"α={j}" for j in range(a)], "n"],
                            [[r["sex"], r["age"], r["qwk_severity"], r["qwk_ctss"],
                              *[r[f"coverage_a{j}"] for j in range(a)], r["n"]] for r in fair])
    spec = p.ctx.spec
    return paper_md(spec, p.m, metrics, p.ctx, title="COVID-19 CT severity: agreement with the radiologist", sections=[
        "## Table 1, this run\n\n" + ours, paper_table(spec, "table1"),
        "## Table 2, this run (predicted masks)\n\n" + fair_t, paper_table(spec, "table2"),
        paper_note(spec, "comparison")])
