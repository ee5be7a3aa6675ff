"""What a run shows a reader: ``paper.md`` (this run's numbers beside the paper's), learning curves and
confusion matrices as PNG."""

from __future__ import annotations

import csv
import math
from pathlib import Path


def _fmt(v) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "—"
    return f"{v:.4f}" if isinstance(v, float) else str(v)


def paper_md(spec, manifest, metrics: dict, ctx, *, title: str | None = None, sections: list[str] = (),
             present_only: bool = False) -> str:
    """A Markdown page: the paper's setting, a metric table (run | paper | Δ), the data used, and extra sections.

    ``present_only`` keeps only the table rows this run has a number for (stages that report a subset)."""
    paper = manifest.paper
    lines = [f"# {title or spec.title}: {ctx.stage} run `{ctx.run.info().get('id', '')[:12]}`", ""]
    lines.append(f"Paper: {spec.paper}" + (f", {paper.table}" if paper and paper.table else ""))
    if paper and paper.setting:
        lines.append(f"Paper's setting: {paper.setting}")
    roots = ", ".join(f"`{p}`" for p in ctx.data_roots.values())
    if ctx.fixture:
        lines += ["", f"**Data: generated fixture** ({roots}), a miniature in the public layout. These numbers show "
                      "the pipeline learns; they are not comparable with the paper's, which come from the real dataset."]
    else:
        lines += ["", f"Data: {roots}"]
    expect = paper.expect if paper else {}
    keys = list(expect) + [k for k in manifest.eval.metrics if k not in expect]
    if present_only:
        keys = [k for k in keys if k in metrics]
    lines += ["", "| metric | this run | paper | Δ (run − paper) |", "|---|---|---|---|"]
    for k in keys:
        ours, theirs = metrics.get(k), expect.get(k)
        delta = ours - theirs if isinstance(ours, (int, float)) and theirs is not None else None
        lines.append(f"| {k} | {_fmt(ours)} | {_fmt(theirs)} | {_fmt(delta)} |")
    for s in sections:
        lines += ["", s]
    return "\n".join(lines) + "\n"


def markdown_table(header: list[str], rows: list[list]) -> str:
    out = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    out += ["| " + " | ".join(_fmt(c) for c in r) + " |" for r in rows]
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


def learning_curves(metrics_csv: Path, out_png: Path) -> Path | None:
    """Plot every logged per-epoch series (losses on one panel, the rest on another)."""
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
    return save_figure(fig, out_png)


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


def confusion_png(cm, classes: list[str], out_png: Path, title: str = "confusion matrix") -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    cm = np.asarray(cm)
    fig, ax = plt.subplots(figsize=(1.2 * len(classes) + 2.5, 1.1 * len(classes) + 2))
    ax.imshow(cm, cmap="Blues")
    ax.set_xticks(range(len(classes)), classes, rotation=35, ha="right")
    ax.set_yticks(range(len(classes)), classes)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title)
    for i in range(cm.shape[0]):
        for j in range(cm.shape[1]):
            ax.text(j, i, str(cm[i, j]), ha="center", va="center", color="white" if cm[i, j] > cm.max() / 2 else "black")
    fig.tight_layout()
    return save_figure(fig, out_png)
