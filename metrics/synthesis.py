"""Distribution metrics for image synthesis without paired ground truth (mcgan, Eq. 11).

- ``histogram(values, bins, range)``: a normalised intensity histogram (sums to 1; an empty input gives zeros).
- ``kl_divergence(p, q, eps)``: KL(p ‖ q) = Σ p log(p / q) after adding ``eps`` to every bin and renormalising
  (the card's ε = 1e-10 smoothing); equals ``scipy.stats.entropy(p + eps, q + eps)``.
- ``tissue_weights(counts)``: λ_r = voxels of tissue r / brain voxels (they sum to 1).
- ``tissue_kl(real, synthetic, weights)``: KL_r per tissue and KL_average = Σ λ_r·KL_r.
"""

from __future__ import annotations

import numpy as np

TISSUES = ("csf", "gm", "wm")  # labels 1, 2, 3 of FSL FAST's *_seg


def histogram(values, bins: int = 256, range: tuple[float, float] = (0.0, 1.0)) -> np.ndarray:  # noqa: A002
    h, _ = np.histogram(np.clip(np.asarray(values, dtype=np.float64).ravel(), *range), bins=bins, range=range)
    total = h.sum()
    return h / total if total else h.astype(np.float64)


def kl_divergence(p, q, eps: float = 1e-10) -> float:
    p = np.asarray(p, dtype=np.float64) + eps
    q = np.asarray(q, dtype=np.float64) + eps
    p, q = p / p.sum(), q / q.sum()
    return float(np.sum(p * np.log(p / q)))


def tissue_weights(counts: dict[str, float]) -> dict[str, float]:
    total = float(sum(counts.values()))
    if total <= 0:
        raise ValueError("no brain voxels: tissue weights are undefined")
    return {k: float(v) / total for k, v in counts.items()}


def tissue_kl(real: dict[str, np.ndarray], synthetic: dict[str, np.ndarray], weights: dict[str, float], *,
              bins: int = 256, eps: float = 1e-10) -> dict[str, float]:
    """``real``/``synthetic``: {tissue: intensities in [0, 1]}; returns ``kl_<tissue>`` and ``kl_average``."""
    out = {f"kl_{t}": kl_divergence(histogram(real[t], bins), histogram(synthetic[t], bins), eps) for t in weights}
    out["kl_average"] = float(sum(weights[t] * out[f"kl_{t}"] for t in weights))
    return out
