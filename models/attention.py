"""CBAM: channel attention followed by spatial attention, for 2D and 3D feature maps.

Used by three cards:

- ``sc-unext.md`` (Method, "SC-UNeXt additions"): CBAM on every encoder skip, shared MLP C -> max(C/4, 2) -> C,
  because the usual reduction 16 does not fit C = 8. The card's budget of 3,112 parameters for the four skips
  (8, 16, 32, 64 channels) is met only with bias-free MLP layers and a bias-free 7x7 spatial conv, which is also
  what the original CBAM does; so both are bias-free here.
- ``cmu-net.md`` (Method, "CBAM(C)"): after every Mamba layer, r = 16, hidden width at least 1.
- ``ma-dtnet.md`` (Method, "C-SMA"): the channel half alone (``ChannelAttention``), r = 16, ahead of the
  morphological spatial gate in ``models/morphology.py``.

Channel attention:  M_c = sigmoid(MLP(AvgPool(F)) + MLP(MaxPool(F))),  F' = M_c * F.
Spatial attention:  M_s = sigmoid(Conv7([mean_c F'; max_c F'])),       F'' = M_s * F'.
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["CBAM", "ChannelAttention", "SpatialAttention", "hidden_width"]


def _conv(spatial_dims: int) -> type[nn.Module]:
    if spatial_dims not in (2, 3):
        raise ValueError(f"spatial_dims must be 2 or 3, got {spatial_dims}")
    return nn.Conv2d if spatial_dims == 2 else nn.Conv3d


def hidden_width(channels: int, reduction: int, min_hidden: int = 1) -> int:
    """Width of the channel-attention bottleneck: ``max(channels // reduction, min_hidden)``."""
    return max(channels // reduction, min_hidden)


class ChannelAttention(nn.Module):
    """``M_c = sigmoid(MLP(avg) + MLP(max))`` with one MLP (1x1 convs, no bias) shared by both poolings.

    Returns the re-weighted input ``M_c * x``; ``weights(x)`` returns ``M_c`` alone (shape B, C, 1, 1[, 1]).
    """

    def __init__(self, channels: int, reduction: int = 16, min_hidden: int = 1, spatial_dims: int = 2):
        super().__init__()
        conv = _conv(spatial_dims)
        hidden = hidden_width(channels, reduction, min_hidden)
        self.mlp = nn.Sequential(
            conv(channels, hidden, 1, bias=False),
            nn.ReLU(inplace=True),
            conv(hidden, channels, 1, bias=False),
        )

    def weights(self, x: torch.Tensor) -> torch.Tensor:
        dims = tuple(range(2, x.ndim))
        avg = x.mean(dim=dims, keepdim=True)
        peak = x.amax(dim=dims, keepdim=True)
        return torch.sigmoid(self.mlp(avg) + self.mlp(peak))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.weights(x)


class SpatialAttention(nn.Module):
    """``M_s = sigmoid(Conv_k([mean_c x; max_c x]))`` (2 -> 1 channels, "same" padding, no bias)."""

    def __init__(self, kernel_size: int = 7, spatial_dims: int = 2):
        super().__init__()
        if kernel_size % 2 == 0:
            raise ValueError(f"kernel_size must be odd, got {kernel_size}")
        self.conv = _conv(spatial_dims)(2, 1, kernel_size, padding=kernel_size // 2, bias=False)

    def weights(self, x: torch.Tensor) -> torch.Tensor:
        pooled = torch.cat([x.mean(dim=1, keepdim=True), x.amax(dim=1, keepdim=True)], dim=1)
        return torch.sigmoid(self.conv(pooled))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.weights(x)


class CBAM(nn.Module):
    """Channel attention then spatial attention (Woo et al. 2018), for ``spatial_dims`` 2 or 3.

    Args:
        channels: input (and output) channels.
        reduction: channel MLP reduction r; hidden width is ``max(channels // r, min_hidden)``.
            sc-unext uses ``reduction=4, min_hidden=2``; cmu-net and ma-dtnet use the default 16 / 1.
        min_hidden: lower bound on the hidden width.
        kernel_size: spatial-attention kernel (7 in all three cards).
        spatial_dims: 2 for (B, C, H, W) input, 3 for (B, C, D, H, W).
    """

    def __init__(
        self,
        channels: int,
        reduction: int = 16,
        min_hidden: int = 1,
        kernel_size: int = 7,
        spatial_dims: int = 2,
    ):
        super().__init__()
        self.channel = ChannelAttention(channels, reduction, min_hidden, spatial_dims)
        self.spatial = SpatialAttention(kernel_size, spatial_dims)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.spatial(self.channel(x))
