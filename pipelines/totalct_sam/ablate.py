"""totalct-sam ``ablate`` (Table 3): TotalCT-SAM with and without the memorizing block as one paired table.

Two ordinary train runs of the manifest (``model.memory`` true / false, ``model.arch`` totalct-sam), reused when
complete; the full model's is the run ``medrun train`` makes with the same manifest. Same data, split, seed and
recipe, so the variants differ only by the block; the training crops and clicks draw from the same seeded streams
but the networks' random init differs past the block's parameters. Both score the same ``eval.split`` cases, so
the comparison is paired: per case, Dice and IoU with minus without memory (``per_case_pairs.csv``), their mean,
sample sd and the count of cases where memory helped. ``paper.md`` puts both variants and the gain beside Table 3
(Dice, IoU, Acc in %, parameters, s / case; paper values as printed, the text's contradicting 87.43 → 91.52 ignored).
"""

from __future__ import annotations

import csv

import numpy as np

from ..report import markdown_table, paper_md, paper_note
from ..sweep import Child

KEYS = ("dice", "iou", "accuracy")
VARIANTS = (("with_memory", "TotalCT-SAM", True), ("without_memory", "without memory", False))
PAPER = {"TotalCT-SAM": ("83.43", "71.57", "82.33", "14.18 M", "5.45 / 6.45"),  # time: Table 1 / Table 3
         "without memory": ("80.66", "67.59", "79.89", "13.88 M", "6.33")}


def pairs(with_rows: list[dict], without_rows: list[dict]) -> list[dict]:
    """Per-case rows of the two variants matched by case id: each metric with, without and the difference."""
    other = {r["case"]: r for r in without_rows}
    out = []
    for r in with_rows:
        o = other.get(r["case"])
        if o is None:
            continue
        row = {"case": r["case"]}
        for k in KEYS:
            a, b = float(r[k]), float(o[k])
            row.update({f"{k}_with": a, f"{k}_without": b, f"{k}_gain": a - b})
        out.append(row)
    return out


def paired_stats(rows: list[dict]) -> dict:
    """Mean and sample sd of each per-case gain, and on how many cases memory helped (Dice gain > 0)."""
    out: dict = {"paired_cases": len(rows)}
    for k in KEYS:
        g = np.array([r[f"{k}_gain"] for r in rows], dtype=float)
        g = g[np.isfinite(g)]
        out[f"paired_{k}_gain"] = float(g.mean()) if g.size else float("nan")
        out[f"paired_{k}_gain_sd"] = float(g.std(ddof=1)) if g.size > 1 else 0.0
    out["memory_helps_cases"] = sum(r["dice_gain"] > 0 for r in rows)
    return out


def _per_case(run_dir) -> list[dict]:
    with open(run_dir / "per_case.csv", newline="") as f:
        return list(csv.DictReader(f))


def ablate(pipe) -> dict:
    ctx = pipe.ctx
    children = [Child(name.replace("_", "-"), {"model.arch": "totalct-sam", "model.memory": mem},
                      labels={"variant": label}) for name, label, mem in VARIANTS]
    runs = ctx.sweep(children, title="variant")
    ctx.write_csv("per_variant.csv", [r.row for r in runs])
    metrics: dict = {}
    for (name, _, _), r in zip(VARIANTS, runs, strict=True):
        metrics.update({f"{name}.{k}": r.metrics[k] for k in (*KEYS, "params_total", "secs_per_case")})
    metrics.update({f"gain_{k}": metrics[f"with_memory.{k}"] - metrics[f"without_memory.{k}"] for k in KEYS})
    metrics["memory_params"] = metrics["with_memory.params_total"] - metrics["without_memory.params_total"]
    rows = pairs(_per_case(runs[0].run_dir), _per_case(runs[1].run_dir))
    ctx.write_csv("per_case_pairs.csv", rows)
    metrics.update(paired_stats(rows))
    ctx.write_text("paper.md", page(pipe, runs, metrics))
    return metrics


def page(pipe, runs, metrics: dict) -> str:
    ctx, spec, m = pipe.ctx, pipe.ctx.spec, pipe.m
    pct = lambda v: f"{100 * v:.2f}"  # noqa: E731
    body = []
    for (_, label, _), r in zip(VARIANTS, runs, strict=True):
        body.append([label, "this run", *[pct(r.metrics[k]) for k in KEYS],
                     f"{r.metrics['params_total'] / 1e6:.2f} M", f"{r.metrics['secs_per_case']:.2f}", r.run_id[:12]])
        body.append([label, "paper", *PAPER[label], "—"])
    body.append(["memory gain", "this run", *[pct(metrics[f"gain_{k}"]) for k in KEYS],
                 f"{metrics['memory_params']:,}", "—", "—"])
    body.append(["memory gain", "paper", "2.77", "3.98", "2.44", "0.30 M", "—", "—"])
    body.append(["paired per-case gain", "this run",
                 *[f"{pct(metrics[f'paired_{k}_gain'])} ± {pct(metrics[f'paired_{k}_gain_sd'])}" for k in KEYS],
                 "—", f"helps {metrics['memory_helps_cases']}/{metrics['paired_cases']}", "—"])
    table = markdown_table(["variant", "source", "Dice %", "IoU %", "Acc %", "params", "s / case", "run"], body)
    setting = f"{m.eval.split} split, {m.train.epochs} epochs, seed {m.seed}"
    expect = {f"{n}.{k}": float(PAPER[label][i]) / 100 for n, label, _ in VARIANTS for i, k in enumerate(KEYS)}
    return paper_md(spec, m, metrics, ctx, title="TotalCT-SAM ablation (Table 3)", table="Table 3",
                    setting="TotalSegmentator v1 validation split (57 CTs)", expect=expect, keys=list(expect),
                    sections=[f"## Table 3 beside this run ({setting})\n\n" + table,
                              "Per-case pairs (the same cases scored by both variants): `per_case_pairs.csv`.",
                              paper_note(spec, "ablation"), paper_note(spec, "comparison")])
