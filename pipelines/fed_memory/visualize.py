"""fed-memory's ``visualize`` stage and its figures: covariance heat-maps of the analysis layer's CMEs per t-round
and client (the paper's Fig. 4a–i / 5a–i), ACF curves per client with one curve per round over the weight tensors
(Fig. 4j–l / 5j–l), and the federated accuracy curves per client."""

from __future__ import annotations

import csv
import io

import numpy as np


def read_csv(path) -> list[dict]:
    return list(csv.DictReader(io.StringIO(path.read_text())))


def parent_archives(ctx) -> dict[int, np.ndarray]:
    """{client: (rounds, epochs, 16384)} from the parent train run, each checked against its MANIFEST.sha256."""
    out, k = {}, 1
    hashes = ctx.parent.recorded_hashes()
    while f"cme/client{k}.npy" in hashes:
        out[k] = np.load(ctx.parent_file(f"cme/client{k}.npy"), allow_pickle=False)
        k += 1
    return out


def curves_figure(ctx, rounds: list[dict]) -> None:
    clients = sorted({r["client"] for r in rounds})
    with ctx.figure("federated_curves", figsize=(6, 4)) as (fig, ax):
        for c in clients:
            rs = [r for r in rounds if r["client"] == c]
            line, = ax.plot([r["round"] for r in rs], [r["local_accuracy"] for r in rs], "-o",
                            label=f"client {c} ({rs[0]['arch']}) local")
            if any("broadcast_accuracy" in r for r in rs):
                ax.plot([r["round"] for r in rs], [r.get("broadcast_accuracy", np.nan) for r in rs], "--",
                        color=line.get_color(), label=f"client {c} after broadcast")
        ax.set(xlabel="t-round", ylabel="held-out accuracy", ylim=(0, 1.02), title="per-client accuracy")
        ax.legend(fontsize=7)


def confusion_figure(ctx, metrics: dict, n: int, classes: list[str]) -> None:
    from ..report import confusion_axes

    with ctx.figure("confusion_matrices", ncols=n, figsize=(4 * n, 3.8)) as (fig, axes):
        for k, ax in enumerate(np.atleast_1d(axes), 1):
            confusion_axes(ax, np.array(metrics[f"client{k}_confusion_matrix"]), [c.split("_")[0] for c in classes],
                           title=f"client {k}")


def covariance_figure(ctx, k: int, maps: np.ndarray, arch: str) -> None:
    r = len(maps)
    cols = min(r, 5)
    rows = -(-r // cols)
    with ctx.figure(f"covariance_client{k}", nrows=rows, ncols=cols, figsize=(2.6 * cols, 2.5 * rows),
                    squeeze=False) as (fig, axes):
        for i, ax in enumerate(axes.ravel()):
            if i >= r:
                ax.axis("off")
                continue
            lim = float(np.percentile(np.abs(maps[i]), 99)) or 1.0  # a few near-zero weights dominate the max
            im = ax.imshow(maps[i], cmap="RdBu_r", vmin=-lim, vmax=lim)
            ax.set_title(f"t-round {i + 1}", fontsize=8)
            ax.set_xticks([])
            ax.set_yticks([])
            fig.colorbar(im, ax=ax, fraction=0.046, pad=0.02)
        fig.suptitle(f"client {k} ({arch}): CME covariance of head layer l−2→l−1 (colours clipped at the 99th "
                     "percentile of |cov|)", fontsize=9)


def acf_figure(ctx, k: int, rows: list[dict], arch: str, column: str = "acf_norm") -> None:
    rounds = sorted({int(r["round"]) for r in rows})
    with ctx.figure(f"acf_client{k}", figsize=(7, 3.5)) as (fig, ax):
        import matplotlib

        cmap = matplotlib.colormaps["viridis"]
        for j, rnd in enumerate(rounds):
            rs = sorted((r for r in rows if int(r["round"]) == rnd), key=lambda r: int(r["layer"]))
            ax.plot([int(r["layer"]) for r in rs], [float(r[column]) for r in rs], lw=1,
                    color=cmap(j / max(1, len(rounds) - 1)), label=f"t-round {rnd}")
        ax.set(xlabel="weight tensor (named_parameters order, biases excluded)", ylabel=f"lag-1 {column}",
               title=f"client {k} ({arch}): ACF of CMEs per t-round")
        ax.legend(fontsize=6, ncol=2)


def run(pipe) -> dict:
    from . import cme

    ctx = pipe.ctx
    archives = parent_archives(ctx)
    acf = read_csv(ctx.parent_file("cme/acf.csv"))
    rounds = read_csv(ctx.parent_file("rounds.csv"))
    metrics: dict = {"clients": len(archives)}
    worst_asym, min_eig = 0.0, np.inf
    for k, archive in archives.items():
        rows = [r for r in acf if int(r["client"]) == k]
        arch = rows[0]["arch"] if rows else "?"
        maps = cme.round_maps(archive)
        ctx.write_npy(f"covariance/client{k}.npy", maps.astype(np.float32))
        covariance_figure(ctx, k, maps, arch)
        acf_figure(ctx, k, rows, arch)
        worst_asym = max(worst_asym, float(np.abs(maps - maps.transpose(0, 2, 1)).max()))
        min_eig = min(min_eig, float(min(np.linalg.eigvalsh(m).min() / max(np.abs(m).max(), 1e-30) for m in maps)))
    for r in rounds:
        r["round"], r["client"] = int(r["round"]), int(r["client"])
        r["local_accuracy"] = float(r["local_accuracy"])
        if r.get("broadcast_accuracy"):
            r["broadcast_accuracy"] = float(r["broadcast_accuracy"])
        else:
            r.pop("broadcast_accuracy", None)
    curves_figure(ctx, rounds)
    metrics.update({"cov_max_asymmetry": worst_asym, "cov_min_eig_relative": min_eig,
                    "cov_symmetric_psd": float(worst_asym < 1e-9 and min_eig > -1e-8),
                    "figures": 2 * len(archives) + 1})
    return metrics
