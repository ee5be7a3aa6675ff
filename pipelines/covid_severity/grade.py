"""``grade``: the CT severity score (0–25) and severity class of every scan of a finished segment run, from the
predicted infection mask or from the rasterised dataset annotations (``grade.mask_source``). Writes
``per_case.csv`` (per-lobe involvement and score, CTSS, 3- and 4-class severity, the radiologist's score where the
sheet has one), a per-lobe score map and the score histogram."""

from __future__ import annotations

import numpy as np

from medrun.errors import UsageError

from ..report import markdown_table, paper_md
from . import method

LOBES = [1, 2, 3, 4, 5]
NAMES = ["LUL", "LLL", "RUL", "RML", "RLL"]


def grades_of(rows: list[dict], source: str) -> list[dict]:
    """One graded row per case from a segment run's ``per_case.csv`` rows (``source``: pred | annotations)."""
    prefix = "pred" if source == "pred" else "ann"
    out = []
    for r in rows:
        voxels = [int(r[f"lobe{k}_voxels"] or 0) for k in LOBES]
        infected = [int(r.get(f"{prefix}_lobe{k}_infected") or 0) for k in LOBES]
        g = method.grade(voxels, infected)
        truth = r.get("truth_ctss")
        out.append({"case": r["case"], "mask_source": source,
                    **{f"{n}_pct": p for n, p in zip(NAMES, g["involvement"], strict=True)},
                    **{f"{n}_score": s for n, s in zip(NAMES, g["scores"], strict=True)},
                    "ctss": g["ctss"], "severity": g["severity"],
                    "severity4": method.SEVERITY4[method.severity(g["ctss"], 4)],
                    "truth_ctss": truth if isinstance(truth, int) else None,
                    "truth_severity": method.SEVERITY[method.severity(truth)] if isinstance(truth, int) else None,
                    "sex": r.get("sex"), "age": r.get("age"),
                    **({"annotated": r.get("annotated")} if source == "annotations" else {}),
                    "missing_lobes": " ".join(map(str, g["missing_lobes"])) or None})
    return out


def check_source(rows: list[dict], source: str) -> None:
    if source == "annotations" and (not rows or "ann_ctss" not in rows[0] or rows[0].get("ann_ctss") is None):
        raise UsageError("grade.mask_source=annotations needs a segment run made with an annotation export",
                         fix="set dataset.annotations to the MD.ai JSON and run `medrun segment` again")


def grade_stage(p) -> dict:
    from .evaluate import agreement

    rows = p.parent_rows()
    source = p.m.grade.mask_source
    check_source(rows, source)
    graded = grades_of(rows, source)
    p.ctx.write_csv("per_case.csv", graded)
    ctss = np.array([g["ctss"] for g in graded])
    metrics = {"n_cases": len(graded), "mask_source": source, "mean_ctss": float(ctss.mean()),
               **{f"n_{k}": sum(g["severity"] == k for g in graded) for k in method.SEVERITY}}
    with_truth = [g for g in graded if g["truth_ctss"] is not None]
    if len(with_truth) >= 2:
        a = agreement([g["truth_ctss"] for g in with_truth], [g["ctss"] for g in with_truth], 2)
        metrics.update({"qwk_ctss": a["qwk_ctss"], "qwk_severity": a["qwk_severity"], "coverage_a1": a["coverage_a1"]})
    figures(p.ctx, graded)
    table = markdown_table(["case", *NAMES, "CTSS", "severity", "radiologist"],
                           [[g["case"], *[g[f"{n}_score"] for n in NAMES], g["ctss"], g["severity"], g["truth_ctss"]]
                            for g in graded[:200]])
    p.ctx.write_text("paper.md", paper_md(p.ctx.spec, p.m, metrics, p.ctx, title=f"CTSS per scan ({source} masks)",
                                          keys=["n_cases", "mean_ctss", "qwk_ctss", "qwk_severity", "coverage_a1"],
                                          present_only=True, sections=[
                                              "## Lobe scores (0–5) and CTSS per scan\n\n" + table]))
    return metrics


def figures(ctx, graded: list[dict]) -> None:
    scores = np.array([[g[f"{n}_score"] for n in NAMES] for g in graded])
    with ctx.figure("lobe_scores", figsize=(4.5, max(2.5, 0.22 * len(graded) + 1.2))) as (fig, ax):
        im = ax.imshow(scores, cmap="Reds", vmin=0, vmax=5, aspect="auto")
        ax.set_xticks(range(5), NAMES, fontsize=7)
        ax.set_yticks(range(len(graded)), [f"{g['case'][-13:]} ({g['ctss']})" for g in graded], fontsize=6)
        fig.colorbar(im, ax=ax, label="lobe score")
    with ctx.figure("ctss_histogram", figsize=(5, 3.2)) as (fig, ax):
        ctss = [g["ctss"] for g in graded]
        for sev, colour in zip(method.SEVERITY, ("tab:green", "tab:orange", "tab:red"), strict=True):
            ax.hist([c for c, g in zip(ctss, graded, strict=True) if g["severity"] == sev], bins=np.arange(27) - 0.5,
                    color=colour, label=sev)
        ax.set_xlabel("CTSS")
        ax.set_ylabel("scans")
        ax.legend(fontsize=7)
        ax.set_title(f"{len(ctss)} scans, mean CTSS {np.mean(ctss):.1f}" if ctss else "no scans", fontsize=8)
