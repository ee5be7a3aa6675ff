"""mcgan ``synthesize`` and ``kl-eval`` on a finished train-i2i run.

``synthesize``: the recipient's test T1 slices → G3 → the missing contrast (``synthetic/<subject>.npz`` with the
T1, the synthetic slices in [0, 1] and the finest gate's attention map, the one Fig. 6 shows), figures of T1 |
synthetic | attention beside a real donor slice of that contrast, and the mean attention inside / outside the head
mask (``attn_*``: the finest gate; ``attn_gates_*``: the mean of all gates, nearest-upsampled).

``kl-eval``: Eq. 11 (``metrics.synthesis.tissue_kl``) for MCGAN and two controls on the same recipient slices:
copying the T1, and I2I without DA (a train-i2i child run with ``train_i2i.use_da: false``, reused when complete).
``per_case.csv``: per recipient test subject, each method's KL_average of that subject's slices against the pooled
real reference. Figures: the tissue histograms (real vs each method) and synthetic beside real.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from medrun.metrics.synthesis import tissue_kl, tissue_weights
from medrun.models.mcgan import attention_maps

from .. import training
from ..report import markdown_table, paper_data, paper_md, paper_note
from ..sweep import Child

TISSUES = ("csf", "gm", "wm")
NAMES = {"ixi": "IXI", "hcp": "HCP", "simons": "Simons", "t2": "T2", "pd": "PD", "dwi": "DWI", "flair": "T2-FLAIR",
         "t2star": "T2*"}


def generate(p, net, t1: np.ndarray, batch: int = 8) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """G3 over [0, 1] T1 slices (N, S, S) → (synthetic in [0, 1], the finest gate's α, the mean α of all gates),
    through the predictor; see ``attention_maps``."""
    pred = p.ctx.predictor()
    g = pred.setup(net)
    ys, finest, mean = [], [], []
    for i in range(0, len(t1), batch):
        x = torch.from_numpy(t1[i:i + batch])[:, None] * 2 - 1
        y, a = pred(g, x, return_attention=True)
        ys.append(((y[:, 0] + 1) / 2).clamp(0, 1).numpy())
        f, m = attention_maps(a, t1.shape[-2:])
        finest.append(f.numpy())
        mean.append(m.numpy())
    return np.concatenate(ys), np.concatenate(finest), np.concatenate(mean)


def attention_stats(alpha: np.ndarray, head: np.ndarray, prefix: str = "attn") -> dict:
    return {f"{prefix}_inside_head": float(alpha[head].mean()) if head.any() else float("nan"),
            f"{prefix}_outside_head": float(alpha[~head].mean()) if (~head).any() else float("nan")}


def by_tissue(values: np.ndarray, tissue: np.ndarray) -> dict[str, np.ndarray]:
    return {t: values[tissue == i + 1] for i, t in enumerate(TISSUES)}


def synthesize(p) -> dict:
    ctx = p.ctx
    net = p.trained_model().eval()
    p.record()
    rec = p.slices("recipient", "test", with_target=False)
    syn, alpha, gates = generate(p, net, rec.t1)
    for sid in dict.fromkeys(rec.subject.tolist()):
        sel = rec.subject == sid
        ctx.write_npz(f"synthetic/{sid}.npz", t1=rec.t1[sel], synthetic=syn[sel], attention=alpha[sel])
    metrics = {"n_slices": len(rec), "n_subjects": len(set(rec.subject.tolist())), "contrast": p.m.dataset.contrast,
               **attention_stats(alpha, rec.head), **attention_stats(gates, rec.head, "attn_gates")}
    ctx.write_csv("per_case.csv", [{"subject": sid, "slices": int((rec.subject == sid).sum()),
                                    **attention_stats(alpha[rec.subject == sid], rec.head[rec.subject == sid])}
                                   for sid in dict.fromkeys(rec.subject.tolist())])
    grid(p, rec, {"MCGAN": syn}, alpha, p.m.synthesize.figures)
    return metrics


def grid(p, rec, outputs: dict, alpha: np.ndarray | None, n: int, name: str = "synthesized") -> None:
    if not n or not len(rec):
        return
    d = p.m.dataset
    donor = p.slices("donor", "test")
    idx = np.linspace(0, len(rec) - 1, min(n, len(rec))).astype(int)
    ref = np.linspace(0, len(donor) - 1, len(idx)).astype(int)
    cols = [("recipient T1", lambda j, i: rec.t1[i], "gray")]
    cols += [(k, (lambda arr: lambda j, i: arr[i])(v), "gray") for k, v in outputs.items()]
    if alpha is not None:
        cols.append(("attention α", lambda j, i: alpha[i], "magma"))
    cols.append((f"real {NAMES[d.contrast]} ({NAMES[d.donor]})", lambda j, i: donor.target[ref[j]], "gray"))
    with p.ctx.figure(name, nrows=len(idx), ncols=len(cols), figsize=(2 * len(cols), 2 * len(idx)), squeeze=False,
                      dpi=80) as (_, ax):
        for j, i in enumerate(idx):
            for k, (title, get, cmap) in enumerate(cols):
                ax[j, k].imshow(get(j, i), cmap=cmap, vmin=0, vmax=1)
                ax[j, k].set_title(title if j == 0 else "", fontsize=7)
                ax[j, k].axis("off")


def kl_eval(p) -> dict:
    ctx, d, e = p.ctx, p.m.dataset, p.m.kl_eval
    net = p.trained_model().eval()
    p.record()
    rec = p.slices("recipient", e.split, with_target=False)
    real = p.slices("donor", e.split)
    weights = tissue_weights({t: int((rec.tissue == i + 1).sum()) for i, t in enumerate(TISSUES)})
    ref = by_tissue(real.target, real.tissue)
    syn, alpha, gates = generate(p, net, rec.t1)
    outputs = {"mcgan": syn}
    if e.controls:
        outputs["copy_t1"] = rec.t1
        child = ctx.sweep([Child("no-da", {"train_i2i.use_da": False}, stage="train-i2i")], title="no-DA control")[0]
        g3 = training.load_weights(p.build_model(), Path(child.run_dir) / "checkpoints" / "g3.safetensors").eval()
        outputs["no_da"] = generate(p, g3, rec.t1)[0]
    metrics: dict = {"recipient": d.name, "donor": d.donor, "contrast": d.contrast, "n_slices": len(rec),
                     **{f"lambda_{t}": w for t, w in weights.items()}}
    for method, out in outputs.items():
        kl = tissue_kl(ref, by_tissue(out, rec.tissue), weights, bins=e.bins, eps=e.eps)
        metrics.update({(k if method == "mcgan" else f"{k}_{method}"): v for k, v in kl.items()})
    for method in outputs:
        if method != "mcgan":
            metrics[f"kl_margin_{method}"] = metrics[f"kl_average_{method}"] - metrics["kl_average"]
    metrics.update(attention_stats(alpha, rec.head))
    metrics.update(attention_stats(gates, rec.head, "attn_gates"))
    metrics.update(upstream(p))
    rows = []
    for sid in dict.fromkeys(rec.subject.tolist()):
        sel = rec.subject == sid
        row = {"subject": sid, "slices": int(sel.sum())}
        for method, out in outputs.items():
            row[f"kl_average_{method}"] = tissue_kl(ref, by_tissue(out[sel], rec.tissue[sel]), weights,
                                                    bins=e.bins, eps=e.eps)["kl_average"]
        rows.append(row)
    ctx.write_csv("per_case.csv", rows)
    histograms(p, ref, {k: by_tissue(v, rec.tissue) for k, v in outputs.items()})
    grid(p, rec, {k.replace("_", " "): v for k, v in outputs.items() if k != "copy_t1"}, alpha, 4)
    paper = table1(ctx.spec)
    row = paper.get((d.name, d.contrast))
    expect = {"kl_average": row["MCGAN"]} if row else {}
    ctx.write_text("paper.md", paper_md(
        ctx.spec, p.m, metrics, ctx, present_only=True, expect=expect, keys=["kl_average", "kl_csf", "kl_gm", "kl_wm"],
        title="MCGAN tissue-weighted KL", table="Table 1",
        setting=f"recipient {NAMES[d.name]}, synthetic {NAMES[d.contrast]} from {NAMES[d.donor]}",
        sections=sections(p, metrics, row)))
    return metrics


def upstream(p) -> dict:
    """The parent's faithfulness and L1 drop, and its DA run's cycle-L1 drop (for the smoke checks)."""
    info = p.ctx.parent.info() if p.ctx.parent is not None else {}
    out = {"faithful": bool(info.get("faithful", False))}
    if p.ctx.parent is not None:
        pm = json.loads(p.ctx.parent_file("metrics.json").read_text())
        out["i2i_l1_drop"] = pm.get("i2i_l1_drop", float("nan"))
        da = info.get("da_run")
        da_metrics = p.ctx.parent.path.parent / f"train-da-{da[:12]}" / "metrics.json" if da else None
        if da_metrics is not None and da_metrics.is_file():
            out["cycle_l1_drop"] = json.loads(da_metrics.read_text()).get("cycle_l1_drop", float("nan"))
    return out


def table1(spec) -> dict:
    t = paper_data(spec)["tables"]["table1"]
    return {(r[0], r[1]): dict(zip(t["header"][2:], r[2:], strict=True)) for r in t["rows"]}


def sections(p, metrics: dict, row: dict | None) -> list[str]:
    lines = []
    if not metrics.get("faithful"):
        lines.append("**Not faithful:** the I2I stage ran with λ_vgg = 0 (no VGG16 weights were given), so its loss "
                     "is not the paper's; pass `train_i2i.vgg_weights`.")
    rows = [["MCGAN (this run)", metrics["kl_average"], *(metrics.get(f"kl_{t}") for t in TISSUES)]]
    for method, label in (("no_da", "I2I without DA (this run)"), ("copy_t1", "copy the T1 (this run)")):
        if f"kl_average_{method}" in metrics:
            rows.append([label, metrics[f"kl_average_{method}"], *(metrics.get(f"kl_{t}_{method}") for t in TISSUES)])
    if row:
        rows += [[f"{k} (paper)", v, None, None, None] for k, v in row.items()]
    lines.append("## KL_average beside Table 1\n\n" + markdown_table(["method", "KL_average", "KL_CSF", "KL_GM",
                                                                      "KL_WM"], rows))
    lines.append(f"Attention (the finest gate's α, as in Fig. 6): {metrics['attn_inside_head']:.3f} inside the head "
                 f"mask, {metrics['attn_outside_head']:.3f} outside; all gates' mean "
                 f"{metrics['attn_gates_inside_head']:.3f} / {metrics['attn_gates_outside_head']:.3f} (the card "
                 "expects ≈ 0 outside after the paper's training; see figures/synthesized.png).")
    lines.append(paper_note(p.ctx.spec, "kl"))
    return lines


def histograms(p, ref: dict, outputs: dict) -> None:
    bins = np.linspace(0, 1, 65)
    with p.ctx.figure("tissue_histograms", ncols=3, figsize=(12, 3.4)) as (_, ax):
        for k, t in enumerate(TISSUES):
            ax[k].hist(ref[t], bins=bins, density=True, histtype="step", color="k", label="real (donor)")
            for method, vals in outputs.items():
                ax[k].hist(vals[t], bins=bins, density=True, histtype="step", label=method.replace("_", " "))
            ax[k].set_title(t.upper())
            ax[k].set_xlabel("intensity")
        ax[0].legend(fontsize=7)
