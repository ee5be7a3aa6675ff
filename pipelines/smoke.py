"""``medrun smoke``: every pipeline's fixture manifests (``<dataset>.fixture.yaml``, the card's smoke run) against
the thresholds in their ``smoke:`` section.

A smoke stage that works on a finished run (``spec.parents``, e.g. ``attack`` on ``train``) first runs or reuses
that parent stage. Runs are ordinary runs in the runs folder, so a complete one (same manifest, code and data) is
reused: a second ``medrun smoke`` over the same folder only re-checks thresholds. Since a run's code fingerprint
covers only the sources its pipeline imports, an edit to one pipeline reruns that pipeline's smoke alone.
``changed_since`` goes further and does not even plan the pipelines whose covered files and manifests are unchanged
since a git ref (CI on a pull request).
"""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

from medrun.errors import EnvError, UsageError


def fixture_manifests(slugs=None):
    """(spec, dataset) for every pipeline (or the named ones) and each dataset that has a fixture manifest."""
    from medrun import manifests

    from . import get, registry

    for slug in slugs or sorted(registry()):
        spec = get(slug)
        for ds in spec.datasets:
            if manifests.manifest_path(slug, ds, fixture=True).name.endswith(".fixture.yaml"):
                yield spec, ds


def _requests(slugs, runs_dir: Path, force: bool):
    """(spec, dataset, manifest, the parent stage's request or None, the smoke stage's request) per fixture
    manifest."""
    from .runner import Request, load_manifest

    def request(slug, stage, ds):
        return Request(pipeline=slug, stage=stage, dataset=ds, fixture=True, runs_dir=runs_dir, force=force,
                       argv=["medrun", stage, slug, "--dataset", ds, "--fixture"])

    for spec, ds in fixture_manifests(slugs):
        m, _ = load_manifest(Request(pipeline=spec.slug, stage="train", dataset=ds, fixture=True), spec)
        parent = spec.parents.get(m.smoke.stage)  # a stage on a finished run: its parent stage runs first
        yield spec, ds, m, request(spec.slug, parent, ds) if parent else None, request(spec.slug, m.smoke.stage, ds)


def run(slugs=None, runs_dir: Path = Path("runs"), force: bool = False, log=print, launcher: str = "local"
        ) -> tuple[list[dict], int]:
    """Run the smoke stages; returns one row per checked threshold and the number of failed checks. With a parallel
    ``launcher`` (``local:N`` …) the runs are first computed in worker processes — the parents of stages on finished
    runs, with every stage that has none, then those stages — and the loop below reuses them, so the table is the
    sequential one."""
    import dataclasses

    from .launch import launch_children, parse
    from .runner import execute, plan

    items = list(_requests(slugs, runs_dir, force))
    lau = parse(launcher)
    computed: set[Path] = set()  # by a worker just now: reused below, not --forced a second time
    if lau.parallel:
        first = [(f"{spec.slug} {ds}", plan(parent or req, log=log)) for spec, ds, _, parent, req in items]
        computed |= launch_children(lau, first, log=log, title="smoke run")
        second = [(f"{spec.slug} {ds} {req.stage}",
                   plan(dataclasses.replace(req, run_ref=str(plan(parent, log=log).path)), log=log))
                  for spec, ds, _, parent, req in items if parent]
        if second:
            computed |= launch_children(lau, second, log=log, title="smoke run")

    def run_once(r):
        p = plan(r, log=log)
        return execute(dataclasses.replace(p, request=dataclasses.replace(r, force=False)) if p.path in computed
                       else p, log=log)

    rows, failed = [], 0
    for spec, ds, m, parent_req, req in items:
        slug = spec.slug
        t0 = time.perf_counter()
        if parent_req is not None:
            log(f"smoke: {slug} {parent_req.stage} --dataset {ds} --fixture (the parent of {m.smoke.stage})")
            req = dataclasses.replace(req, run_ref=run_once(parent_req)["run_dir"])
        log(f"smoke: {slug} {m.smoke.stage} --dataset {ds} --fixture")
        result = run_once(req)
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


def changed_files(ref: str, root: Path | None = None) -> set[str]:
    """Paths (relative to the source root, as in a code fingerprint's ``files``) that differ from git ``ref`` in
    the working tree, staged or not, plus untracked files that git does not ignore."""
    from medrun.artifacts.fingerprint import source_root

    root = root or source_root()
    diff = _git(root, "diff", "--name-only", "--no-renames", "--relative", ref, "--")
    new = _git(root, "ls-files", "--others", "--exclude-standard")
    return {line for line in (diff + new).splitlines() if line}


def _git(root: Path, *args: str) -> str:
    try:
        out = subprocess.run(["git", "-C", str(root), *args], capture_output=True, text=True, timeout=60)
    except FileNotFoundError as e:
        raise EnvError(
            "--changed-since needs git, which is not installed", fix="install git, or drop --changed-since"
        ) from e
    except subprocess.TimeoutExpired as e:
        raise EnvError(f"git {args[0]} in {root} took over 60 s", fix="drop --changed-since") from e
    if out.returncode != 0:
        why = (out.stderr.strip().splitlines() or ["git failed"])[-1].replace("[", "(").replace("]", ")")
        raise UsageError(f"--changed-since: git {args[0]} in {root} failed: {why}",
                         fix="name a commit, branch or tag of this checkout (e.g. origin/main); medrun must be an "
                             "editable install of a git checkout (make setup)")
    return out.stdout


def affected(slugs, changed: set[str]) -> list[str]:
    """The pipelines (of ``slugs``, default all) whose smoke could differ after ``changed``: a covered source file
    (the pipeline's code fingerprint) or one of its manifests changed; a manifest outside every pipeline's folder
    (``manifests/_base/``, which manifests extend) counts for all."""
    from . import get, registry
    from .runner import stage_code

    owners = {p.split("/")[1] if p.count("/") >= 2 else None
              for p in changed if p.startswith("manifests/") and not p.endswith(".py")}
    shared = bool(owners - set(registry()))
    return [slug for slug in slugs or sorted(registry())
            if shared or slug in owners or changed & set(stage_code(get(slug))["files"])]
