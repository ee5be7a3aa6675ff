"""asd-transformer's figures: the attention maps (the paper's Fig. 4 analogue), ROC curves per run of the protocol,
and the per-site mean FC before and after ComBat (``prepare``). Each is written through the run's context."""

from __future__ import annotations

import numpy as np
import torch

from . import features as feat


def attention(p, net, x: np.ndarray, idx: np.ndarray) -> None:
    """The global layer's head-averaged attention (prompts then nodes, in community order), averaged over test ASD
    and control subjects, and the mean community scores a_k. The encoder runs through the predictor."""
    from ..predictor import Forward

    y = p.data().label[idx]
    enc = p.predictor(Forward(net, "encode"), torch.from_numpy(x[idx]))
    w = canonical_attention(enc, len(net.blocks)).numpy()
    score = enc["score"].numpy()
    with p.ctx.figure("attention_maps", ncols=3, figsize=(14, 4.4)) as (fig, axes):
        for ax, cls, name in ((axes[0], 1, "ASD"), (axes[1], 0, "control")):
            sel = y == cls
            if sel.any():
                im = ax.imshow(w[sel].mean(0), cmap="viridis")
                fig.colorbar(im, ax=ax, fraction=0.046)
            ax.set_title(f"global-layer attention, {name} (n={int(sel.sum())})")
            for e in np.cumsum([len(net.blocks), *net.blocks])[:-1] - 0.5:
                ax.axhline(e, color="w", lw=0.4)
                ax.axvline(e, color="w", lw=0.4)
            ax.set_xlabel("key (8 prompts, then ROIs by community)")
            ax.set_ylabel("query")
        k = np.arange(len(net.blocks))
        for off, cls, name in ((-0.2, 1, "ASD"), (0.2, 0, "control")):
            if (y == cls).any():
                axes[2].bar(k + off, score[y == cls].mean(0), width=0.4, label=name)
        axes[2].set_xlabel("community")
        axes[2].set_ylabel("local attention to the prompt (a_k)")
        axes[2].set_title("community scores")
        axes[2].legend()


def canonical_attention(enc: dict, kc: int) -> torch.Tensor:
    """The global layer's attention (B, K+N, K+N) with tokens put back in canonical order: prompts of communities
    0..K−1, then ROIs in community order (undoing the interaction module's per-subject reordering)."""
    w, order, node_perm = enc["global_attention"], enc["order"], enc["node_perm"]
    b = w.shape[0]
    token_ids = torch.cat([order.flip(1), node_perm + kc], 1)  # canonical id of each position
    pos = torch.argsort(token_ids, 1)  # position of each canonical id
    w = w.gather(1, pos[:, :, None].expand(b, *w.shape[1:]))
    return w.gather(2, pos[:, None, :].expand(b, *w.shape[1:]))


def roc(ctx, rows: list[dict]) -> None:
    """ROC curve of each run's test split (ASD positive)."""
    from sklearn.metrics import roc_curve

    with ctx.figure("roc", figsize=(4.5, 4.5)) as (_, ax):
        for r in sorted({row["run"] for row in rows}):
            sub = [row for row in rows if row["run"] == r]
            y = np.array([row["true"] for row in sub])
            if len(set(y.tolist())) < 2:
                continue
            fpr, tpr, _ = roc_curve(y, [row["prob_asd"] for row in sub])
            ax.plot(fpr, tpr, label=f"run {r}")
        ax.plot([0, 1], [0, 1], "k:", lw=0.8)
        ax.set_xlabel("1 − specificity")
        ax.set_ylabel("sensitivity")
        ax.set_title("ROC, test split (ASD positive)")
        ax.legend(loc="lower right")


def combat_sites(ctx, data, harmonised: np.ndarray | None) -> None:
    """Per-site mean FC (upper triangle) before and after ComBat; ``harmonised`` None: ComBat off."""
    sites = np.array(data.site)
    names = sorted(set(data.site))
    before = feat.upper(data.corr.astype(np.float64)).mean(1)
    # the mean off-diagonal FC does not depend on the ROI order, so the community-ordered matrices will do
    after = before if harmonised is None else feat.upper(harmonised.astype(np.float64)).mean(1)
    with ctx.figure("combat_sites", figsize=(max(5, 0.5 * len(names) + 2), 4)) as (_, ax):
        pos = np.arange(len(names))
        ax.bar(pos - 0.2, [before[sites == s].mean() for s in names], 0.4, label="before ComBat")
        ax.bar(pos + 0.2, [after[sites == s].mean() for s in names], 0.4, label="after ComBat")
        ax.set_xticks(pos, names, rotation=45, ha="right")
        ax.set_ylabel("mean FC (upper triangle)")
        ax.set_title("per-site mean connectivity")
        ax.legend()
