"""``medrun report``: a static site of runs, written from ``data`` through Jinja templates.

The site needs no server and no network: the pages, ``assets/report.css``, ``assets/report.js`` and the
plotly.js bundle that ships inside the ``plotly`` wheel all lie in the report folder, and figures are linked
relative to it, so ``file://…/index.html`` works on an air-gapped machine (keep the runs folder beside it).

Re-running updates only the pages whose data changed: each page's data is hashed and the hash kept in
``.medrun-report.json``; a page with the same hash is not written again. The folder is medrun's only when that
file is there: a non-empty folder without it is refused, and the only files ever removed are pages this
report wrote before (listed in that file) whose runs are gone.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from pathlib import Path

from medrun.errors import UsageError

from ..rundir import atomic_write
from . import data

STATE = ".medrun-report.json"
HERE = Path(__file__).parent


def _env():
    import jinja2

    env = jinja2.Environment(loader=jinja2.FileSystemLoader(HERE / "templates"), autoescape=True,
                             undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True)
    env.filters["num"] = _num
    env.filters["tojson_safe"] = _json_for_script
    return env


def _num(v, digits: int = 4) -> str:
    if v is None:
        return "—"
    if isinstance(v, bool):
        return str(v)
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        return f"{v:.{digits}f}" if abs(v) < 1e5 else f"{v:.4g}"
    return str(v)


def _json_for_script(obj) -> str:
    """JSON for a ``<script type="application/json">`` block: ``</`` cannot close the tag early."""
    from markupsafe import Markup

    return Markup(json.dumps(obj, default=str).replace("</", "<\\/"))


def _template_hash() -> str:
    h = hashlib.sha256()
    for p in sorted((HERE / "templates").iterdir()) + sorted((HERE / "static").iterdir()):
        h.update(p.name.encode() + p.read_bytes())
    return h.hexdigest()


def _check_out(out: Path, runs_root: Path) -> dict:
    """The previous state, after refusing a folder that is not an earlier report."""
    if out.is_symlink() or (out.exists() and not out.is_dir()):
        raise UsageError(f"--out {out} is not a folder", fix="pass a new or empty folder, or an earlier report folder")
    if (runs_root / "x").resolve().parent == out.resolve():
        raise UsageError(f"--out {out} is the runs folder itself", fix="pass a folder of its own, e.g. runs/report")
    state_file = out / STATE
    if out.is_dir() and any(out.iterdir()) and not state_file.is_file():
        raise UsageError(f"--out {out} is not empty and holds no earlier medrun report ({STATE} is missing)",
                         fix="pass a new or empty folder; the report never writes into a folder it did not make")
    inside = next((p for p in (out.resolve(), *out.resolve().parents) if (p / "run.json").is_file()), None)
    if inside is not None:
        raise UsageError(f"--out {out} is inside the run directory {inside}, which the report would change",
                         fix="pass a folder of its own, e.g. runs/report")
    try:
        state = json.loads(state_file.read_text()) if state_file.is_file() else {}
    except (OSError, ValueError):
        state = {}
    return state if isinstance(state, dict) and isinstance(state.get("pages"), dict) else {"pages": {}}


def _rel(target: Path, page: Path) -> str:
    """``target`` as a link from the page at ``page`` (both absolute), for file:// and any web server."""
    return Path(os.path.relpath(target, page.parent)).as_posix()


def _own_page(rel: str) -> bool:
    """A page name this report writes (``runs/…/*.html``, ``compare/*.html``): an edited state file cannot make
    it remove anything else."""
    parts = Path(rel).parts
    return (not Path(rel).is_absolute() and ".." not in parts and len(parts) >= 2 and parts[0] in ("runs", "compare")
            and rel.endswith(".html"))


class Site:
    """One report folder and what was written into it this time."""

    def __init__(self, out: Path, runs_root: Path):
        self.out, self.runs_root = out, runs_root
        self.state = _check_out(out, runs_root)
        self.env = _env()
        self.templates = _template_hash()
        self.written: list[str] = []
        self.kept: list[str] = []
        self.pages: dict[str, str] = {}

    def page(self, rel: str, template: str, **ctx) -> None:
        """Render ``template`` into ``rel`` unless the same data made the page there before."""
        key = hashlib.sha256((self.templates + json.dumps(ctx, sort_keys=True, default=str)).encode()).hexdigest()
        self.pages[rel] = key
        target = self.out / rel
        if self.state["pages"].get(rel) == key and target.is_file():
            self.kept.append(rel)
            return
        depth = rel.count("/")
        root = "../" * depth
        body = self.env.get_template(template).render(root=root, **ctx)
        target.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(target, body)
        self.written.append(rel)

    def link(self, run_dir: Path, rel: str, page_rel: str) -> str:
        """A file of a run directory as a link from a report page."""
        return _rel(run_dir / rel, self.out / page_rel)

    def assets(self) -> None:
        import plotly

        src = Path(plotly.__file__).parent / "package_data" / "plotly.min.js"
        (self.out / "assets").mkdir(parents=True, exist_ok=True)
        for name, path in (("plotly.min.js", src), ("report.js", HERE / "static" / "report.js"),
                           ("report.css", HERE / "static" / "report.css")):
            target = self.out / "assets" / name
            if not target.is_file() or target.stat().st_size != path.stat().st_size or \
                    target.read_bytes() != path.read_bytes():
                tmp = target.with_name(f".{name}.tmp")
                shutil.copyfile(path, tmp)
                os.replace(tmp, target)

    def keep(self, rel: str) -> None:
        """An earlier page that stays as it is (a compare page made by an earlier call)."""
        self.pages[rel] = self.state["pages"][rel]

    def finish(self) -> list[str]:
        """Drop pages of the earlier report whose runs are gone (only files this report listed), save the state."""
        removed = []
        for rel in self.state["pages"]:
            if rel in self.pages:
                continue
            if not _own_page(rel):
                continue
            target = self.out / rel
            if target.is_file() and not target.is_symlink() and target.resolve().is_relative_to(self.out.resolve()):
                target.unlink()
                removed.append(rel)
        atomic_write(self.out / STATE, json.dumps({"version": 1, "pages": self.pages}, indent=1, sort_keys=True))
        return removed


def build(runs_root: Path, out: Path, *, select: list[Path] | None = None, pipeline: str | None = None,
          compare: list[Path] | None = None, defaults=None, verify: bool = True) -> dict:
    """Write the report of the runs under ``runs_root`` (all, or ``select``) into ``out``.

    ``compare``: run directories for one more compare page. ``defaults(info, manifest) -> dict | None`` gives the
    default manifest of a run's pipeline and dataset, to mark what the run changed. Returns what was written."""
    t0 = time.perf_counter()
    runs_root = Path(runs_root)
    site = Site(Path(out), runs_root)
    everything = data.find_runs(runs_root)
    by_id = {r.id: r for r in everything}
    runs = everything
    if select:
        chosen = {p.resolve() for p in select}
        runs = [r for r in runs if r.path.resolve() in chosen]
    if pipeline:
        runs = [r for r in runs if r.info.get("pipeline") == pipeline]
    now = time.time()
    site.assets()
    rows = []
    verifier = data.Verifier() if verify else None
    try:
        for r in runs:
            ver = verifier(r) if verifier else {"state": "not checked", "problems": []}
            rows.append(data.index_row(r, ver, now))
            _run_page(site, r, by_id, ver, defaults)
    finally:
        if verifier:
            verifier.close()
    compares = []
    if compare:
        ids = [by_id.get(str(data.Run(p, runs_root).info.get("id"))) or data.Run(p, runs_root) for p in compare]
        rel = "compare/" + "-vs-".join(r.id[:12] for r in ids) + ".html"
        site.page(rel, "compare.html", title="compare " + " · ".join(r.id[:12] for r in ids),
                  c=_linked_compare(site, data.compare_data(ids), rel))
        compares.append(rel)
    for k in site.state["pages"]:
        if k.startswith("compare/") and k not in site.pages and (site.out / k).is_file():
            site.keep(k)
    compare_links = sorted(k for k in site.pages if k.startswith("compare/"))
    site.page("index.html", "index.html", title=f"medrun runs — {runs_root}", runs_root=str(runs_root),
              rows=rows, reproduction=data.reproduction_rows(runs), compares=compare_links,
              generated=time.strftime("%Y-%m-%d %H:%M:%S %z"))
    removed = site.finish()
    return {"out": str(site.out), "index": str(site.out / "index.html"), "runs": len(runs),
            "written": site.written, "unchanged": len(site.kept), "removed": removed, "compare": compares,
            "seconds": round(time.perf_counter() - t0, 3)}


def _run_page(site: Site, r: data.Run, by_id: dict, ver: dict, defaults) -> None:
    rel = r.page()
    summary = data.run_summary(r, by_id, ver)
    if summary["parent_page"]:
        summary["parent_page"] = _rel(site.out / summary["parent_page"], site.out / rel)
    kids = data.children(r, by_id)
    for k in kids:
        k["link"] = _rel(site.out / k["page"], site.out / rel) if k["page"] else None
    sums = data.summaries(r.metrics, list(r.paper["expect"]))
    default = None
    if defaults is not None:
        try:
            default = defaults(r.info, r.manifest)
        except Exception:  # a default manifest that no longer loads marks nothing; the page still renders
            default = None
    cases = data.per_case(r.path, list(r.paper["expect"]))
    for row in cases["rows"]:
        row["overlay"] = site.link(r.path, row["overlay"], rel) if row["overlay"] else None
    figs = [{"name": f.removeprefix("figures/"), "src": site.link(r.path, f, rel)} for f in data.figures(r.path)]
    files = {name: site.link(r.path, name, rel) for name in ("paper.md", "metrics.json", "manifest.yaml",
                                                               "run.json", "per_case.csv") if (r.path / name).is_file()}
    strip = data.strip_points(kids, [s["metric"] for s in sums]) if kids else []
    site.page(rel, "run.html", title=f"{r.info.get('pipeline')} {r.info.get('stage')} {r.id[:12]}", s=summary,
              manifest=data.manifest_diff(r.manifest, default), curves=curve_plots([data.curves(r.path)]),
              figures=figs, cases=cases, summaries=sums, children=kids, summary_plot=summary_plot(sums, strip),
              files=files, run_dir_link=_rel(r.path, site.out / rel) + "/")


def curve_plots(series_per_run: list[list[dict]], names: list[str] | None = None) -> list[dict]:
    """Plotly figures of learning curves: losses in one, every other logged number in another; with several
    runs (compare), each series once per run, named by run."""
    groups: dict[str, list] = {"losses": [], "metrics": []}
    for i, series in enumerate(series_per_run):
        for s in series:
            name = s["name"] if names is None else f"{names[i]} · {s['name']}"
            g = "losses" if "loss" in s["name"] else "metrics"
            groups[g].append({"type": "scatter", "mode": "lines+markers", "name": name, "x": s["x"], "y": s["y"]})
    return [{"title": g, "data": traces,
             "layout": {"title": {"text": g}, "xaxis": {"title": {"text": "epoch"}}, "height": 360,
                        "margin": {"t": 40, "l": 50, "r": 10, "b": 40}}}
            for g, traces in groups.items() if traces]


def summary_plot(sums: list[dict], strip: list[dict]) -> dict | None:
    """Mean with its 95 % interval per summarised metric, and each fold / seed as a point beside it."""
    if not sums:
        return None
    traces = [{"type": "scatter", "mode": "markers", "name": "mean (95 % CI)", "x": [s["metric"] for s in sums],
               "y": [s["mean"] for s in sums], "marker": {"size": 11, "symbol": "diamond"},
               "error_y": {"type": "data", "symmetric": False, "array": [s["hi"] - s["mean"] for s in sums],
                           "arrayminus": [s["mean"] - s["lo"] for s in sums]}}]
    for st in strip:
        if st["values"]:
            traces.append({"type": "box", "boxpoints": "all", "jitter": 0.4, "pointpos": 0,
                           "fillcolor": "rgba(0,0,0,0)", "line": {"width": 0}, "name": st["metric"],
                           "x": [st["metric"]] * len(st["values"]),
                           "y": st["values"], "text": st["names"], "showlegend": False, "hoveron": "points"})
    return {"data": traces, "layout": {"title": {"text": "summary over child runs"}, "height": 380,
                                       "margin": {"t": 40, "l": 50, "r": 10, "b": 80}}}


def _linked_compare(site: Site, c: dict, rel: str) -> dict:
    for r in c["runs"]:
        r["link"] = _rel(site.out / r["page"], site.out / rel)
    c["curves"] = curve_plots(c["curves"], [r["id"] for r in c["runs"]])
    return c

