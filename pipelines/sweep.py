"""One sweep harness for folds, seeds, grids, ablation variants and λ sweeps.

A sweep is a list of :class:`Child` objects: each names a stage (``train`` unless told) and the dotted overrides
of the parent's manifest that make it a fold, a seed or a variant. Each child is an ordinary run with its own
content-hashed id (``runs/<pipeline>/<stage>-<id>/``), so

- a child that is already complete is reused, and a killed ``cv`` resumes at its first unfinished fold (an
  interrupted child resumes from its own ``last.ckpt``);
- a child can be verified, re-run and compared like any run;
- this module is the one place that hands child runs to a launcher: one after another in this process (``local``,
  the default), or ``--launcher local:N | slurm | submitit-local`` (``pipelines/launch.py``), which runs the
  children that are not complete in processes of their own; the results are the same either way.

The parent stage (``cv``, ``ablate``, ``repeat`` …) calls ``self.ctx.sweep(children)``, gets a
:class:`ChildRun` per child, and summarises with :func:`summarise`, which states its rules: sample sd with
``ddof=1``, a 95 % t-interval of the mean (mean ± t₀.₉₇₅,ₙ₋₁ · sd/√n), and NaN/inf values left out of the
statistics and counted (``<metric>_nonfinite``).
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class Child:
    name: str  # a short label: "fold3", "seed1", "edge+skip"
    overrides: dict[str, Any] = field(default_factory=dict)  # dotted manifest keys -> values
    stage: str = "train"
    labels: dict[str, Any] = field(default_factory=dict)  # columns of the summary table (fold=3, variant="edge")
    run: str | None = None  # for a child stage on a finished run (default: the parent's --run)
    checkpoint: Path | None = None


@dataclass
class ChildRun:
    child: Child
    run_id: str
    run_dir: Path
    metrics: dict
    reused: bool

    @property
    def row(self) -> dict:
        """The child's labels and its top-level numeric metrics, one table row."""
        return {"name": self.child.name, **self.child.labels,
                **{k: v for k, v in self.metrics.items() if _number(v)}, "run_id": self.run_id[:12]}

    def read_csv(self, rel: str = "per_case.csv") -> list[dict]:
        """A CSV the child wrote (its ``per_case.csv`` …): one dict per row, each value the text in the file, so
        that a parent gathering its children's cases writes them back unchanged (ids such as ``000012`` stay)."""
        import csv

        with open(self.run_dir / rel, newline="") as f:
            return list(csv.DictReader(f))


def child_request(parent, child: Child):
    """The runner Request of one child: the parent's request (manifest, dataset, data, fixture, runs folder,
    hardware) with the child's stage and overrides added after the parent's own."""
    overrides = dict(child.overrides)
    seed = overrides.pop("seed", parent.seed)  # a child's seed wins over the parent's --seed
    extra = [f"{k}={json.dumps(v)}" for k, v in overrides.items()]
    argv = list(parent.argv)
    if len(argv) > 1:  # the child's own command line: the parent's with the child's stage and overrides
        argv[1] = child.stage
        argv += [a for o in extra for a in ("-o", o)]
        argv += ["--seed", str(seed)] if "seed" in child.overrides else []
    return dataclasses.replace(parent, stage=child.stage, overrides=[*parent.overrides, *extra],
                               run_ref=child.run or parent.run_ref, checkpoint=child.checkpoint or parent.checkpoint,
                               seed=seed, dry_run=False, argv=argv)


def run_children(parent_request, children: Sequence[Child], log=print, title: str = "children") -> list[ChildRun]:
    """Plan and execute every child in turn (reusing complete ones). Planning all first means a bad override in
    the last variant fails before the first one trains. With a parallel launcher (``parent_request.launcher``)
    the children that are not complete run in processes of their own first; then every child is executed here in
    order, which reuses them, so what the parent gets is what a sequential sweep gives."""
    from . import runner

    plans = [(c, runner.plan(child_request(parent_request, c), log=lambda *_: None)) for c in children]
    launcher = None
    if getattr(parent_request, "launcher", "local") not in (None, "", "local"):
        from .launch import launch_children, parse

        launcher = parse(parent_request.launcher)
    computed: set[Path] = set()
    if launcher is not None and launcher.parallel:
        computed = launch_children(launcher, [(c.name, p) for c, p in plans], log=log, title=title)
    out = []
    for i, (c, p) in enumerate(plans):
        if launcher is not None and launcher.parallel:
            done_here = p.path in computed
            if done_here:  # computed by a worker just now: reuse it, do not --force it a second time
                p = dataclasses.replace(p, request=dataclasses.replace(p.request, force=False))
            result = runner.execute(p, log=log)
            out.append(ChildRun(c, p.run_id, Path(result["run_dir"]), result["metrics"],
                                result["reused"] and not done_here))
            continue
        state = "reused" if runner.RunDir(p.path).is_complete() and not p.request.force else "running"
        log(f"{title} {i + 1}/{len(plans)} {c.name}: {state} {p.path}")
        result = runner.execute(p, log=log)
        out.append(ChildRun(c, p.run_id, Path(result["run_dir"]), result["metrics"], result["reused"]))
    return out


# -- statistics -----------------------------------------------------------------------------------------------
def stats(values: Iterable[float], ddof: int = 1) -> dict:
    """{mean, sd, ci95: [lo, hi], n, nonfinite} over the finite values (NaN/inf counted, left out)."""
    vals = [float(v) for v in values]
    finite = [v for v in vals if math.isfinite(v)]
    n = len(finite)
    mean = sum(finite) / n if n else math.nan
    sd = math.sqrt(sum((v - mean) ** 2 for v in finite) / (n - ddof)) if n > ddof else (0.0 if n else math.nan)
    if n > 1:
        from scipy import stats as st

        half = float(st.t.ppf(0.975, n - 1)) * sd / math.sqrt(n)
        ci = [mean - half, mean + half]
    else:
        ci = [math.nan, math.nan]
    return {"mean": mean, "sd": sd, "ci95": ci, "n": n, "nonfinite": len(vals) - n}


def summarise(rows: Sequence[dict], metrics: Sequence[str] | None = None, by: Sequence[str] = (),
              ddof: int = 1) -> list[dict]:
    """One row per group of ``by`` columns (one row overall without ``by``): per metric ``<m>`` (mean),
    ``<m>_sd``, ``<m>_ci95_lo``, ``<m>_ci95_hi``, ``<m>_n`` and, when any, ``<m>_nonfinite``.

    ``metrics`` defaults to the numeric columns of the first row that are not ``by`` columns."""
    if not rows:
        return []
    metrics = list(metrics) if metrics is not None else [k for k, v in rows[0].items() if _number(v) and k not in by]
    groups: dict[tuple, list[dict]] = {}
    for r in rows:
        groups.setdefault(tuple(r.get(b) for b in by), []).append(r)
    out = []
    for key, members in groups.items():
        row: dict = dict(zip(by, key, strict=True))
        for m in metrics:
            s = stats([r[m] for r in members if _number(r.get(m))], ddof)
            row.update({m: s["mean"], f"{m}_sd": s["sd"], f"{m}_ci95_lo": s["ci95"][0], f"{m}_ci95_hi": s["ci95"][1],
                        f"{m}_n": s["n"]})
            if s["nonfinite"]:
                row[f"{m}_nonfinite"] = s["nonfinite"]
        out.append(row)
    return out


def headline(summary_row: dict, metrics: Sequence[str]) -> dict:
    """A summary row as a run's metrics: ``<m>`` mean, ``<m>_sd``, ``<m>_ci95`` [lo, hi], ``<m>_n``."""
    out = {}
    for m in metrics:
        if m in summary_row:
            out.update({m: summary_row[m], f"{m}_sd": summary_row[f"{m}_sd"],
                        f"{m}_ci95": [summary_row[f"{m}_ci95_lo"], summary_row[f"{m}_ci95_hi"]],
                        f"{m}_n": summary_row[f"{m}_n"]})
    return out


def mean_sd_table(summary: Sequence[dict], metrics: Sequence[str], by: Sequence[str] = (),
                  paper: dict[tuple, dict] | None = None) -> str:
    """Markdown: one row per group, ``mean ± sd [95 % CI]`` per metric, and the paper's value when given
    (``paper[(group values...)] = {metric: value}``)."""
    from .report import fmt, markdown_table

    header = [*by, *(f"{m} (mean ± sd, 95 % CI)" for m in metrics), "n"]
    if paper:
        header += [f"paper {m}" for m in metrics]
    body = []
    for r in summary:
        cells = [r.get(b) for b in by]
        cells += [f"{fmt(r[m])} ± {fmt(r[f'{m}_sd'])} [{fmt(r[f'{m}_ci95_lo'])}, {fmt(r[f'{m}_ci95_hi'])}]"
                  for m in metrics]
        cells.append(max((r.get(f"{m}_n", 0) for m in metrics), default=0))
        if paper:
            ref = paper.get(tuple(r.get(b) for b in by), {})
            cells += [ref.get(m) for m in metrics]
        body.append(cells)
    return markdown_table(header, body) + "\n\nsd: sample standard deviation (ddof 1); 95 % CI: t-interval of the mean."


def _number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)
