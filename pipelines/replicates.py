"""Replicates: one run per seed (``--seeds 0,1,2`` or the manifest's ``seeds:``), then a summary run.

Each seed is an ordinary run of the stage (its own id, reused when already complete). The summary run
``<runs>/<pipeline>/replicates-<id>/`` has an id over the member runs' ids, names them in ``run.json``, and writes
``metrics.json`` with, per numeric metric, the mean, the sample sd (ddof 1), a 95 % t-interval of the mean
(mean ± t₀.₉₇₅,ₙ₋₁ · sd/√n), n and the values; and ``paper.md`` with mean ± sd beside the paper's number. It copies
the first member's ``data.lock.json`` and ``env.json`` so that ``medrun verify`` checks it like any run.
"""

from __future__ import annotations

import time

import yaml

from medrun.artifacts import RunDir, run_path, sha256_json

from . import runner
from .report import fmt


def parse_seeds(text: str) -> list[int]:
    from medrun.errors import UsageError

    try:
        seeds = [int(s) for s in text.split(",") if s.strip()]
    except ValueError:
        raise UsageError(
            f"--seeds {text!r} is not a comma-separated list of integers", fix="e.g. --seeds 0,1,2"
        ) from None
    if len(seeds) < 2 or len(set(seeds)) != len(seeds):
        raise UsageError(f"--seeds {text!r}: give at least two different seeds", fix="e.g. --seeds 0,1,2")
    return seeds


def summarise(values_by_seed: list[dict]) -> dict:
    """{metric: {mean, sd, ci95, n, values}} over the top-level numeric metrics every member has
    (``sweep.stats``: sample sd, ddof 1; 95 % t-interval)."""
    from .sweep import _number, stats

    out = {}
    for k, v in values_by_seed[0].items():
        vals = [m.get(k) for m in values_by_seed]
        if _number(v) and all(_number(x) for x in vals):
            s = stats(vals)
            out[k] = {"mean": s["mean"], "sd": s["sd"], "ci95": s["ci95"], "n": len(vals),
                      "values": [float(x) for x in vals]}
    return out


def run(req, seeds: list[int], log=print) -> dict:
    from .sweep import Child, child_request, run_children

    children = [Child(f"seed{s}", {"seed": s, "seeds": None}, stage=req.stage) for s in seeds]
    done = run_children(req, children, log=log, title="replicate")
    first = runner.plan(child_request(req, children[0]), log=lambda *_: None)
    members = list(zip(seeds, done, strict=True))
    rid = sha256_json({"replicates": [d.run_id for _, d in members], "stage": req.stage})
    path = run_path(req.runs_dir, first.spec.slug, "replicates", rid)
    summary = RunDir(path)
    all_reused = all(d.reused for _, d in members)
    if summary.is_complete() and all_reused and not req.force:
        return {"run_id": rid, "run_dir": str(path), "status": "complete", "reused": True, "metrics": summary.metrics()}
    metrics = summarise([d.metrics for _, d in members])
    summary.open(force=True)
    try:
        mdict = {**first.manifest_dict, "seed": None, "seeds": seeds}
        summary.write_text("manifest.yaml", yaml.safe_dump(mdict, sort_keys=False))
        for rel in ("data.lock.json", "env.json"):
            summary.write_text(rel, (first.path / rel).read_text())
        summary.write_json("run.json", {
            "id": rid, "pipeline": first.spec.slug, "stage": "replicates", "of_stage": req.stage, "status": "running",
            "dataset": first.manifest.dataset.name, "fixture": req.fixture, "seeds": seeds,
            "members": [{"seed": s, "id": d.run_id, "run_dir": str(d.run_dir)} for s, d in members],
            "parent": None, "command": req.argv, "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "code": first.code_fp, "data_sha256": runner.combine(first.data_fp),
        })
        summary.write_json("metrics.json", metrics)
        summary.write_text("paper.md", paper_md(first, seeds, metrics))
        summary.seal()
    finally:
        summary.close()
    return {"run_id": rid, "run_dir": str(path), "status": "complete", "reused": False,
            "metrics": {k: v["mean"] for k, v in metrics.items()},
            "members": [{"seed": s, "run_dir": str(d.run_dir), "reused": d.reused} for s, d in members]}


def paper_md(plan, seeds: list[int], metrics: dict) -> str:
    m, spec = plan.manifest, plan.spec
    expect = m.paper.expect if m.paper else {}
    lines = [f"# {spec.title}: {plan.request.stage} replicated over seeds {', '.join(map(str, seeds))}", "",
             f"Paper: {spec.paper}" + (f", {m.paper.table}" if m.paper and m.paper.table else "")]
    if plan.request.fixture:
        lines += ["", "**Data: generated fixture**: these numbers show the pipeline learns; they are not comparable "
                      "with the paper's."]
    lines += ["", "| metric | mean ± sd | 95 % CI of the mean | paper | Δ (mean − paper) |", "|---|---|---|---|---|"]
    keys = [k for k in expect if k in metrics] + [k for k in m.eval.metrics if k in metrics and k not in expect]
    for k in keys or list(metrics):
        v, theirs = metrics[k], expect.get(k)
        lines.append(f"| {k} | {fmt(v['mean'])} ± {fmt(v['sd'])} | [{fmt(v['ci95'][0])}, {fmt(v['ci95'][1])}] | "
                     f"{fmt(theirs)} | {fmt(v['mean'] - theirs if theirs is not None else None)} |")
    return "\n".join(lines) + "\n"
