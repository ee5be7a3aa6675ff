"""The paper's distances and losses as pure functions (card "Method"; Eqs. 6–11).

- :func:`target_distance` D_H (Eqs. 6–7): with n1 = |y_i ∪ y_j| and n2 = |y_i ∩ y_j|, the list
  L^(n1) = [K, ⌊(n1−1)K/n1⌋, …, 0] indexed by n2, i.e. D_H = ⌊K·(n1 − n2)/n1⌋ = ⌊K·(1 − Jaccard)⌋, computed in
  integers (no floating-point floor). Two empty label sets (n1 = 0, which the paper's selection rules out) give 0.
- :func:`predicted_distance` d_H (Eq. 9): (K/2)·(1 − cos(h_i, h_j)); for ±1 codes this is the Hamming distance.
- :func:`log_cosh`: log(cosh(x)) = |x| + log1p(e^{−2|x|}) − log 2, finite for any x (Eq. 10).
- :func:`ahdl` J1 (Eq. 8): Σ_pairs log cosh((D_H − d_H)/K).
- :func:`pmcl` J2 (Eq. 11): Σ_pairs Σ_l BCEWithLogits on both images of each pair.
Both losses are sums over the batch, as the reference code (``reduction="sum"``).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def hd_list(n1: int, k: int) -> list[int]:
    """L^(n1) of Eq. 7: [K, ⌊(n1−1)K/n1⌋, …, ⌊K/n1⌋, 0]."""
    return [((n1 - n2) * k) // n1 for n2 in range(n1 + 1)]


def target_distance(y_i: torch.Tensor, y_j: torch.Tensor, k: int) -> torch.Tensor:
    """D_H (B,) of multi-hot label rows (B, L), as float."""
    a, b = y_i > 0, y_j > 0
    n1 = (a | b).sum(-1).long()
    n2 = (a & b).sum(-1).long()
    d = torch.div((n1 - n2) * k, n1.clamp(min=1), rounding_mode="floor")
    return d.to(torch.float32)


def predicted_distance(h_i: torch.Tensor, h_j: torch.Tensor, k: int | None = None) -> torch.Tensor:
    """d_H (B,) = K/2·(1 − cos(h_i, h_j)) of real-valued codes (B, K)."""
    k = h_i.shape[-1] if k is None else k
    return k / 2 * (1 - F.cosine_similarity(h_i, h_j, dim=-1, eps=1e-8))


def log_cosh(x: torch.Tensor) -> torch.Tensor:
    a = x.abs()
    return a + torch.log1p(torch.exp(-2 * a)) - math.log(2.0)


def ahdl(h_i, h_j, y_i, y_j) -> torch.Tensor:
    """J1, summed over the pairs of the batch."""
    k = h_i.shape[-1]
    return log_cosh((target_distance(y_i, y_j, k) - predicted_distance(h_i, h_j, k)) / k).sum()


def pmcl(logits_i, logits_j, y_i, y_j) -> torch.Tensor:
    """J2, summed over the pairs and labels of the batch."""
    return (F.binary_cross_entropy_with_logits(logits_i, y_i.float(), reduction="sum")
            + F.binary_cross_entropy_with_logits(logits_j, y_j.float(), reduction="sum"))
