"""ad-lite ``baselines`` (Table 1): one train run per ``baselines.archs`` (``model.arch`` = adlite, densenet121,
mobilenet_v2, vgg16, xception; same data, recipe and seed), each reused when complete. The sweep run writes
``per_model.csv`` and ``paper.md``: test accuracy, weighted F1 and parameters of each beside the paper's Table 1
column for the dataset, plus the paper's rows that are not reproduced (PiT, 2D-M2IC, MSC-Net+SE-Net) and why."""

from __future__ import annotations

from medrun.errors import UsageError

from ..report import markdown_table, paper_data, paper_md, paper_note
from ..sweep import Child

COLUMN = {"ad": 1, "adni": 3, "oasis": 5}  # the dataset's (accuracy, F1) columns in paper.yaml's table1
NOT_REPRODUCED = {  # Table 1 rows without an implementation here, and why (paper.yaml's "baselines" note)
    "2D-M2IC (scratch)": "not reproduced: the paper gives only '3 conv + 2 FC', no widths or kernels",
    "MSC-Net+SE-Net (scratch)": "not reproduced: no layer description in the paper",
    "PiT (50 epochs)": "not reproduced: a pretrained timm PiT-S; timm and downloads are not used",
}


def paper_row(spec, arch: str, dataset: str) -> tuple[float, float, float] | None:
    """(accuracy, weighted F1, params in lakh) of ``arch`` in the paper's Table 1 for ``dataset``; None for the
    merged set (not in Table 1) or a model not in it."""
    for r in paper_data(spec)["tables"]["table1"]["rows"]:
        if r[0] == arch and dataset in COLUMN:
            return r[COLUMN[dataset]], r[COLUMN[dataset] + 1], r[-1]
    return None


def baselines(pipe) -> dict:
    ctx, spec, d = pipe.ctx, pipe.ctx.spec, pipe.m.dataset
    archs = list(dict.fromkeys(pipe.m.baselines.archs))
    # baselines.archs back at its default in each child, so that a child is the very run `medrun train -o
    # model.arch=…` makes (reused either way) whatever subset this sweep runs
    b = pipe.m.baselines
    if pipe.m.model.weights:
        raise UsageError("medrun baselines takes initial weights per model, not model.weights",
                         fix="-o 'baselines.weights={vgg16: vgg16.pth}'")
    default = type(b)()
    runs = ctx.sweep([Child(a, {"model.arch": a, "model.weights": b.weights.get(a), "baselines.archs": default.archs,
                                "baselines.weights": default.weights}, labels={"model": a}) for a in archs],
                     title="model")
    rows = [r.row for r in runs]
    ctx.write_csv("per_model.csv", rows)
    metrics: dict = {"models": archs}
    body = []
    for a, r in zip(archs, runs, strict=True):
        metrics.update({f"{a}.{k}": r.metrics[k] for k in ("accuracy", "f1_weighted", "f1_macro", "params_total")})
        p = paper_row(spec, a, d.name) or ("—", "—", "—")
        note = ("" if a == "adlite" else "from model.weights (paper: ImageNet, fine-tuned)" if a in b.weights
                else "random init; the paper fine-tunes ImageNet weights: not comparable")
        body.append([a, r.metrics["accuracy"], p[0], r.metrics["f1_weighted"], p[1],
                     f"{r.metrics['params_total'] / 1e5:.2f}", _lakh(p[2]), r.run_id[:12], note])
    for r in paper_data(spec)["tables"]["table1"]["rows"]:
        if r[0] not in archs:
            p = paper_row(spec, r[0], d.name) or ("—", "—", r[-1])
            body.append([r[0], "—", p[0], "—", p[1], "—", _lakh(p[2]), "—",
                         NOT_REPRODUCED.get(r[0], "not in baselines.archs")])
    table = markdown_table(["model", "accuracy", "paper", "F1 weighted", "paper", "params (lakh)", "paper", "run",
                            "note"], body)
    expect = {f"{a}.accuracy": p[0] for a in archs if (p := paper_row(spec, a, d.name))}
    setting = f"{d.name} test split, {pipe.m.train.epochs} epochs, random init unless baselines.weights"
    ctx.write_text("paper.md", paper_md(spec, pipe.m, metrics, ctx, title="AD-Lite Net and baselines (Table 1)",
                                        table="Table 1", setting=f"{d.name} test split (paper: fine-tuned ImageNet "
                                                                 "baselines)", expect=expect, keys=list(expect),
                                        sections=[f"## Table 1 beside this run ({setting})\n\n" + table,
                                                  paper_note(spec, "baselines"), paper_note(spec, "comparison")]))
    return metrics


def _lakh(v) -> str:
    return f"{v:.2f}" if isinstance(v, (int, float)) else str(v)
