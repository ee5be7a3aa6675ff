"""transnet-oct's figures: stack overlays (label maps over the B-scans), prior maps, per-layer bars."""

from __future__ import annotations

import numpy as np

from ..report import paper_data


def _cmap():
    import matplotlib

    return matplotlib.colormaps["tab20"].resampled(12)


def _show(ax, img, lab, title):
    ax.imshow(img, cmap="gray", vmin=0, vmax=1)
    if lab is not None:
        shown = np.ma.masked_where((lab == 0) | (lab == 255), lab)
        ax.imshow(shown, cmap=_cmap(), vmin=0, vmax=11, alpha=0.45, interpolation="nearest")
        ax.contour(lab, levels=np.arange(0.5, 11.5), colors="white", linewidths=0.3)
    ax.set_title(title, fontsize=7)
    ax.set_axis_off()


def stack_overlay(ctx, name, stack, pred):
    """The 5 B-scans (rows: label, prediction; columns: c−2 … c+2) and, for the volume's other two planes, the
    label and prediction of the column through the fovea pit (slices × depth) and of the mid-depth row."""
    with ctx.figure(name, nrows=2, ncols=7, figsize=(17, 5)) as (fig, ax):
        for j in range(5):
            _show(ax[0, j], stack.x[j], stack.y[j], f"B-scan {stack.centre + j - 2}: label")
            _show(ax[1, j], stack.x[j], pred[j], f"B-scan {stack.centre + j - 2}: prediction")
        s = pred.shape[-1] // 2
        img = stack.x[:5, :, s].T  # depth × slices
        for r, lab in ((0, stack.y), (1, pred)):
            _show(ax[r, 5], img, lab[:, :, s].T, f"column {s} across B-scans")
            ax[r, 5].set_aspect("auto")
        depth = int(np.argmax(np.bincount(np.where(stack.y[2] == 6)[0], minlength=pred.shape[-2]))) \
            if (stack.y[2] == 6).any() else pred.shape[-2] // 2
        img = stack.x[:5, depth, :]
        for r, lab in ((0, stack.y), (1, pred)):
            _show(ax[r, 6], img, lab[:, depth, :], f"en-face row {depth} (ONL)")
            ax[r, 6].set_aspect("auto")
        fig.suptitle(f"{stack.patient}: top label, bottom prediction", fontsize=9)


def prior_panel(ctx, name, stack, mid_labels, priors):
    with ctx.figure(name, nrows=2, ncols=5, figsize=(13, 5)) as (fig, ax):
        order = (0, 1, None, 2, 3)
        for j in range(5):
            _show(ax[0, j], stack[j], None, f"B-scan c{j - 2:+d}" if j != 2 else "fovea c")
            lab = mid_labels if order[j] is None else priors[order[j]]
            _show(ax[1, j], stack[j], lab, "M_L (labels)" if order[j] is None else f"prior Q{order[j] + 1}^L")


def layer_bars(ctx, metrics, spec):
    """Per-layer DSC of this run beside the paper's Table 2 (with prior)."""
    from medrun.datasets.oct_layers import LAYERS

    paper = {r[0]: r[1] for r in paper_data(spec)["tables"]["table2"]["rows"]}
    x = np.arange(len(LAYERS))
    with ctx.figure("per_layer_dsc", figsize=(8, 3.5)) as (fig, ax):
        ax.bar(x - 0.2, [metrics[f"dsc_{n}"] for n in LAYERS], 0.4, label="this run")
        ax.bar(x + 0.2, [paper.get(n, np.nan) for n in LAYERS], 0.4, label="paper (prior, 85-patient LOO)")
        ax.set_xticks(x, LAYERS, fontsize=8)
        ax.set_ylabel("DSC")
        ax.set_ylim(0, 1)
        ax.legend(fontsize=7)


def cv_bars(ctx, summary, layers):
    with ctx.figure("cv_per_layer_dsc", figsize=(9, 3.5)) as (fig, ax):
        x, w = np.arange(len(layers)), 0.8 / max(1, len(summary))
        for i, s in enumerate(summary):
            ax.bar(x + (i - (len(summary) - 1) / 2) * w, [s.get(f"dsc_{n}", np.nan) for n in layers], w,
                   yerr=[s.get(f"dsc_{n}_sd", 0) for n in layers], label=str(s["variant"]))
        ax.set_xticks(x, layers, fontsize=8)
        ax.set_ylabel("DSC (mean ± sd over folds)")
        ax.set_ylim(0, 1)
        ax.legend(fontsize=7)
