"""The ph-mci two-branch classifier of a persistence-distance ("PR") matrix (card: shared/papers/ph-mci.md).

Input: ``B × 1 × n × n`` (an n-ROI network's matrix of 1-Wasserstein distances, z-scored per matrix).

- 2-D branch: Conv(1→16) → Conv(16→32) → Conv(32→64) → MaxPool 2 → Conv(64→128) → Conv(128→256), every conv 3×3
  with padding 1 and ReLU, then global average pooling → 256.
- 1-D branch: flatten (n²) → Linear(n²→256), no activation (as in the released code).
- Fusion: concat (512) → head. ``head="paper"``: FC128 → FC64 → FC32, each ReLU + Dropout, → Linear(32→classes);
  ``head="code"`` (the released notebook): FC128 → Dropout → Linear(128→classes), no ReLU.

For DMN (n = 34) and the paper head: 392,320 conv + 296,192 linear-branch + 76,066 head = 764,578 parameters.
"""

from __future__ import annotations

import torch
from torch import nn


def _conv(cin: int, cout: int) -> list[nn.Module]:
    return [nn.Conv2d(cin, cout, 3, padding=1), nn.ReLU(inplace=True)]


class PRNet(nn.Module):
    def __init__(self, n: int, num_classes: int = 2, head: str = "paper", dropout: float = 0.2):
        super().__init__()
        if head not in ("paper", "code"):
            raise ValueError(f"head must be 'paper' or 'code', not {head!r}")
        self.n = n
        self.conv = nn.Sequential(*_conv(1, 16), *_conv(16, 32), *_conv(32, 64), nn.MaxPool2d(2),
                                  *_conv(64, 128), *_conv(128, 256), nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.linear = nn.Sequential(nn.Flatten(), nn.Linear(n * n, 256))
        if head == "paper":
            layers, width = [], 512
            for w in (128, 64, 32):
                layers += [nn.Linear(width, w), nn.ReLU(inplace=True), nn.Dropout(dropout)]
                width = w
            self.head = nn.Sequential(*layers, nn.Linear(width, num_classes))
        else:
            self.head = nn.Sequential(nn.Linear(512, 128), nn.Dropout(dropout), nn.Linear(128, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() == 3:
            x = x.unsqueeze(1)
        return self.head(torch.cat([self.conv(x), self.linear(x)], dim=1))
