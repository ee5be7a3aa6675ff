"""Enhanced 3D Dense U-Net of "Two Independent Teachers are Better Role Model" (dense-unet-teachers card).

A residual 3D U-Net with summation skips, pre-activation "BN-R6" (BatchNorm3d then ReLU6), a multi-head
self-attention ("global aggregation") block at the bottom and, optionally, attention up-sampling blocks in the
decoder (the paper's version; the released code uses plain transposed convolutions there).

Shapes: input (B, C_in, D, H, W) with D, H, W divisible by 2**(depth-1); output (B, num_classes, D, H, W) logits.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import nn


class BNR6(nn.Sequential):
    """BatchNorm3d then ReLU6 (pre-activation)."""

    def __init__(self, c: int):
        super().__init__(nn.BatchNorm3d(c), nn.ReLU6())


def conv3(c_in: int, c_out: int, stride: int = 1) -> nn.Conv3d:
    return nn.Conv3d(c_in, c_out, 3, stride=stride, padding=1, bias=False)


def deconv3(c_in: int, c_out: int) -> nn.ConvTranspose3d:
    """3×3×3 transposed convolution, stride 2: the grid doubles."""
    return nn.ConvTranspose3d(c_in, c_out, 3, stride=2, padding=1, output_padding=1, bias=False)


class ResBlock(nn.Module):
    """y = BN-R6(x); short = 1×1×1 conv stride s of y when projecting, else x;
    out = conv3(BN-R6(conv3_s(y))) + short."""

    def __init__(self, c_in: int, c_out: int, stride: int = 1, project: bool | None = None):
        super().__init__()
        project = (c_in != c_out or stride != 1) if project is None else project
        self.pre = BNR6(c_in)
        self.proj = nn.Conv3d(c_in, c_out, 1, stride=stride, bias=False) if project else None
        self.conv1 = conv3(c_in, c_out, stride)
        self.mid = BNR6(c_out)
        self.conv2 = conv3(c_out, c_out)

    def forward(self, x):
        y = self.pre(x)
        short = self.proj(y) if self.proj is not None else x
        return self.conv2(self.mid(self.conv1(y))) + short


class MHSA3d(nn.Module):
    """Multi-head self-attention over a 3D grid (Eq. 1–3). ``kind="same"``: Q from a 1×1×1 conv; ``"up"``: Q from a
    3×3×3 stride-2 transposed conv, so the output grid doubles while keys and values stay on the input grid. All
    projections have a bias; dropout on the attention matrix during training."""

    def __init__(self, c_in: int, c_k: int, c_v: int, c_out: int, heads: int, kind: str = "same",
                 attn_dropout: float = 0.5):
        super().__init__()
        if c_k % heads or c_v % heads:
            raise ValueError(f"key/value channels ({c_k}, {c_v}) must divide into {heads} heads")
        self.heads, self.kind = heads, kind
        self.q = (nn.Conv3d(c_in, c_k, 1) if kind == "same"
                  else nn.ConvTranspose3d(c_in, c_k, 3, stride=2, padding=1, output_padding=1))
        self.k = nn.Conv3d(c_in, c_k, 1)
        self.v = nn.Conv3d(c_in, c_v, 1)
        self.out = nn.Conv3d(c_v, c_out, 1)
        self.attn_dropout = attn_dropout

    def forward(self, x):
        q, k, v = self.q(x), self.k(x), self.v(x)
        b, _, *grid = q.shape
        h = self.heads

        def tokens(t):  # (B, C, D, H, W) -> (B, heads, N, C/heads)
            return t.reshape(b, h, t.shape[1] // h, -1).transpose(2, 3)

        # softmax(Q Kᵀ / sqrt(C_K/h)) V with dropout on the attention matrix, by PyTorch's fused kernel (the
        # explicit product is 4096 × 512 per head at the decoder's top level for a 32³ patch)
        o = F.scaled_dot_product_attention(tokens(q), tokens(k), tokens(v),
                                           dropout_p=self.attn_dropout if self.training else 0.0)
        o = o.transpose(2, 3).reshape(b, -1, *grid)
        return self.out(o)


class UpBlock(nn.Module):
    """One decoder level: up-sample x (channels c_in) to the skip's grid and channels c, add the skip, then a residual
    block. ``attention``: y = BN-R6(x); u = MHSA_UP(y) + deconv(y) (the paper); else u = deconv(x) (released code)."""

    def __init__(self, c_in: int, c: int, attention: bool = True, attn_dropout: float = 0.5):
        super().__init__()
        self.attention = attention
        self.pre = BNR6(c_in) if attention else None
        self.up = deconv3(c_in, c)
        self.attn = MHSA3d(c_in, c, c, c, heads=1, kind="up", attn_dropout=attn_dropout) if attention else None
        self.res = ResBlock(c, c, 1)

    def forward(self, x, skip):
        if self.attention:
            y = self.pre(x)
            u = self.attn(y) + self.up(y)
        else:
            u = self.up(x)
        return self.res(u + skip)


class DenseUNet3D(nn.Module):
    """The card's "3D-DenseUNet": input conv → residual encoder (depth levels, channels F·2^i, first level stride 1
    with a 1×1×1 projection) → bottom MHSA (2 heads, "SAME") with a residual add → decoder of up-blocks with
    summation skips → BN-R6, dropout, 1×1×1 conv with bias. He (Kaiming) initialisation."""

    def __init__(self, in_channels: int = 1, num_classes: int = 4, base: int = 32, depth: int = 3, heads: int = 2,
                 up_attention: bool = True, dropout: float = 0.5, attn_dropout: float = 0.5):
        super().__init__()
        if depth < 2:
            raise ValueError("depth must be at least 2")
        widths = [base * 2**i for i in range(depth)]
        self.depth = depth
        self.input_conv = conv3(in_channels, base)
        self.enc = nn.ModuleList([ResBlock(base, base, 1, project=True)]
                                 + [ResBlock(widths[i - 1], widths[i], 2) for i in range(1, depth)])
        self.bottom_pre = BNR6(widths[-1])
        self.bottom = MHSA3d(widths[-1], widths[-1], widths[-1], widths[-1], heads, "same", attn_dropout)
        self.dec = nn.ModuleList([UpBlock(widths[i], widths[i - 1], up_attention, attn_dropout)
                                  for i in range(depth - 1, 0, -1)])
        self.head = nn.Sequential(BNR6(base), nn.Dropout(dropout), nn.Conv3d(base, num_classes, 1))
        for mod in self.modules():
            if isinstance(mod, (nn.Conv3d, nn.ConvTranspose3d)):
                nn.init.kaiming_normal_(mod.weight, nonlinearity="relu")
                if mod.bias is not None:
                    nn.init.zeros_(mod.bias)

    @property
    def first_conv(self) -> str:
        """The name of the first convolution's kernel in ``state_dict`` (its input channels are the modalities)."""
        return "input_conv.weight"

    def forward(self, x):
        m = 2 ** (self.depth - 1)
        if any(s % m for s in x.shape[2:]):
            raise ValueError(f"spatial size {tuple(x.shape[2:])} must be divisible by {m}")
        h = self.input_conv(x)
        skips = []
        for block in self.enc:
            h = block(h)
            skips.append(h)
        h = self.bottom(self.bottom_pre(h)) + h
        for block, skip in zip(self.dec, reversed(skips[:-1]), strict=True):
            h = block(h, skip)
        return self.head(h)


def dense_unet3d(**kw) -> DenseUNet3D:
    return DenseUNet3D(**kw)


__all__ = ["DenseUNet3D", "MHSA3d", "ResBlock", "UpBlock", "dense_unet3d"]
