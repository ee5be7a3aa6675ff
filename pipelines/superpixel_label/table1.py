"""superpixel-label's ``table1`` stage: Table 1 as a sweep. One train run on the original GT (the gold standard),
one per (superpixel method × fill), and optionally a ``gap-stats`` child (Table 2 beside it); each child is a run
of its own, reused when complete. Metrics: each run's test Dice / IoU / precision / sensitivity, the Dice drop from
the original-GT model (``dice_drop_<fill>_<method>``, and its absolute value), and the gap statistics."""

from __future__ import annotations

from ..report import markdown_table, paper_data, paper_md, paper_note, paper_table
from ..sweep import Child

KEYS = ("dice", "iou", "precision", "sensitivity")
DATASET_TABLE = {"isic2018": "table1_isic2018", "cxr": "table1_cxr", "busi": "table1_busi"}


def paper_row(spec, dataset: str, labels: str, meth: str, net: str = "unet") -> dict | None:
    """The paper's U-Net (or DuAT) numbers for one setting of Table 1 (None when the table has no such row)."""
    t = paper_data(spec)["tables"][DATASET_TABLE[dataset]]
    cols = slice(2, 6) if net == "unet" else slice(6, 10)
    for row in t["rows"]:
        if row[0] == labels and (labels == "original" or row[1] == meth):
            return dict(zip(KEYS, map(float, row[cols]), strict=True))
    return None


def table1(pipe) -> dict:
    m, ctx = pipe.m, pipe.ctx
    cfg = m.table1
    children = []
    if cfg.gap_stats:
        children.append(Child("gap-stats", {"gap_stats.methods": list(cfg.methods)}, stage="gap-stats",
                              labels={"labels": "gap-stats"}))
    children.append(Child("original", {"train.labels": "original"}, labels={"labels": "original", "method": "—"}))
    for meth in dict.fromkeys(cfg.methods):
        for f in dict.fromkeys(cfg.fills):
            children.append(Child(f"{f}-{meth}", {"train.labels": f, "superpixel.method": meth},
                                  labels={"labels": f, "method": meth}))
    runs = ctx.sweep(children, title="table1")
    metrics: dict = {}
    rows, body = [], []
    original = None
    for r in runs:
        if r.child.stage == "gap-stats":
            metrics.update({k: v for k, v in r.metrics.items() if k == "identity_violations" or "m_over_n" in k})
            continue
        row = r.row
        rows.append(row)
        labels, meth = r.child.labels["labels"], r.child.labels["method"]
        if labels == "original":
            original = row
            tag = "original"
        else:
            tag = f"{labels}_{meth}"
        for k in KEYS:
            metrics[f"{k}_{tag}"] = row[k]
        paper = paper_row(ctx.spec, m.dataset.name, labels, meth, m.model.net) or {}
        body.append([labels, meth, *(row[k] for k in KEYS), *(paper.get(k) for k in KEYS), row["run_id"]])
    if original is not None:
        for row in rows:
            if row["labels"] != "original":
                tag = f"{row['labels']}_{row['method']}"
                metrics[f"dice_drop_{tag}"] = original["dice"] - row["dice"]
                metrics[f"dice_absdiff_{tag}"] = abs(original["dice"] - row["dice"])
    ctx.write_csv("table1.csv", rows)
    _figure(ctx, rows)
    header = ["labels", "superpixels", "Dice", "IoU", "Prec", "Sens", "paper Dice", "paper IoU", "paper Prec",
              "paper Sens", "run"]
    net = "U-Net" if m.model.net == "unet" else "DuAT"
    sections = [f"## This run: Table 1, {net} (test split, vs original GT; each row a train run)",
                markdown_table(header, body),
                paper_table(ctx.spec, DATASET_TABLE[m.dataset.name]), paper_note(ctx.spec, "table1")]
    if cfg.gap_stats:
        sections.insert(2, "Gap statistics of the same training images: the gap-stats child run (Table 2).")
    keys = [k for k in metrics if k.startswith(("dice_", "identity", "slic_dist_m"))]
    ctx.write_text("paper.md", paper_md(ctx.spec, m, metrics, ctx, expect={}, keys=keys, table="Table 1",
                                        setting=f"{m.dataset.name}: {net} per training-label kind, test vs original GT",
                                        sections=sections))
    return metrics


def _figure(ctx, rows: list[dict]) -> None:
    import numpy as np

    with ctx.figure("table1_dice", figsize=(max(4, 0.9 * len(rows) + 2), 3.2)) as (fig, ax):
        x = np.arange(len(rows))
        for j, k in enumerate(KEYS):
            ax.bar(x + (j - 1.5) * 0.2, [r[k] for r in rows], 0.2, label=k)
        ax.set_xticks(x, [r["labels"] if r["labels"] == "original" else f"{r['labels']}\n{r['method']}"
                          for r in rows], fontsize=8)
        ax.set_ylim(0, 1.18)
        ax.legend(fontsize=7, ncols=4, loc="upper center")
        ax.set_title("test metrics by training labels", fontsize=9)
