"""The ``spectral-map`` stage (the paper's Fig. 6): where in frequency the denoising acts, and what the SRUs'
global branches see.

For the first ``spectral_map.slices`` slices of ``spectral_map.split``: the whole slice is denoised by the sliding
window; the centred log-magnitude spectra log(1 + |FFT2|) of LDCT, output and NDCT (on the eval window's HU) and
of the removed noise (LDCT − output) are drawn, and for SEANet / SEANet² the global-branch features FM^global of
each SRU on the centre patch (channel mean of the log-magnitude spectra, beside the channel-mean feature map).
``spectral.csv``: per slice and image, the share of spectral energy above half the Nyquist radius; the metrics
are their means (``hf_share_ldct``, ``hf_share_output``, ``hf_share_ndct``).
"""

from __future__ import annotations

import numpy as np
import torch


def log_spectrum(img: np.ndarray) -> np.ndarray:
    """Centred log(1 + |FFT2|) of a 2D array (mean removed)."""
    return np.log1p(np.abs(np.fft.fftshift(np.fft.fft2(img - img.mean()))))


def hf_share(img: np.ndarray, cutoff: float = 0.5) -> float:
    """Share of spectral power at radii above ``cutoff`` × Nyquist."""
    power = np.abs(np.fft.fft2(img - img.mean())) ** 2
    fy, fx = np.meshgrid(np.fft.fftfreq(img.shape[0]), np.fft.fftfreq(img.shape[1]), indexing="ij")
    radius = np.sqrt(fy ** 2 + fx ** 2) / 0.5
    return float(power[radius > cutoff].sum() / max(power.sum(), 1e-12))


def spectral_map(p) -> dict:
    from ..predictor import Forward
    from .pipeline import to_hu_window

    sm, window = p.m.spectral_map, p.m.eval.window
    s = p.split_of(p.splits(), sm.split)
    raw = p.trained_model()
    net = p.predictor.setup(raw)
    feats_of = Forward(raw, lambda n, x: n(x, features=True)[1])
    rows, shown = [], min(sm.slices, len(s))
    patch = p.m.train.patch
    for i in range(shown):
        sid, ld, nd = s.pairs[i].id, s.ld[i], s.nd[i]
        out = p.denoise_array(net, ld)
        imgs = {"LDCT": to_hu_window(ld, window), "output": to_hu_window(out, window), "NDCT": to_hu_window(nd, window)}
        for name, im in imgs.items():
            rows.append({"slice": sid, "image": name, "hf_share": hf_share(im)})
        r0, c0 = (ld.shape[0] - patch) // 2, (ld.shape[1] - patch) // 2
        feats = p.predictor(feats_of, torch.from_numpy(ld[r0:r0 + patch, c0:c0 + patch].copy())[None, None])
        ncols = 4
        nrows = 2 + (1 if feats else 0)
        size = (4 * ncols, 3.6 * nrows)
        with p.ctx.figure(f"spectral_map_{sid}", nrows=nrows, ncols=ncols, figsize=size) as (fig, ax):
            panels = [*imgs.items(), ("LDCT − output (removed noise)", imgs["LDCT"] - imgs["output"])]
            for j, (name, im) in enumerate(panels):
                ax[0, j].imshow(im, cmap="gray")
                ax[0, j].set_title(name)
                spec = ax[1, j].imshow(log_spectrum(im), cmap="magma")
                ax[1, j].set_title(f"log |FFT| of {name.split(' (')[0]}")
                fig.colorbar(spec, ax=ax[1, j], shrink=0.75)
            for j, (name, g) in enumerate(sorted(feats.items())[:2] if feats else []):
                g = g[0].numpy()  # (C, S, S)
                ax[2, 2 * j].imshow(g.mean(0), cmap="viridis")
                ax[2, 2 * j].set_title(f"SRU {name}: mean feature ({g.shape[0]} ch, {g.shape[1]}²)")
                spec = np.mean([log_spectrum(c) for c in g], axis=0)
                ax[2, 2 * j + 1].imshow(spec, cmap="magma")
                ax[2, 2 * j + 1].set_title(f"SRU {name}: mean log |FFT|")
            for a in ax.flat:
                a.axis("off")
    p.ctx.write_csv("spectral.csv", rows)
    means = {name: float(np.mean([r["hf_share"] for r in rows if r["image"] == name]))
             for name in ("LDCT", "output", "NDCT")}
    return {"slices": shown, "hf_share_ldct": means["LDCT"], "hf_share_output": means["output"],
            "hf_share_ndct": means["NDCT"], "sru_features": bool(feats) if shown else False}
