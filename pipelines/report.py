"""What a run shows a reader: ``paper.md`` (this run's numbers beside the paper's), learning curves and
confusion matrices as PNG."""

from __future__ import annotations

import csv
import functools
import math
from pathlib import Path


def fmt(v) -> str:
    """A table cell: 4 decimals for floats, — for None and NaN."""
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "—"
    return f"{v:.4f}" if isinstance(v, float) else str(v)


def paper_md(spec, manifest, metrics: dict, ctx, *, title: str | None = None, sections: list[str] = (),
             present_only: bool = False, expect: dict | None = None, table: str | None = None,
             setting: str | None = None, keys: list[str] | None = None) -> str:
    """A Markdown page: the paper's setting, a metric table (run | paper | Δ), the data used, and extra sections.

    The paper's values come from the manifest's ``paper:`` section unless given: a stage that reports another
    table of the paper passes ``expect`` (``{metric: value}``), ``table`` and ``setting`` explicitly. ``keys`` are
    the rows (default: the expected metrics, then ``eval.metrics``); ``present_only`` keeps only the rows this run
    has a number for (stages that report a subset)."""
    paper = manifest.paper
    expect = dict(paper.expect if paper else {}) if expect is None else dict(expect)
    table = table if table is not None else (paper.table if paper else None)
    setting = setting if setting is not None else (paper.setting if paper else None)
    lines = [f"# {title or spec.title}: {ctx.stage} run `{ctx.run.info().get('id', '')[:12]}`", ""]
    lines.append(f"Paper: {spec.paper}" + (f", {table}" if table else ""))
    if setting:
        lines.append(f"Paper's setting: {setting}")
    roots = ", ".join(f"`{p}`" for p in ctx.data_roots.values())
    if ctx.fixture:
        lines += [
            "",
            f"**Data: generated fixture** ({roots}), a miniature in the public layout. These numbers show "
            "the pipeline learns; they are not comparable with the paper's, which come from the real dataset.",
        ]
    else:
        lines += ["", f"Data: {roots}"]
    if keys is None:
        keys = list(expect) + [k for k in manifest.eval.metrics if k not in expect]
    if present_only:
        keys = [k for k in keys if k in metrics]
    lines += ["", "| metric | this run | paper | Δ (run − paper) |", "|---|---|---|---|"]
    for k in keys:
        ours, theirs = metrics.get(k), expect.get(k)
        delta = ours - theirs if isinstance(ours, (int, float)) and theirs is not None else None
        lines.append(f"| {k} | {fmt(ours)} | {fmt(theirs)} | {fmt(delta)} |")
    for s in sections:
        lines += ["", s]
    return "\n".join(lines) + "\n"


def paper_data(spec) -> dict:
    """The paper's tables and our notes on comparing with them: ``pipelines/<package>/paper.yaml`` beside the
    pipeline (``{"tables": {name: {"title", "header", "rows"}}, "notes": {name: markdown}}``); empty without one."""
    return _paper_data(spec.impl.split(":")[0].rsplit(".", 1)[0]) if spec else {}


def _paper_data_file(package: str) -> Path:
    import importlib

    return Path(importlib.import_module(package).__file__).parent / "paper.yaml"


@functools.cache
def _paper_data(package: str) -> dict:
    path = _paper_data_file(package)
    if not path.exists():
        return {}
    import yaml

    return yaml.safe_load(path.read_text()) or {}


def paper_table(spec, name: str, *, title: bool = True) -> str:
    """One of the paper's tables as Markdown (``## title`` then the table)."""
    t = paper_data(spec)["tables"][name]
    body = markdown_table(t["header"], t["rows"])
    return f"## {t['title']}\n\n{body}" if title and t.get("title") else body


def paper_note(spec, name: str) -> str:
    """One of the notes in the pipeline's ``paper.yaml`` (Markdown, usually a ``## Notes`` section)."""
    return paper_data(spec)["notes"][name].rstrip()


def markdown_table(header: list[str], rows: list[list]) -> str:
    out = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    out += ["| " + " | ".join(fmt(c) for c in r) + " |" for r in rows]
    return "\n".join(out)


def read_series(metrics_csv: Path) -> dict[str, list[tuple[float, float]]]:
    """Per-epoch series from Lightning's CSVLogger file: {name: [(epoch, value), ...]} (per-step columns skipped)."""
    series: dict[str, list[tuple[float, float]]] = {}
    with open(metrics_csv) as f:
        for row in csv.DictReader(f):
            for k, v in row.items():
                if k in ("epoch", "step") or not v or k.endswith("_step"):
                    continue
                series.setdefault(k.removesuffix("_epoch"), []).append((float(row["epoch"]), float(v)))
    return series


def learning_curves_figure(metrics_csv: Path):
    """A matplotlib figure of every logged per-epoch series (losses on one panel, the rest on another); None when
    nothing was logged."""
    if not metrics_csv.exists():
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    series = read_series(metrics_csv)
    if not series:
        return None
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for name, pts in sorted(series.items()):
        ax = axes[0] if "loss" in name else axes[1]
        xs, ys = zip(*pts, strict=True)
        ax.plot([x + 1 for x in xs], ys, marker="o", label=name)
    for ax, t in zip(axes, ("loss", "metrics"), strict=True):
        ax.set_xlabel("epoch")
        ax.set_title(t)
        if ax.lines:
            ax.legend()
    fig.tight_layout()
    return fig


def learning_curves(metrics_csv: Path, out_png: Path) -> Path | None:
    """``learning_curves_figure`` written to ``out_png`` (atomically)."""
    fig = learning_curves_figure(metrics_csv)
    return None if fig is None else save_figure(fig, out_png)


def save_figure(fig, out_png: Path, dpi: int = 100, **savefig_kw) -> Path:
    """Write a matplotlib figure atomically (rendered to bytes, then temp file + rename, creating its folder) and
    close it: a full disk or a kill leaves the earlier file or none, never a truncated PNG."""
    import io

    import matplotlib.pyplot as plt

    from medrun.artifacts import atomic_write

    buf = io.BytesIO()
    try:
        fig.savefig(buf, format="png", dpi=dpi, **savefig_kw)
    finally:
        plt.close(fig)
    atomic_write(Path(out_png), buf.getvalue())
    return Path(out_png)


def confusion_axes(ax, cm, classes: list[str], title: str = "confusion matrix") -> None:
    """Draw a confusion matrix (rows: true, columns: predicted) with its counts on ``ax``."""
    import numpy as np

    cm = np.asarray(cm)
    ax.imshow(cm, cmap="Blues")
    ax.set_xticks(range(len(classes)), classes, rotation=35, ha="right")
    ax.set_yticks(range(len(classes)), classes)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title)
    for i in range(cm.shape[0]):
        for j in range(cm.shape[1]):
            ax.text(
                j, i, str(cm[i, j]), ha="center", va="center", color="white" if cm[i, j] > cm.max() / 2 else "black"
            )
