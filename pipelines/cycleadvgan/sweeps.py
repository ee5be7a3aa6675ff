"""cycleadvgan's multi-run stages, each a sweep of ordinary runs (``ctx.sweep``; reused when complete):

- ``transfer`` (Tables 3–4): one ``train`` run per model of ``transfer.models`` other than the parent run's
  (``model.arch`` set, ``model.weights`` cleared: random init), one ``attack`` run per source (``attack.methods`` =
  ``transfer.methods``) on that source's train run, then each source's saved adversarial images
  (``adv/<method>.npy``, 8-bit) are fed to every target: ASR over the test images that target gets right when clean.
  Writes ``per_case.csv`` (one row per method, source and target), ``figures/transfer_matrix.png``, ``paper.md``.
- ``sweep-lambda`` (Fig. 2): one ``attack`` run per λ of ``sweep_lambda.lambdas`` (``attack.methods`` =
  ``sweep_lambda.methods``) on the parent train run; ``per_case.csv`` (one row per λ), ``figures/lambda_sweep.png``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from medrun.errors import DataError, UsageError
from medrun.metrics.attack import attack_success_rate

from .. import training
from ..report import markdown_table, paper_data, paper_md, paper_note
from ..sweep import Child
from .attack import ARCH_NAMES, METHOD_NAMES, logits_of
from .config import size_problem


def _checked(run_dir: Path, rel: str) -> Path:
    """A child run's file, after checking it against that run's ``MANIFEST.sha256``."""
    from medrun.artifacts import RunDir, sha256_file

    path = Path(run_dir) / rel
    if RunDir(run_dir).recorded_hashes().get(rel) != sha256_file(path):
        raise DataError(f"{path} does not match its run's MANIFEST.sha256",
                        fix="the run was altered after it finished; run it again with --force")
    return path


def transfer(p) -> dict:
    tr, ctx = p.m.transfer, p.ctx
    parent_arch = p.m.model.arch
    if parent_arch not in tr.models:
        raise UsageError(f"transfer.models {tr.models} does not include the parent run's arch {parent_arch}",
                         fix=f"add {parent_arch} to transfer.models")
    for arch in tr.models:
        if problem := size_problem(arch, p.m.dataset.img_size):
            raise UsageError(f"transfer.models: {problem}", fix=f"leave {arch} out of transfer.models or change "
                                                                "dataset.img_size")
    others = [a for a in tr.models if a != parent_arch]
    fresh = {"model.weights": None}  # model.weights is a backbone of the parent's architecture
    targets = ctx.sweep([Child(f"train-{a}", {"model.arch": a, **fresh}, labels={"arch": a}) for a in others],
                        title="target") if others else []
    train_dirs = {c.child.labels["arch"]: c.run_dir for c in targets}

    def on(arch: str) -> dict:  # the F an attack child of source `arch` attacks
        if arch == parent_arch:
            return {"run": str(ctx.parent.path)} if ctx.parent is not None else {}
        if ctx.checkpoint is not None:  # the children would inherit the parent's --checkpoint
            return {"checkpoint": train_dirs[arch] / "checkpoints" / "model.safetensors"}
        return {"run": str(train_dirs[arch])}

    methods = {"attack.methods": list(tr.methods)}
    sources = ctx.sweep([Child(f"attack-{a}", {"model.arch": a, **({} if a == parent_arch else fresh), **methods},
                               stage="attack", labels={"source": a}, **on(a)) for a in tr.models], title="source")
    nets = {parent_arch: p.trained_model()}
    for a in others:
        nets[a] = training.load_weights(p.build_model(a), _checked(train_dirs[a], "checkpoints/model.safetensors"))
    test = p.splits()["test"]
    x, y = p.images(test), torch.tensor([s.label for s in test])
    batch = p.m.attack.batch_eval
    clean = {k: logits_of(n, x, batch, p.predictor).argmax(1) for k, n in nets.items()}
    metrics: dict = {"n_test": len(test), "models": list(tr.models), "lam": p.m.attack.lam}
    metrics.update({f"clean_accuracy_{k}": float((v == y).float().mean()) for k, v in clean.items()})
    tables, ds = paper_data(ctx.spec)["tables"], p.m.dataset.name
    paper = {("cycleadvgan", r[1], r[2]): r[3] for r in tables["transfer"]["rows"] if r[0] == ds}
    paper.update({tuple(r[1:4]): r[4] for r in tables["transfer_baselines"]["rows"] if r[0] == ds})
    rows = []
    for child in sources:
        src = child.child.labels["source"]
        for method in tr.methods:
            adv = np.load(_checked(child.run_dir, f"adv/{method}.npy"), allow_pickle=False)
            adv = torch.from_numpy(adv).permute(0, 3, 1, 2).float() / 255.0
            for tgt in tr.models:
                res = attack_success_rate(y, clean[tgt], logits_of(nets[tgt], adv, batch, p.predictor).argmax(1))
                metrics[f"asr_{method}_{src}_to_{tgt}"] = asr = res["asr"]
                rows.append({"method": method, "source": src, "target": tgt, "white_box": int(src == tgt), "asr": asr,
                             "n_attacked": res["n_clean_correct"], "attack_run": child.run_id[:12],
                             "paper_asr": paper.get((method, src, tgt), "")})
    ctx.write_csv("per_case.csv", rows)
    _matrix_figure(ctx, rows, tr)
    expect = {f"asr_{m}_{s}_to_{t}": v for (m, s, t), v in paper.items()
              if m in tr.methods and s in tr.models and t in tr.models}
    ctx.write_text("paper.md", paper_md(ctx.spec, p.m, metrics, ctx, present_only=True, expect=expect,
                                        title="CycleAdvGAN transfer (source × target ASR)", table="Tables 3–4",
                                        setting=f"{p.m.dataset.name}, black-box transfer, λ = 0.7",
                                        keys=list(expect), sections=[_matrix_table(rows, tr),
                                                                     paper_note(ctx.spec, "transfer")]))
    return metrics


def _cell(rows, method, src, tgt) -> dict:
    return next(r for r in rows if r["method"] == method and r["source"] == src and r["target"] == tgt)


def _matrix_table(rows: list[dict], tr) -> str:
    out = []
    for method in tr.methods:
        body = []
        for src in tr.models:
            cells = [_cell(rows, method, src, tgt) for tgt in tr.models]
            body.append([ARCH_NAMES[src], *[f"{r['asr']:.4f}" + (f" (paper {r['paper_asr']:.4f})"
                                                                  if r["paper_asr"] != "" else "") for r in cells]])
        out.append(f"### {METHOD_NAMES[method]}\n\n"
                   + markdown_table(["source \\ target", *[ARCH_NAMES[t] for t in tr.models]], body))
    return ("## Transfer ASR, Tables 3–4 (rows: source, columns: target; the diagonal is white-box)\n\n"
            + "\n\n".join(out))


def _matrix_figure(ctx, rows: list[dict], tr) -> None:
    k = len(tr.models)
    with ctx.figure("transfer_matrix", ncols=len(tr.methods), figsize=(3.2 * len(tr.methods) + 1, 3.2),
                    squeeze=False) as (_, axes):
        for ax, method in zip(axes[0], tr.methods, strict=True):
            mat = np.array([[_cell(rows, method, s, t)["asr"] for t in tr.models] for s in tr.models])
            ax.imshow(mat, vmin=0, vmax=1, cmap="viridis")
            for i in range(k):
                for j in range(k):
                    ax.text(j, i, f"{mat[i, j]:.2f}", ha="center", va="center",
                            color="white" if mat[i, j] < 0.5 else "black")
            ax.set_xticks(range(k), tr.models, rotation=30, fontsize=7)
            ax.set_yticks(range(k), tr.models, fontsize=7)
            ax.set_title(METHOD_NAMES[method], fontsize=8)
            ax.set_xlabel("target")
            ax.set_ylabel("source")


def sweep_lambda(p) -> dict:
    """One attack run per λ (reused when complete), then the table and Fig. 2's plot."""
    sw, ctx = p.m.sweep_lambda, p.ctx
    if not sw.lambdas:
        raise UsageError("sweep_lambda.lambdas is empty", fix="-o 'sweep_lambda.lambdas=[0.1,0.3,0.5,0.7,0.9]'")
    on = {"run": str(ctx.parent.path)} if ctx.parent is not None else {}
    runs = ctx.sweep([Child(f"lam{lam}", {"attack.lam": lam, "attack.methods": list(sw.methods)}, stage="attack",
                            labels={"lam": lam}, **on) for lam in sw.lambdas], title="λ")
    keys = ("asr_cycleadvgan", "ssim_cycleadvgan", "l2_cycleadvgan", "n_attacked", "clean_accuracy")
    rows = [{"lam": r.child.labels["lam"], "run_id": r.run_id, **{k: r.metrics.get(k) for k in keys}} for r in runs]
    ctx.write_csv("per_case.csv", rows)
    with ctx.figure("lambda_sweep", figsize=(5, 3.5)) as (_, ax):
        lams = [r["lam"] for r in rows]
        ax.plot(lams, [r["asr_cycleadvgan"] for r in rows], marker="o", label="ASR")
        ax.plot(lams, [r["ssim_cycleadvgan"] for r in rows], marker="s", label="SSIM")
        ax.axhline(0.9, color="gray", lw=0.8, ls="--")
        ax.set_xlabel("λ")
        ax.set_ylim(0, 1.02)
        ax.legend()
        ax.set_title("CycleAdvGAN: ASR and SSIM vs λ")
    metrics: dict = {"lambdas": list(sw.lambdas)}
    for r in rows:
        metrics[f"asr_cycleadvgan_lam{r['lam']}"] = r["asr_cycleadvgan"]
        metrics[f"ssim_cycleadvgan_lam{r['lam']}"] = r["ssim_cycleadvgan"]
    both = [r["lam"] for r in rows if (r["asr_cycleadvgan"] or 0) > 0.9 and (r["ssim_cycleadvgan"] or 0) > 0.9]
    metrics["lambdas_with_asr_and_ssim_above_0.9"] = both
    table = markdown_table(["λ", "ASR", "SSIM", "L2", "attacked", "run"],
                           [[r["lam"], r["asr_cycleadvgan"], r["ssim_cycleadvgan"], r["l2_cycleadvgan"],
                             r["n_attacked"], f"`{r['run_id'][:12]}`"] for r in rows])
    ctx.write_text("paper.md", paper_md(ctx.spec, p.m, metrics, ctx, title="CycleAdvGAN λ sweep", expect={},
                                        table="Fig. 2", setting=f"{p.m.dataset.name}, λ ∈ {list(sw.lambdas)}",
                                        keys=[], sections=[
                                            paper_note(ctx.spec, "sweep_lambda")
                                            + f" Here λ values with both above 0.9: {both or 'none'}.\n\n" + table,
                                            "![ASR and SSIM vs λ](figures/lambda_sweep.png)"]))
    return metrics
