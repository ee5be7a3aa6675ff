"""idqce's figures: VQ-VAE reconstructions and codebook usage, Grad-CAM heat maps beside the input."""

from __future__ import annotations

import numpy as np


def reconstructions(ctx, images: np.ndarray, recon: np.ndarray) -> None:
    """Test images (top) above their VQ-VAE reconstructions (bottom)."""
    n = len(images)
    with ctx.figure("reconstructions", nrows=2, ncols=n, figsize=(1.6 * n, 3.4)) as (fig, axes):
        axes = np.asarray(axes).reshape(2, n)
        for i in range(n):
            axes[0, i].imshow(images[i], cmap="gray", vmin=0, vmax=255)
            axes[1, i].imshow(recon[i], cmap="gray", vmin=0, vmax=1)
            for ax in axes[:, i]:
                ax.axis("off")
        axes[0, 0].set_title("input", fontsize=8, loc="left")
        axes[1, 0].set_title("reconstruction", fontsize=8, loc="left")


def codebook_usage(ctx, counts: np.ndarray) -> None:
    """How often each codeword is chosen on the test images, most used first."""
    order = np.sort(counts)[::-1]
    with ctx.figure("codebook_usage", figsize=(6, 3)) as (fig, ax):
        ax.bar(np.arange(len(order)), order, width=1.0)
        ax.set_xlabel("codeword (sorted by use)")
        ax.set_ylabel("latent positions")
        ax.set_title(f"codebook usage: {int((counts > 0).sum())} of {len(counts)} codewords used")


def heatmaps(ctx, images: np.ndarray, cams: np.ndarray, titles: list[str]) -> None:
    """Each image beside its Grad-CAM overlay."""
    n = len(images)
    with ctx.figure("gradcam", nrows=2, ncols=n, figsize=(1.9 * n, 4.2)) as (fig, axes):
        axes = np.asarray(axes).reshape(2, n)
        for i in range(n):
            axes[0, i].imshow(images[i], cmap="gray")
            axes[1, i].imshow(images[i], cmap="gray")
            axes[1, i].imshow(cams[i], cmap="jet", alpha=0.45, vmin=0, vmax=1)
            axes[0, i].set_title(titles[i], fontsize=6)
            for ax in axes[:, i]:
                ax.axis("off")


def auc_by_fraction(ctx, rows: list[dict]) -> None:
    """Test macro AUC against the label fraction, one line per encoder."""
    with ctx.figure("auc_by_fraction", figsize=(5, 3.6)) as (fig, ax):
        for enc in dict.fromkeys(r["encoder"] for r in rows):
            pts = sorted((r["fraction"], r["auc"]) for r in rows if r["encoder"] == enc)
            ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=enc)
        ax.set_xscale("log")
        ax.set_xlabel("label fraction")
        ax.set_ylabel("test macro AUC")
        ax.axhline(0.5, color="grey", lw=0.8, ls="--")
        ax.legend()
