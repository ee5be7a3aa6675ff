"""The classic 2D U-Net (Ronneberger et al. 2015) with padded convolutions and batch norm: four 2×2 max-pool
downsamplings and four 2×2 transposed-convolution upsamplings, ``base`` → 16·``base`` channels (64 → 1024), each
level two [3×3 conv → BatchNorm → ReLU], optional dropout at the bottleneck, and a 1×1 convolution to
``out_channels`` logits. Input sides must be multiples of 16."""

from __future__ import annotations

import torch
from torch import nn


def double_conv(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True),
                         nn.Conv2d(cout, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


class ClassicUNet(nn.Module):
    def __init__(self, in_channels: int = 1, out_channels: int = 1, base: int = 64, dropout: float = 0.1):
        super().__init__()
        ch = [base * 2**i for i in range(5)]  # 64, 128, 256, 512, 1024
        self.inc = double_conv(in_channels, ch[0])
        self.downs = nn.ModuleList(double_conv(ch[i], ch[i + 1]) for i in range(4))
        self.dropout = nn.Dropout2d(dropout) if dropout > 0 else nn.Identity()
        self.ups = nn.ModuleList(nn.ConvTranspose2d(ch[i + 1], ch[i], 2, stride=2) for i in reversed(range(4)))
        self.up_convs = nn.ModuleList(double_conv(2 * ch[i], ch[i]) for i in reversed(range(4)))
        self.out = nn.Conv2d(ch[0], out_channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skips = [self.inc(x)]
        for down in self.downs:
            skips.append(down(nn.functional.max_pool2d(skips[-1], 2)))
        y = self.dropout(skips.pop())
        for up, conv in zip(self.ups, self.up_convs, strict=True):
            y = conv(torch.cat([skips.pop(), up(y)], dim=1))
        return self.out(y)
