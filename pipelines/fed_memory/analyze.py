"""fed-memory's ``analyze`` stage: the card's numeric proxies for the paper's visual claims (ours, not the paper's).

Per client: the covariance stabilisation score s_r of every round after the first, the saturation round (first r
with s_r < ``analyze.saturation_threshold``) and the ACF stability (mean over weight tensors of the sd of the lag-1 ACF
across rounds; small = the paper's "flat" ACF, a client learning little)."""

from __future__ import annotations

import numpy as np


def run(pipe) -> dict:
    from ..report import markdown_table, paper_note, paper_table
    from . import cme
    from .visualize import parent_archives, read_csv

    ctx, m = pipe.ctx, pipe.m
    archives = parent_archives(ctx)
    acf = read_csv(ctx.parent_file("cme/acf.csv"))
    thr = m.analyze.saturation_threshold
    metrics: dict = {"saturation_threshold": thr}
    score_rows, table = [], []
    for k, archive in archives.items():
        rows = [r for r in acf if int(r["client"]) == k]
        arch = rows[0]["arch"] if rows else "?"
        scores = cme.stabilisation(cme.round_maps(archive))
        score_rows += [{"client": k, "arch": arch, "round": r + 2, "stabilisation": float(s)}
                       for r, s in enumerate(scores)]
        sat = cme.saturation_round(scores, thr)
        rounds = sorted({int(r["round"]) for r in rows})
        layers = sorted({int(r["layer"]) for r in rows})
        grid = {(int(r["round"]), int(r["layer"])): r for r in rows}
        stab = {col: cme.acf_stability(np.array([[float(grid[(rd, ly)][col]) for ly in layers] for rd in rounds]))
                for col in ("acf", "acf_norm")}
        metrics[f"client{k}_saturation_round"] = sat if sat is not None else -1
        metrics[f"client{k}_acf_stability"] = stab["acf"]
        metrics[f"client{k}_acf_norm_stability"] = stab["acf_norm"]
        metrics[f"client{k}_last_stabilisation"] = float(scores[-1]) if len(scores) else float("nan")
        table.append({"client": k, "arch": arch, "saturation_round": sat if sat is not None else "not reached",
                      "last_stabilisation": metrics[f"client{k}_last_stabilisation"],
                      "acf_stability": stab["acf"], "acf_norm_stability": stab["acf_norm"]})
    ctx.write_csv("stabilisation.csv", score_rows)
    ctx.write_csv("acf_stability.csv", table)
    if score_rows:
        with ctx.figure("stabilisation", figsize=(6, 3.5)) as (fig, ax):
            for k in archives:
                rs = [r for r in score_rows if r["client"] == k]
                ax.plot([r["round"] for r in rs], [r["stabilisation"] for r in rs], "-o", label=f"client {k}")
            ax.axhline(thr, color="grey", ls="--", lw=1, label="saturation threshold")
            ax.set(xlabel="t-round", ylabel="‖Cov_r − Cov_r−1‖ / ‖Cov_r−1‖", yscale="log",
                   title="covariance stabilisation (our proxy)")
            ax.legend(fontsize=7)
    spec = ctx.spec
    head = ["client", "arch", "saturation round", "last s_r", "ACF stability", "normalised ACF stability"]
    body = markdown_table(head, [list(r.values()) for r in table])
    fixture = ("**Data: generated fixture**: these proxies show the analysis runs; they say nothing about the paper's "
               "claims.\n\n" if ctx.fixture else "")
    page = (f"# {spec.title}: analyze run `{ctx.run.info().get('id', '')[:12]}`\n\n"
            f"Scenario {m.fed.scenario}, {m.train.rounds} t-rounds × {m.train.epochs} epochs.\n\n{fixture}"
            f"## This run (our proxies)\n\n{body}\n\n{paper_table(spec, 'claims')}\n\n{paper_note(spec, 'proxies')}\n")
    ctx.write_text("paper.md", page)
    return metrics
