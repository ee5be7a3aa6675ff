"""Figures of hamming-retrieval: retrieval galleries with their labels (the paper's Fig. 5), the Hamming distance
of binary codes against the Jaccard target (what AHDL trains, Table 4), and per-bit balance of an index."""

from __future__ import annotations

import numpy as np

ABBR = {"Atelectasis": "Ate", "Cardiomegaly": "Car", "Effusion": "Eff", "Infiltration": "Inf", "Mass": "Mas",
        "Nodule": "Nod", "Pneumonia": "Pnea", "Pneumothorax": "Pne", "Consolidation": "Con", "Edema": "Ede",
        "Emphysema": "Emp", "Fibrosis": "Fib", "Pleural_Thickening": "PT", "Hernia": "Her"}


def abbreviation(label: str) -> str:
    """The paper's label abbreviations (Fig. 4–5) where it gives one."""
    return ABBR.get(label, label[:4])


def _names(row, labels) -> str:
    return ",".join(abbreviation(lab) for lab, v in zip(labels, row, strict=True) if v) or "—"


def retrieval_grid(ctx, name, q_images, queries, g_images, gallery, ids, dist, labels, n_queries: int, top: int = 5):
    """Each row: a query and its ``top`` nearest gallery images, titled with labels and Hamming distance; a hit
    that shares a label with the query is titled in green, one that shares none in red."""
    n = min(n_queries, len(queries))
    if n == 0:
        return
    top = min(top, ids.shape[1])
    with ctx.figure(name, nrows=n, ncols=top + 1, figsize=(1.9 * (top + 1), 2.1 * n), squeeze=False) as (fig, axes):
        for r in range(n):
            ax = axes[r, 0]
            ax.imshow(q_images[r], cmap="gray", vmin=0, vmax=255)
            known = queries.y is not None
            ax.set_title(f"query\n{_names(queries.y[r], labels) if known else queries.names[r][:18]}", fontsize=8,
                         fontweight="bold")
            for c in range(top):
                j = int(ids[r, c])
                shared = int((queries.y[r] & gallery.y[j]).sum()) if known else None
                ax = axes[r, c + 1]
                ax.imshow(g_images[j], cmap="gray", vmin=0, vmax=255)
                ax.set_title(f"#{c + 1} d={int(dist[r, c])}" + (f" R={shared}" if known else "")
                             + f"\n{_names(gallery.y[j], labels)}", fontsize=8,
                             color="black" if not known else "tab:green" if shared else "tab:red")
        for ax in axes.ravel():
            ax.set_xticks([])
            ax.set_yticks([])
        fig.suptitle("queries and their nearest gallery images (d: Hamming distance, R: shared labels)", fontsize=9)


def distance_vs_target(ctx, q_bits, g_bits, q_y, g_y, k: int, max_pairs: int = 200_000, seed: int = 0):
    """Binary Hamming distance of query–gallery pairs grouped by the AHDL target ⌊K(1 − Jaccard)⌋."""
    q_bits, g_bits = np.asarray(q_bits, np.int16), np.asarray(g_bits, np.int16)
    pairs = len(q_bits) * len(g_bits)
    rng = np.random.default_rng(seed)
    if pairs > max_pairs:
        qi, gi = rng.integers(0, len(q_bits), max_pairs), rng.integers(0, len(g_bits), max_pairs)
    else:
        qi, gi = (a.ravel() for a in np.meshgrid(np.arange(len(q_bits)), np.arange(len(g_bits)), indexing="ij"))
    d = (q_bits[qi] != g_bits[gi]).sum(1)
    a, b = q_y[qi] > 0, g_y[gi] > 0
    n1, n2 = (a | b).sum(1), (a & b).sum(1)
    target = ((n1 - n2) * k) // np.maximum(n1, 1)
    values = sorted(set(target.tolist()))
    with ctx.figure("hamming_vs_target", figsize=(max(5, 0.6 * len(values) + 2), 4)) as (fig, ax):
        ax.boxplot([d[target == v] for v in values], positions=values, widths=max(0.4, k / 40), showfliers=False,
                   manage_ticks=False)
        ax.plot([0, k], [0, k], "k--", lw=0.8, label="d = D_H")
        ax.set_xlim(-1, k + 1)
        ax.set_ylim(-0.5, k + 0.5)
        ax.set_xlabel("target D_H = ⌊K·(1 − Jaccard)⌋")
        ax.set_ylabel("Hamming distance of the binary codes")
        ax.set_title(f"query–gallery pairs ({len(d):,}), K = {k}")
        ax.legend(loc="upper left", fontsize=8)


def bit_balance(ctx, bits, k: int, name: str = "bit_balance"):
    """Fraction of codes with each bit set (0.5 everywhere is a balanced code)."""
    frac = np.asarray(bits, dtype=np.float64).mean(0) if len(bits) else np.zeros(k)
    with ctx.figure(name, figsize=(max(4, 0.18 * k + 2), 3)) as (fig, ax):
        ax.bar(np.arange(k), frac, color="tab:blue")
        ax.axhline(0.5, color="k", lw=0.8, ls="--")
        ax.set_ylim(0, 1)
        ax.set_xlabel("bit")
        ax.set_ylabel("share of codes with bit = 1")
        ax.set_title(f"bit balance of {len(bits)} codes")


def label_counts(ctx, counts: dict[str, dict[str, int]], labels):
    """Grouped bars: images per label in each split."""
    splits = list(counts)
    x = np.arange(len(labels))
    width = 0.8 / max(1, len(splits))
    with ctx.figure("label_counts", figsize=(max(6, 0.6 * len(labels) + 2), 3.5)) as (fig, ax):
        for i, s in enumerate(splits):
            ax.bar(x + i * width, [counts[s].get(lab, 0) for lab in labels], width, label=s)
        ax.set_xticks(x + width * (len(splits) - 1) / 2, [abbreviation(lab) for lab in labels])
        ax.set_ylabel("images")
        ax.legend(fontsize=8)
        ax.set_title("images per finding and split")
