"""``medrun smoke``: every pipeline's fixture manifests (``<dataset>.fixture.yaml``, the card's smoke run) against
the thresholds in their ``smoke:`` section.

A smoke stage that works on a finished run (``spec.parents``, e.g. ``attack`` on ``train``) first runs or reuses
that parent stage. Runs are ordinary runs in the runs folder, so a complete one (same manifest, code and data) is
reused: a second ``medrun smoke`` over the same folder only re-checks thresholds.
"""

from __future__ import annotations

import time
from pathlib import Path


def fixture_manifests(slugs=None):
    """(spec, dataset) for every pipeline (or the named ones) and each dataset that has a fixture manifest."""
    from medrun import manifests

    from . import get, registry

    for slug in slugs or sorted(registry()):
        spec = get(slug)
        for ds in spec.datasets:
            if manifests.manifest_path(slug, ds, fixture=True).name.endswith(".fixture.yaml"):
                yield spec, ds


def run(slugs=None, runs_dir: Path = Path("runs"), force: bool = False, log=print) -> tuple[list[dict], int]:
    """Run the smoke stages; returns one row per checked threshold and the number of failed checks."""
    from .runner import Request, execute, load_manifest, plan

    rows, failed = [], 0
    for spec, ds in fixture_manifests(slugs):
        slug = spec.slug
        m, _ = load_manifest(Request(pipeline=slug, stage="train", dataset=ds, fixture=True), spec)
        req = Request(pipeline=slug, stage=m.smoke.stage, dataset=ds, fixture=True, runs_dir=runs_dir, force=force,
                      argv=["medrun", m.smoke.stage, slug, "--dataset", ds, "--fixture"])
        t0 = time.perf_counter()
        if m.smoke.stage in spec.parents:  # a stage on a finished run: run (or reuse) its parent stage first
            parent_stage = spec.parents[m.smoke.stage]
            log(f"smoke: {slug} {parent_stage} --dataset {ds} --fixture (the parent of {m.smoke.stage})")
            parent = execute(plan(Request(pipeline=slug, stage=parent_stage, dataset=ds, fixture=True,
                                          runs_dir=runs_dir, force=force,
                                          argv=["medrun", parent_stage, slug, "--dataset", ds, "--fixture"]),
                                  log=log), log=log)
            req.run_ref = parent["run_dir"]
        log(f"smoke: {slug} {m.smoke.stage} --dataset {ds} --fixture")
        result = execute(plan(req, log=log), log=log)
        secs = time.perf_counter() - t0
        checks = [(k, v, ">=") for k, v in m.smoke.min.items()] + [(k, v, "<=") for k, v in m.smoke.max.items()]
        for metric, limit, op in checks:
            value = result["metrics"].get(metric)
            ok = isinstance(value, (int, float)) and (value >= limit if op == ">=" else value <= limit)
            failed += not ok
            rows.append({"pipeline": slug, "dataset": ds, "stage": m.smoke.stage, "metric": metric, "value": value,
                         "threshold": f"{op} {limit}", "pass": ok, "seconds": round(secs, 1),
                         "reused": result["reused"], "run_dir": result["run_dir"]})
    return rows, failed
