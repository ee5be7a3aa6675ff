"""Xception (Chollet 2017) on plain torch blocks, laid out as Keras' ``applications.Xception``.

Entry flow: Conv 3→32 k3 s2 (valid) → BN → ReLU → Conv 32→64 k3 (valid) → BN → ReLU, then three residual blocks
(128, 256, 728 channels: [ReLU] SepConv → BN → ReLU → SepConv → BN → MaxPool 3/2, plus a Conv 1×1 s2 + BN
shortcut; the first block has no leading ReLU). Middle flow: eight blocks of three (ReLU → SepConv 728 → BN) with
identity shortcuts. Exit flow: ReLU → SepConv 728 → BN → ReLU → SepConv 1024 → BN → MaxPool 3/2 with a Conv 1×1
s2 shortcut, then SepConv 1536 → BN → ReLU → SepConv 2048 → BN → ReLU → global average pool → ``fc`` (Linear
2048→C). A SepConv is a depthwise k3 conv followed by a pointwise 1×1, both without bias (Keras'
``SeparableConv2D(use_bias=False)``). Keras' "same" max-pooling pads right/bottom only; here padding 1 on both
sides gives the same output size. BN: eps 1e-3, momentum 0.01 (Keras' defaults).

Parameters (``sum(p.numel())``, equal to Keras' *trainable* count): 22,855,952 for 1000 classes, 20,815,148 for
4 (the ad-lite paper's 208.15 lakh: ``include_top=False`` + pooling + Dense(4)).
"""

from __future__ import annotations

import torch
from torch import nn


def _bn(c: int) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(c, eps=1e-3, momentum=0.01)


class SeparableConv2d(nn.Module):
    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.depthwise = nn.Conv2d(cin, cin, 3, padding=1, groups=cin, bias=False)
        self.pointwise = nn.Conv2d(cin, cout, 1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pointwise(self.depthwise(x))


class Block(nn.Module):
    """``reps`` × ([ReLU] SepConv BN) with widths ``widths``; stride 2 adds a MaxPool 3/2 and a Conv 1×1 s2 + BN
    shortcut, stride 1 an identity shortcut."""

    def __init__(self, cin: int, widths: tuple[int, ...], stride: int, first_relu: bool = True):
        super().__init__()
        layers: list[nn.Module] = []
        c = cin
        for i, w in enumerate(widths):
            if i > 0 or first_relu:
                layers.append(nn.ReLU(inplace=False))
            layers += [SeparableConv2d(c, w), _bn(w)]
            c = w
        if stride == 2:
            layers.append(nn.MaxPool2d(3, 2, padding=1))
            self.skip = nn.Sequential(nn.Conv2d(cin, c, 1, stride=2, bias=False), _bn(c))
        else:
            self.skip = None
        self.rep = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.rep(x) + (x if self.skip is None else self.skip(x))


class Xception(nn.Module):
    def __init__(self, num_classes: int = 1000, in_channels: int = 3):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(in_channels, 32, 3, stride=2, bias=False), _bn(32), nn.ReLU(inplace=True),
                                  nn.Conv2d(32, 64, 3, bias=False), _bn(64), nn.ReLU(inplace=True))
        self.entry = nn.Sequential(Block(64, (128, 128), 2, first_relu=False), Block(128, (256, 256), 2),
                                   Block(256, (728, 728), 2))
        self.middle = nn.Sequential(*[Block(728, (728, 728, 728), 1) for _ in range(8)])
        self.exit = nn.Sequential(Block(728, (728, 1024), 2), SeparableConv2d(1024, 1536), _bn(1536),
                                  nn.ReLU(inplace=True), SeparableConv2d(1536, 2048), _bn(2048), nn.ReLU(inplace=True))
        self.fc = nn.Linear(2048, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.exit(self.middle(self.entry(self.stem(x)))).mean(dim=(2, 3)))
