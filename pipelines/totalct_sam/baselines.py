"""totalct-sam ``baselines`` (Table 1): one train run per ``baselines.archs`` (``model.arch`` totalct-sam, unetr,
swinunetr) on the same split, data, seed and recipe, and, with ``baselines.zeroshot``, the ``zeroshot`` stage
(SAM-Med3D without fine-tuning); each child is reused when complete and is the very run ``medrun train -o
model.arch=…`` (or ``medrun zeroshot``) makes. The sweep run writes ``per_model.csv`` and ``paper.md``: Dice, IoU,
Acc, parameters and s / case of each beside the paper's Table 1, plus its rows not reproduced and why.

Recipe: the baselines train from random init with DiceCE only (no prompt path) and every parameter in the
``train.lr_new`` group (default ``train.lr``); the paper's 5e-7 suits fine-tuning SAM-Med3D, not a network trained
from scratch, so give ``-o train.lr_new=1e-4`` (MONAI's UNETR recipe) on real data. The paper does not state its
baselines' recipes.
"""

from __future__ import annotations

from ..report import markdown_table, paper_data, paper_md, paper_note
from ..sweep import Child
from .config import SWIN_MIN

KEYS = ("dice", "iou", "accuracy")
PAPER_NAME = {"totalct-sam": "TotalCT-SAM", "unetr": "UNETR", "zeroshot": "SAM-Med3D"}
NOT_REPRODUCED = {  # Table 1 rows without an implementation here, and why (paper.yaml's "baselines" note)
    "nnU-Net": "not reproduced: a self-configuring framework (nnunetv2, its own planning and 1000-epoch recipe), "
               "not a network",
    "TransUNet": "not reproduced: a 2D slice model on an ImageNet-pretrained R50-ViT (downloads)",
}


def paper_rows(spec) -> dict[str, list]:
    return {r[0]: r[1:] for r in paper_data(spec)["tables"]["table1"]["rows"]}


def baselines(pipe) -> dict:
    ctx, spec, b = pipe.ctx, pipe.ctx.spec, pipe.m.baselines
    archs = list(dict.fromkeys(b.archs))
    default = type(b)()  # baselines.* back at its default in each child: the child is the plain run of its stage
    reset = {"baselines.archs": default.archs, "baselines.zeroshot": default.zeroshot}
    children = [Child(a, {"model.arch": a, **reset, **_crop(pipe.m, a)}, labels={"model": a}) for a in archs]
    if b.zeroshot:
        children.append(Child("sammed3d-zeroshot", {"model.arch": "totalct-sam", **reset}, stage="zeroshot",
                              labels={"model": "SAM-Med3D zero-shot"}))
    runs = ctx.sweep(children, title="model")
    ctx.write_csv("per_model.csv", [r.row for r in runs])
    paper = paper_rows(spec)
    metrics: dict = {"models": [c.name for c in children]}
    body = []
    for c, r in zip(children, runs, strict=True):
        key = "zeroshot" if c.stage == "zeroshot" else c.name
        metrics.update({f"{key}.{k}": r.metrics[k] for k in (*KEYS, "params_total", "secs_per_case")})
        p = paper.get(PAPER_NAME.get(key, ""), ["—"] * 5)
        note = ("SAM-Med3D weights" if r.metrics.get("pretrained") else "random init: not SAM-Med3D's numbers"
                ) if key == "zeroshot" else "not in the paper" if key == "swinunetr" else ""
        if c.overrides.get("model.img_size"):
            note += f"; {SWIN_MIN}³ crops (smaller ones leave a one-voxel bottleneck)"
        body.append([c.labels["model"], *_pairs(r.metrics, p), f"{r.metrics['params_total'] / 1e6:.2f} M", p[3],
                     f"{r.metrics['secs_per_case']:.2f}", p[4], r.run_id[:12], note])
    for name, reason in NOT_REPRODUCED.items():
        p = paper[name]
        body.append([name, "—", p[0], "—", p[1], "—", p[2], "—", p[3], "—", p[4], "—", reason])
    table = markdown_table(["model", "Dice %", "paper", "IoU %", "paper", "Acc %", "paper", "params", "paper",
                            "s / case", "paper", "run", "note"], body)
    m = pipe.m
    setting = f"{m.eval.split} split, {m.train.epochs} epochs, seed {m.seed}"
    expect = {f"{k}.{n}": float(paper[PAPER_NAME[k]][i]) / 100 for k in ("totalct-sam", "unetr", "zeroshot")
              for i, n in enumerate(("dice", "iou")) if f"{k}.{n}" in metrics}
    page = paper_md(spec, m, metrics, ctx, title="TotalCT-SAM and baselines (Table 1)", table="Table 1",
                           setting="TotalSegmentator v1 validation split (57 CTs)", expect=expect, keys=list(expect),
                           sections=[f"## Table 1 beside this run ({setting})\n\n" + table,
                                     paper_note(spec, "baselines"), paper_note(spec, "comparison")])
    ctx.write_text("paper.md", page)
    return metrics


def _crop(m, arch: str) -> dict:
    """SwinUNETR cannot train below 64³ crops (its bottleneck would be one voxel): its child's crop (and window) is
    raised to 64³ when the manifest's is smaller, as on the fixture (32³); the page's note says so."""
    return {"model.img_size": SWIN_MIN} if arch == "swinunetr" and m.model.img_size < SWIN_MIN else {}


def _pairs(metrics: dict, paper: list) -> list:
    """(ours %, paper) for Dice, IoU and Acc."""
    return [v for i, k in enumerate(KEYS) for v in (f"{100 * metrics[k]:.2f}", paper[i])]
