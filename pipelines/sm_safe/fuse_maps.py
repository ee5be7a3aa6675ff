"""sm-safe ``fuse-maps``: each held-out case's AMF weight per modality (summing to 1 per voxel; eval's sliding
window) as NIfTI on the preprocessed grid, ``fuse_maps/<task>/<case>_w<i>_<modality>.nii.gz``, and the mean
weight of each modality inside each label (``per_case.csv``, ``paper.md``)."""

from __future__ import annotations

import numpy as np

from medrun.errors import UsageError

from ..predictor import Forward
from ..report import markdown_table, paper_md


def fuse_maps(pipe) -> dict:
    if pipe.m.model.variant == "unet":
        raise UsageError("model.variant unet has no AMF, so there are no fusion weights",
                         fix="use a train run of variant sm-safe or amf-net")
    rows = []
    for task, train, test in pipe.held_out():
        weights_of = pipe.predictor.setup(Forward(pipe.task_net(task), "fusion_weights"))
        for it in pipe.load(pipe.prep(task, train), test, keep_meta=True):
            w = pipe.predictor.sliding_window(weights_of, it.image[None])[0]
            gt = it.label[0]
            for i, name in sorted(task.modalities.items()):
                pipe.ctx.write_nifti(f"fuse_maps/{task.name}/{it.id}_w{i}_{name}.nii.gz",
                                     w[i].numpy().astype(np.float32), it.meta.affine)
            for c in range(task.num_classes):
                inside = gt == c
                if inside.any():
                    rows += [{"task": task.name, "case": it.id, "label": task.labels.get(c, str(c)),
                              "modality": name, "mean_weight": float(w[i][inside].mean())}
                             for i, name in sorted(task.modalities.items())]
    pipe.ctx.write_csv("per_case.csv", rows)
    pipe.ctx.write_text("paper.md", paper_md(pipe.ctx.spec, pipe.m, {}, pipe.ctx, title="SM-SAFE AMF weight maps",
                                             sections=["## Mean AMF weight per modality inside each label\n\n"
                                                       + _mean_weights(rows)]))
    return {"n_cases": len({(r["task"], r["case"]) for r in rows}), "maps_dir": "fuse_maps"}


def _mean_weights(rows: list[dict]) -> str:
    if not rows:
        return "(no held-out cases)"
    body = []
    for task, label in dict.fromkeys((r["task"], r["label"]) for r in rows):
        sel = [r for r in rows if r["task"] == task and r["label"] == label]
        mods = list(dict.fromkeys(r["modality"] for r in sel))
        body.append([task, label, ", ".join(
            f"{m} {np.mean([r['mean_weight'] for r in sel if r['modality'] == m]):.3f}" for m in mods)])
    return markdown_table(["task", "label", "mean weight per modality"], body)
