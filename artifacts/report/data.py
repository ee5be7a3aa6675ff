"""What each page of the HTML report shows, as plain data read from the run directories (no HTML here).

Every function takes run directories (or rows built from them) and returns dicts and lists of JSON-able values;
``render`` turns them into pages, and ``medrun runs show`` prints ``run_summary`` in the terminal, so the terminal
and the run page say the same thing. Nothing here writes.
"""

from __future__ import annotations

import csv
import json
import math
import re
import time
from datetime import datetime
from pathlib import Path

import yaml

from ..index import dict_diff, effective_status, flatten, live_status
from ..rundir import MANIFEST, RunDir

# the metric a reader looks for first, in order; then any number that is not bookkeeping
HEADLINE = ("dice", "dice_mean", "mean_dice", "accuracy", "balanced_accuracy", "auc", "auroc", "f1", "f1_macro",
            "qwk", "qwk_ctss", "jaccard", "delta_psnr", "psnr", "ndcg", "map", "asr", "rmse", "mae")
BOOKKEEPING = ("n", "steps", "epochs", "best_epoch", "seed", "seconds", "params", "n_params", "params_total", "fold",
               "folds")
# metric names where smaller is better (errors, distances, losses, times)
LOWER_IS_BETTER = re.compile(r"(^|_)(rmse|mae|mse|hd95|hd|assd|asd|loss|kl|fid|abs_?rel|sq_?rel|rmse_?log|err|error|"
                             r"nll|ece|brier|seconds|secs|latency|dist|distance|count_err)(_|$)")
FIGURE_TYPES = (".png", ".jpg", ".jpeg", ".svg", ".gif")
MAX_CASES = 2000  # per_case rows shown on a run page (worst first); the CSV itself stays in the run


def numeric(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def lower_is_better(metric: str) -> bool:
    return bool(LOWER_IS_BETTER.search(metric.lower()))


def _bookkeeping(k: str) -> bool:
    return k in BOOKKEEPING or k.startswith(("n_", "num_", "secs")) or k.endswith(("_seconds", "_sd", "_n"))


def headline(metrics: dict, prefer: list[str] = ()) -> tuple[str, float] | None:
    """The run's headline metric: one the paper reports if any (``prefer``), else Dice for segmentation,
    accuracy or AUC for classification …, never a count."""
    nums = {k: v for k, v in metrics.items() if numeric(v)}
    for key in (*prefer, *HEADLINE):
        if key in nums:
            return key, nums[key]
    for k, v in nums.items():
        if not _bookkeeping(k):
            return k, v
    return None


def _json(path: Path) -> dict:
    try:
        out = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return out if isinstance(out, dict) else {}


def _yaml(path: Path) -> dict:
    try:
        out = yaml.load(path.read_text(), Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
    except (OSError, yaml.YAMLError):
        return {}
    return out if isinstance(out, dict) else {}


def _time(stamp) -> float | None:
    try:
        return datetime.strptime(str(stamp), "%Y-%m-%dT%H:%M:%S%z").timestamp()
    except ValueError:
        return None


def paper_of(manifest: dict) -> dict:
    """The manifest's ``paper:`` section: card, table, setting and the paper's numbers (``expect``)."""
    paper = manifest.get("paper") or {}
    expect = {k: v for k, v in (paper.get("expect") or {}).items() if numeric(v)}
    return {"card": paper.get("card"), "table": paper.get("table"), "setting": paper.get("setting"), "expect": expect}


def paper_rows(metrics: dict, expect: dict) -> list[dict]:
    """One row per metric the paper reports or the run measured: run value, paper value, Δ (run − paper)."""
    flat = {k: v for k, v in flatten(metrics).items() if numeric(v)}
    rows = []
    for k in [*expect, *[k for k in flat if k not in expect]]:
        if k.endswith(("_sd", "_n")) or "_ci95" in k:
            continue
        ours, theirs = flat.get(k), expect.get(k)
        rows.append({"metric": k, "run": ours, "paper": theirs, "sd": flat.get(f"{k}_sd"),
                     "delta": ours - theirs if numeric(ours) and numeric(theirs) else None,
                     "lower_is_better": lower_is_better(k)})
    return rows


class Verifier:
    """Verification at report time, quick enough for every run of a lab's folder: artifacts and data trust the
    stat cache for files whose size and mtime are unchanged since they were last hashed (``medrun verify
    --rehash RUN`` reads everything), the installed code and environment are read once, and code or environment
    drift is a note, not a failure (as in ``medrun verify`` without --strict)."""

    def __init__(self):
        from ..env import capture_env
        from ..fingerprint import StatCache, stat_cache_path

        self.cache = StatCache(stat_cache_path())
        self.env = capture_env()
        self.code: dict[tuple, dict] = {}

    def __call__(self, run: Run) -> dict:
        if run.status != "complete":
            return {"state": "not complete", "problems": []}
        from ..fingerprint import code_fingerprint
        from ..verify import check_artifacts, check_code, check_data, check_env, failures

        try:
            roots = (run.info.get("code") or {}).get("roots")
            key = tuple(roots) if isinstance(roots, list) and all(isinstance(r, str) for r in roots) else None
            if key not in self.code:
                self.code[key] = code_fingerprint(list(key) if key else None)
            cats = {"artifacts": check_artifacts(run.rd, self.cache), "data": check_data(run.rd, rehash=False),
                    "code": check_code(run.rd, self.code[key]), "environment": check_env(run.rd, self.env)}
        except Exception as e:  # a run that cannot even be read is reported, never a crash of the whole report
            return {"state": "fail", "problems": [str(e).splitlines()[0]]}
        problems = failures({"categories": cats, "signature": {}})
        drift = [name for name in ("code", "environment") if cats[name]["status"] != "ok"]
        state = "fail" if problems else ("ok, " + " and ".join(drift) + " changed since" if drift else "ok")
        return {"state": state, "problems": problems}

    def close(self) -> None:
        self.cache.close()


class Run:
    """One run directory as the report reads it (each file read once, lazily)."""

    def __init__(self, path: Path, runs_root: Path):
        self.rd = RunDir(path)
        self.path = path
        self.rel = path.relative_to(runs_root).as_posix() if path.is_relative_to(runs_root) else path.name
        self.info = self.rd.info() if (path / "run.json").exists() else {}
        sealed = (path / MANIFEST).exists()
        self.status = live_status(effective_status(self.info, sealed), path, self.info)
        self._metrics = self._manifest = None

    @property
    def id(self) -> str:
        return str(self.info.get("id") or "")

    @property
    def metrics(self) -> dict:
        if self._metrics is None:
            self._metrics = _json(self.path / "metrics.json")
        return self._metrics

    @property
    def manifest(self) -> dict:
        if self._manifest is None:
            self._manifest = _yaml(self.path / "manifest.yaml")
        return self._manifest

    @property
    def paper(self) -> dict:
        return paper_of(self.manifest)

    def page(self) -> str:
        """The run page's path inside the report folder."""
        return f"runs/{self.rel}.html"

    def wall_seconds(self) -> float | None:
        a, b = _time(self.info.get("started")), _time(self.info.get("ended"))
        return b - a if a is not None and b is not None else None

    def headline(self) -> tuple[str, float] | None:
        return headline(flatten(self.metrics), list(self.paper["expect"]))


def find_runs(runs_root: Path) -> list[Run]:
    """Every run directory ``<pipeline>/<stage>-<id>/`` with a run.json, newest first (dot folders skipped)."""
    runs = []
    for rj in runs_root.glob("*/*-*/run.json"):
        d = rj.parent
        if not (d.parent.name.startswith(".") or d.name.startswith(".")):
            runs.append(Run(d, runs_root))
    return sorted(runs, key=lambda r: (str(r.info.get("started") or ""), r.rel), reverse=True)


def index_row(run: Run, verify: dict, now: float | None = None) -> dict:
    """The index page's row for one run."""
    head = run.headline()
    expect = run.paper["expect"]
    paper_value = expect.get(head[0]) if head else None
    started = _time(run.info.get("started"))
    return {
        "page": run.page(), "rel": run.rel, "id": run.id[:12], "pipeline": run.info.get("pipeline"),
        "stage": run.info.get("stage"), "dataset": run.info.get("dataset"), "fixture": bool(run.info.get("fixture")),
        "status": run.status, "metric": head[0] if head else None, "value": head[1] if head else None,
        "paper": paper_value, "delta": head[1] - paper_value if head and numeric(paper_value) else None,
        "table": run.paper["table"], "verify": verify["state"],
        "age_hours": round(((now or time.time()) - started) / 3600, 2) if started else None,
        "wall_seconds": run.wall_seconds(), "started": run.info.get("started"),
    }


def reproduction_rows(runs: list[Run]) -> list[dict]:
    """One row per pipeline × paper table: the paper's numbers beside the best complete run's.

    "Best" is judged on the table's first metric (direction from its name: errors and distances are best
    smallest); a run on real data beats any fixture run, whatever its numbers."""
    groups: dict[tuple, list[Run]] = {}
    for r in runs:
        p = r.paper
        if r.status == "complete" and p["expect"] and any(k in flatten(r.metrics) for k in p["expect"]):
            groups.setdefault((r.info.get("pipeline"), p["table"] or ""), []).append(r)
    rows = []
    for (pipeline, table), group in sorted(groups.items()):
        primary = next(iter(group[0].paper["expect"]))
        sign = 1 if lower_is_better(primary) else -1

        def score(r: Run, primary=primary, sign=sign):
            v = flatten(r.metrics).get(primary)
            return (bool(r.info.get("fixture")), sign * v if numeric(v) else math.inf)

        best = min(group, key=score)
        metrics = [row for row in paper_rows(best.metrics, best.paper["expect"]) if row["paper"] is not None]
        rows.append({"pipeline": pipeline, "table": table, "setting": best.paper["setting"], "runs": len(group),
                     "best": best.id[:12], "page": best.page(), "dataset": best.info.get("dataset"),
                     "fixture": bool(best.info.get("fixture")), "primary": primary, "metrics": metrics})
    return rows


def curves(run_dir: Path) -> list[dict]:
    """Learning curves from the run's own log (``logs/metrics.csv``): one series per logged number, x = epoch
    (step where the row has no epoch)."""
    path = run_dir / "logs" / "metrics.csv"
    series: dict[str, dict] = {}
    try:
        with path.open(newline="") as f:
            for row in csv.DictReader(f):
                x = _float(row.get("epoch")) if row.get("epoch") not in (None, "") else _float(row.get("step"))
                for k, v in row.items():
                    if k in ("epoch", "step") or v in (None, ""):
                        continue
                    y = _float(v)
                    if x is not None and y is not None:
                        s = series.setdefault(k, {"name": k, "x": [], "y": []})
                        s["x"].append(x)
                        s["y"].append(y)
    except (OSError, csv.Error):
        return []
    return list(series.values())


def _float(v) -> float | None:
    try:
        f = float(v)
    except (TypeError, ValueError):
        return None
    return f if math.isfinite(f) else None


def figures(run_dir: Path) -> list[str]:
    """Every image under figures/, as paths relative to the run directory, sorted (overlays last)."""
    root = run_dir / "figures"
    if not root.is_dir():
        return []
    found = [p.relative_to(run_dir).as_posix() for p in root.rglob("*")
             if p.suffix.lower() in FIGURE_TYPES and p.is_file()]
    return sorted(found, key=lambda s: (s.count("/"), s))


def per_case(run_dir: Path, prefer: list[str] = ()) -> dict:
    """per_case.csv as a table, worst cases first on the headline metric, with each case's overlay where the run
    drew one (``figures/overlays/<case>.png``, or another figure named for the case)."""
    path = run_dir / "per_case.csv"
    try:
        with path.open(newline="") as f:
            rows = list(csv.DictReader(f))
    except (OSError, csv.Error, UnicodeDecodeError):
        return {"columns": [], "rows": [], "sort": None, "total": 0}
    if not rows:
        return {"columns": [], "rows": [], "sort": None, "total": 0}
    columns = list(rows[0])
    numeric_cols = [c for c in columns[1:] if all(_float(r.get(c)) is not None for r in rows if r.get(c) != "")]
    first = {c: _float(rows[0].get(c)) for c in numeric_cols}
    head = headline({c: v for c, v in first.items() if v is not None}, list(prefer))
    key = head[0] if head else None
    if key:
        sign = -1 if lower_is_better(key) else 1
        rows.sort(key=lambda r: (_float(r.get(key)) is None, sign * (_float(r.get(key)) or 0.0)))
    overlays = {_norm(p.stem): p.relative_to(run_dir).as_posix()
                for p in sorted((run_dir / "figures").rglob("*.png"), key=lambda p: "overlays" not in p.parts)[::-1]}
    out = []
    for r in rows[:MAX_CASES]:
        case = str(r.get(columns[0], ""))
        out.append({"cells": [r.get(c, "") for c in columns], "overlay": overlays.get(_norm(case))})
    return {"columns": columns, "rows": out, "sort": key, "total": len(rows), "numeric": numeric_cols}


def _norm(name: str) -> str:
    """Case names as file stems, however a pipeline made them file-safe ("benign (3)" ~ "benign__3_")."""
    return re.sub(r"[^a-z0-9]+", "_", name.lower()).strip("_")


def summaries(metrics: dict, prefer: list[str] = ()) -> list[dict]:
    """Replicate / fold summaries in metrics.json (``m``, ``m_sd``, ``m_ci95``, ``m_n``): mean, sd, 95 % interval;
    only the metrics the paper reports when it reports any of them, never counts or timings."""
    out = []
    keys = [k for k in prefer if k in metrics] or [k for k in metrics if not _bookkeeping(k)]
    for k in keys:
        v = metrics[k]
        ci = metrics.get(f"{k}_ci95")
        if numeric(v) and isinstance(ci, list) and len(ci) == 2 and all(numeric(c) for c in ci):
            out.append({"metric": k, "mean": v, "sd": metrics.get(f"{k}_sd"), "lo": ci[0], "hi": ci[1],
                        "n": metrics.get(f"{k}_n")})
    return out


def children(run: Run, by_id: dict[str, Run]) -> list[dict]:
    """The run's child runs (folds, seeds, variants) with their page links and metrics where they are here."""
    out = []
    for c in run.info.get("children") or []:
        if not isinstance(c, dict):
            continue
        child = by_id.get(str(c.get("id")))
        out.append({"name": c.get("name"), "stage": c.get("stage"), "id": str(c.get("id") or "")[:12],
                    "page": child.page() if child else None, "status": child.status if child else "not here",
                    "metrics": {k: v for k, v in flatten(child.metrics).items() if numeric(v)} if child else {}})
    return out


def strip_points(kids: list[dict], metrics: list[str]) -> list[dict]:
    """Per-child values of the summarised metrics, for the folds' strip plot."""
    return [{"metric": m, "names": [k["name"] for k in kids if m in k["metrics"]],
             "values": [k["metrics"][m] for k in kids if m in k["metrics"]]} for m in metrics]


def manifest_diff(manifest: dict, default: dict | None) -> dict:
    """The run's manifest flattened to dotted keys, each marked where it differs from the pipeline's default
    manifest for the same dataset (``default`` None: no default known, nothing marked)."""
    flat = flatten(manifest)
    if default is None:
        return {"rows": [{"key": k, "value": v, "default": None, "differs": False} for k, v in flat.items()],
                "known": False}
    base = flatten(default)
    rows = [{"key": k, "value": v, "default": base.get(k), "differs": k in base and base[k] != v or k not in base}
            for k, v in flat.items()]
    rows += [{"key": k, "value": None, "default": v, "differs": True} for k, v in base.items() if k not in flat]
    return {"rows": rows, "known": True}


def reproduce_command(info: dict) -> str:
    """The command that runs this stage again from its own recorded manifest."""
    return f"medrun rerun {str(info.get('id') or '')[:12]}"


def run_summary(run: Run, by_id: dict[str, Run] | None = None, verify: dict | None = None) -> dict:
    """What the run page's header and provenance say, and what ``medrun runs show`` prints."""
    info = run.info
    code = info.get("code") or {}
    parent = info.get("parent")
    by_id = by_id or {}
    p = by_id.get(str(parent)) if parent else None
    return {
        "id": run.id, "rel": run.rel, "run_dir": str(run.path), "pipeline": info.get("pipeline"),
        "stage": info.get("stage"), "dataset": info.get("dataset"), "fixture": bool(info.get("fixture")),
        "status": run.status, "recorded_status": info.get("status"), "started": info.get("started"),
        "ended": info.get("ended"), "wall_seconds": run.wall_seconds(), "seed": info.get("seed"),
        "determinism": info.get("determinism"), "code_sha256": code.get("sha256"),
        "git_commit": code.get("git_commit"), "code_version": code.get("version"),
        "data_sha256": info.get("data_sha256"), "env_sha256": info.get("env_sha256"),
        "parent": parent, "parent_page": p.page() if p else None, "checkpoint": info.get("checkpoint"),
        "command": " ".join(info.get("command") or []), "reproduce": reproduce_command(info),
        "paper": run.paper, "metrics_vs_paper": paper_rows(run.metrics, run.paper["expect"]),
        "verify": verify,
    }


def compare_data(runs: list[Run]) -> dict:
    """The compare page: manifest diff against the first run, metrics side by side with deltas, the learning
    curves of all, and per-case values joined on the case column for the scatter of the first two."""
    a = runs[0]
    manifest = [{"run": r.id[:12], "diff": dict_diff(a.manifest, r.manifest)} for r in runs[1:]]
    flat = [{k: v for k, v in flatten(r.metrics).items() if numeric(v)} for r in runs]
    keys = [k for k in flat[0] if not k.endswith(("_sd", "_n"))]
    keys += [k for f in flat[1:] for k in f if k not in keys and not k.endswith(("_sd", "_n"))]
    metrics = [{"metric": k, "values": [f.get(k) for f in flat],
                "deltas": [f.get(k) - flat[0][k] if numeric(f.get(k)) and numeric(flat[0].get(k)) else None
                           for f in flat[1:]], "lower_is_better": lower_is_better(k)} for k in dict.fromkeys(keys)]
    scatter = {}
    if len(runs) > 1:
        pa, pb = per_case(runs[0].path), per_case(runs[1].path)
        if pa["columns"] and pb["columns"]:
            ia = {r["cells"][0]: dict(zip(pa["columns"], r["cells"], strict=False)) for r in pa["rows"]}
            ib = {r["cells"][0]: dict(zip(pb["columns"], r["cells"], strict=False)) for r in pb["rows"]}
            common = [c for c in ia if c in ib]
            for m in [c for c in pa.get("numeric", []) if c in pb.get("numeric", [])]:
                pts = [(c, _float(ia[c][m]), _float(ib[c][m])) for c in common]
                pts = [p for p in pts if p[1] is not None and p[2] is not None]
                if pts:
                    scatter[m] = {"cases": [p[0] for p in pts], "a": [p[1] for p in pts], "b": [p[2] for p in pts]}
    return {"runs": [{"id": r.id[:12], "page": r.page(), "pipeline": r.info.get("pipeline"),
                      "stage": r.info.get("stage"), "dataset": r.info.get("dataset")} for r in runs],
            "manifest": manifest, "metrics": metrics, "curves": [curves(r.path) for r in runs], "scatter": scatter}
