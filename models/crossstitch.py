"""Cross-stitch multitask CNN for HFO + IED classification (epilepsy-mtl card).

Two identical small CNNs, one per biomarker (HFO wavelet images, IED waveform images), each 3×28×28 →
2 logits, coupled by cross-stitch units (Misra et al. 2016, the paper's Eq. 1): learned linear mixes of the two
streams' intermediate features, initialised to the identity.

Each stream (the paper's Keras model: valid padding, default initialisers)::

    Conv2d 3→8 k3 → ReLU → BatchNorm → MaxPool 3/3     (8×8×8)   → cross-stitch 1
    Conv2d 8→16 k3 → ReLU → BatchNorm → MaxPool 3/3    (16×2×2)  → cross-stitch 2
    Flatten (64) → Dense(2) → Dropout(0.8) → Dense(2)  (logits; softmax outside)

Stitch units:

- ``full`` (default): one square matrix α over the concatenated flattened maps of both streams,
  [x̃_A; x̃_B] = α·[x_A; x_B]; unit 1 is 1024×1024, unit 2 128×128 (1,064,960 parameters). Only this reading
  gives the paper's 1.06 M parameters (card, "Ambiguities").
- ``channel``: Misra's per-channel 2×2 matrices, x̃_A[c] = α_c[0,0]·x_A[c] + α_c[0,1]·x_B[c] (likewise B).

``n_stitch``: 0 = two independent networks, 1 = a stitch after pool 1 only, 2 = the proposed model.

Parameter count: Keras counts BatchNorm's moving mean and variance as (non-trainable) parameters, which is how
the paper's 1,068,208 (1.07 M) adds up: :func:`keras_param_count` = trainable parameters + BN running stats.
PyTorch's ``parameters()`` alone gives 1,068,112.

Initialisation as Keras' defaults: Glorot-uniform kernels, zero biases; BN with Keras' momentum 0.99
(PyTorch momentum 0.01) and eps 1e-3.
"""

from __future__ import annotations

import torch
from torch import nn


class FullStitch(nn.Module):
    """[x̃_A; x̃_B] = α·[x_A; x_B] over the flattened maps; α (2D×2D) starts as the identity."""

    def __init__(self, shape: tuple[int, ...]):
        super().__init__()
        self.shape = tuple(shape)
        d = 1
        for s in shape:
            d *= s
        self.d = d
        self.alpha = nn.Parameter(torch.eye(2 * d))

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        n = a.shape[0]
        x = torch.cat([a.reshape(n, -1), b.reshape(n, -1)], dim=1) @ self.alpha.T
        return x[:, : self.d].reshape(n, *self.shape), x[:, self.d:].reshape(n, *self.shape)


class ChannelStitch(nn.Module):
    """Misra's cross-stitch: per channel c, [x̃_A; x̃_B] = α_c·[x_A; x_B] with α_c 2×2, identity at init."""

    def __init__(self, channels: int):
        super().__init__()
        self.alpha = nn.Parameter(torch.eye(2).repeat(channels, 1, 1))  # (C, 2, 2)

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        w = self.alpha[None, :, :, :, None, None]  # (1, C, 2, 2, 1, 1)
        x = torch.stack([a, b], dim=2)  # (N, C, 2, H, W)
        y = (w * x[:, :, None]).sum(3)  # (N, C, 2, H, W): y[:, c, i] = Σ_j α_c[i, j] x[:, c, j]
        return y[:, :, 0], y[:, :, 1]


class Stream(nn.Module):
    """One biomarker's CNN, split at the two stitch points."""

    def __init__(self, dropout: float = 0.8, bn_momentum: float = 0.01, bn_eps: float = 1e-3):
        super().__init__()
        self.block1 = nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU(), nn.BatchNorm2d(8, eps=bn_eps, momentum=bn_momentum),
                                    nn.MaxPool2d(3, 3))
        self.block2 = nn.Sequential(
            nn.Conv2d(8, 16, 3), nn.ReLU(), nn.BatchNorm2d(16, eps=bn_eps, momentum=bn_momentum), nn.MaxPool2d(3, 3)
        )
        self.head = nn.Sequential(nn.Flatten(), nn.Linear(64, 2), nn.Dropout(dropout), nn.Linear(2, 2))


class CrossStitchNet(nn.Module):
    """forward(x_hfo, x_ied) → (logits_hfo, logits_ied); inputs (N, 3, 28, 28) scaled to [0, 1]."""

    TASKS = ("hfo", "ied")

    def __init__(self, stitch: str = "full", n_stitch: int = 2, dropout: float = 0.8, bn_momentum: float = 0.01):
        super().__init__()
        if stitch not in ("full", "channel"):
            raise ValueError(f"stitch must be 'full' or 'channel', not {stitch!r}")
        if n_stitch not in (0, 1, 2):
            raise ValueError(f"n_stitch must be 0, 1 or 2, not {n_stitch!r}")
        self.stitch, self.n_stitch = stitch, n_stitch
        self.hfo = Stream(dropout, bn_momentum)
        self.ied = Stream(dropout, bn_momentum)
        shapes = [(8, 8, 8), (16, 2, 2)]
        units = [FullStitch(s) if stitch == "full" else ChannelStitch(s[0]) for s in shapes[:n_stitch]]
        self.stitches = nn.ModuleList(units)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Keras defaults: Glorot-uniform kernels, zero biases (stitches stay the identity)."""
        for m in self.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                nn.init.xavier_uniform_(m.weight)
                nn.init.zeros_(m.bias)

    def conv_kernels(self) -> list[torch.Tensor]:
        """The kernels the card's L1 ("lasso") penalty applies to."""
        return [m.weight for m in self.modules() if isinstance(m, nn.Conv2d)]

    def features(self, xa: torch.Tensor, xb: torch.Tensor):
        a, b = self.hfo.block1(xa), self.ied.block1(xb)
        if self.n_stitch >= 1:
            a, b = self.stitches[0](a, b)
        a, b = self.hfo.block2(a), self.ied.block2(b)
        if self.n_stitch >= 2:
            a, b = self.stitches[1](a, b)
        return a, b

    def forward(self, x_hfo: torch.Tensor, x_ied: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        a, b = self.features(x_hfo, x_ied)
        return self.hfo.head(a), self.ied.head(b)


def keras_param_count(model: nn.Module) -> int:
    """Parameters as Keras' ``model.summary()`` counts them: trainable + BatchNorm moving mean and variance."""
    n = sum(p.numel() for p in model.parameters())
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats:
            n += m.running_mean.numel() + m.running_var.numel()
    return n
