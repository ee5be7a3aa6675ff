"""Learnable grey-scale morphology and the morphological attention of MA-DTNet (C-SMA), for 2D maps.

Source: ``ma-dtnet.md``, section "Method", item "C-SMA(C)" and "Ambiguities" (per-channel operation; erosion
subtracts the structuring element; CA first, then SMA; ReLU + BN after each morphological op).

For a rate r and a learnable per-channel 3x3 structuring element SE (initialised to zero):

    erosion   DE^r(X)_c(i, j) = min_{m, n} [ X_c(i + (m-1) r, j + (n-1) r) - SE^e_c(m, n) ]
    dilation  DD^r(X)_c(i, j) = max_{m, n} [ X_c(i + (m-1) r, j + (n-1) r) + SE^d_c(m, n) ]

i.e. the card's window ``i - r m`` centred by its "same" padding of r; the taps come from ``F.unfold`` with
dilation r. SMA on a map X (rates 1, 2, 3):

    X_DE = ReLU(BN(Conv1x1(concat_r BN(ReLU(DE^r X)))))     (3C -> 1)
    X_DD = ReLU(BN(Conv1x1(concat_r BN(ReLU(DD^r X)))))     (3C -> 1)
    W    = sigmoid(BN(Conv3x3([X_DE; X_DD])))               (2 -> 1),   SMA(X) = X * W

and C-SMA(X) = SMA(CA(X)) with the CBAM channel attention of ``models/attention.py`` (r = 16).

Choices where the card is silent:

- Border: ``border="ignore"`` (default) pads with +inf for erosion and -inf for dilation, so pixels outside the
  image never win the min / max (scikit-image's ``mode="ignore"``). ``border="zeros"`` is plain ``F.unfold``
  zero padding (scikit-image's ``mode="constant", cval=0``).
- Convolutions followed by BatchNorm carry no bias (the BN shift makes it redundant).
- The min / max sends its gradient to one winning tap (``torch.min``/``torch.max`` along the taps).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .attention import ChannelAttention

__all__ = ["CSMA", "MorphologicalOp", "SpatialMorphologicalAttention"]


class MorphologicalOp(nn.Module):
    """Depthwise grey-scale erosion or dilation with a learnable ``kernel_size``² structuring element per channel."""

    def __init__(
        self,
        channels: int,
        operation: str,
        kernel_size: int = 3,
        dilation: int = 1,
        border: str = "ignore",
    ):
        super().__init__()
        if operation not in ("erosion", "dilation"):
            raise ValueError(f"operation must be 'erosion' or 'dilation', got {operation!r}")
        if border not in ("ignore", "zeros"):
            raise ValueError(f"border must be 'ignore' or 'zeros', got {border!r}")
        if kernel_size % 2 == 0:
            raise ValueError(f"kernel_size must be odd, got {kernel_size}")
        self.operation = operation
        self.kernel_size = kernel_size
        self.dilation = dilation
        self.border = border
        self.se = nn.Parameter(torch.zeros(channels, kernel_size, kernel_size))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, channels, height, width = x.shape
        pad = self.dilation * (self.kernel_size // 2)
        if self.border == "ignore":
            fill = float("inf") if self.operation == "erosion" else float("-inf")
            x = F.pad(x, (pad, pad, pad, pad), value=fill)
        else:
            x = F.pad(x, (pad, pad, pad, pad))
        taps = F.unfold(x, self.kernel_size, dilation=self.dilation)  # (B, C*k*k, H*W)
        taps = taps.view(batch, channels, self.kernel_size**2, height * width)
        se = self.se.view(1, channels, -1, 1)
        if self.operation == "erosion":
            out = (taps - se).min(dim=2).values
        else:
            out = (taps + se).max(dim=2).values
        return out.view(batch, channels, height, width)


class SpatialMorphologicalAttention(nn.Module):
    """SMA: a spatial gate computed from multi-rate learnable erosions and dilations (module docstring)."""

    def __init__(self, channels: int, rates: tuple[int, ...] = (1, 2, 3), kernel_size: int = 3, border: str = "ignore"):
        super().__init__()

        def branch(operation: str) -> nn.ModuleList:
            return nn.ModuleList(
                nn.Sequential(
                    MorphologicalOp(channels, operation, kernel_size, rate, border),
                    nn.ReLU(inplace=True),
                    nn.BatchNorm2d(channels),
                )
                for rate in rates
            )

        def squeeze() -> nn.Sequential:
            return nn.Sequential(
                nn.Conv2d(len(rates) * channels, 1, 1, bias=False), nn.BatchNorm2d(1), nn.ReLU(inplace=True)
            )

        self.erosions, self.dilations = branch("erosion"), branch("dilation")
        self.squeeze_erosion, self.squeeze_dilation = squeeze(), squeeze()
        self.gate = nn.Sequential(nn.Conv2d(2, 1, 3, padding=1, bias=False), nn.BatchNorm2d(1))

    def weights(self, x: torch.Tensor) -> torch.Tensor:
        """The gate W_SMA in (0, 1), shape (B, 1, H, W)."""
        eroded = self.squeeze_erosion(torch.cat([op(x) for op in self.erosions], dim=1))
        dilated = self.squeeze_dilation(torch.cat([op(x) for op in self.dilations], dim=1))
        return torch.sigmoid(self.gate(torch.cat([eroded, dilated], dim=1)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.weights(x)


class CSMA(nn.Module):
    """C-SMA: CBAM-style channel attention, then the morphological spatial gate (ma-dtnet.md, CA first)."""

    def __init__(
        self,
        channels: int,
        reduction: int = 16,
        rates: tuple[int, ...] = (1, 2, 3),
        kernel_size: int = 3,
        border: str = "ignore",
        channel_attention: bool = True,
        spatial_attention: bool = True,
    ):
        super().__init__()
        self.channel = ChannelAttention(channels, reduction, 1, spatial_dims=2) if channel_attention else nn.Identity()
        self.spatial = (
            SpatialMorphologicalAttention(channels, rates, kernel_size, border) if spatial_attention else nn.Identity()
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.spatial(self.channel(x))
