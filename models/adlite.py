"""AD-Lite Net (ad-lite card, "Method"): a 0.23 M-parameter CNN with a parallel concatenation block (pcb).

Layout NCHW, input 3×224×224 (any size divisible by 32). "Conv" = Conv2d, padding "same", bias, ReLU.
BatchNorm uses eps 1e-3 and momentum 0.01 to match Keras (``bn_momentum``: a short run needs more, see
the fixture manifests). The pcb branch applies the Tx-layer to c1 (the code's
``-0.8·x`` by default; ``tx="paper"`` gives Eq. 5's ``0.8·(255 - x)``), then Conv→BN→MP twice, while the main
branch uses Conv→MP→BN, as in the authors' code. The two "DWSC" layers are depthwise only (no pointwise 1×1),
per Eq. 3 and the code. Parameters: 232,138 for 4 classes, 231,945 for 3.
"""

from __future__ import annotations

import torch
from torch import nn


def _conv(cin: int, cout: int, k: int, groups: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, k, padding="same", groups=groups), nn.ReLU(inplace=True))


class TxLayer(nn.Module):
    """Sign inversion and scaling of c1: ``-m·x`` (code) or ``m·(255 - x)`` (paper Eq. 5)."""

    def __init__(self, m: float = 0.8, mode: str = "code"):
        super().__init__()
        if mode not in ("code", "paper"):
            raise ValueError(f"tx must be 'code' or 'paper', not {mode!r}")
        self.m, self.mode = m, mode

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return -self.m * x if self.mode == "code" else self.m * (255.0 - x)


class AdLiteNet(nn.Module):
    def __init__(self, num_classes: int = 4, tx: str = "code", pcb: bool = True, in_channels: int = 3,
                 bn_momentum: float = 0.01):
        super().__init__()
        mp = nn.MaxPool2d(2, 2)

        def _bn(c: int) -> nn.BatchNorm2d:
            return nn.BatchNorm2d(c, eps=1e-3, momentum=bn_momentum)

        self.stem = nn.Sequential(  # -> c1: 64 × H/8 × W/8
            _bn(in_channels), _conv(in_channels, 16, 5), mp, _bn(16),
            _conv(16, 32, 3), mp, _bn(32),
            _conv(32, 64, 3), mp, _bn(64),
        )
        self.main = nn.Sequential(  # -> c2: 128 × H/32 × W/32
            _conv(64, 96, 3), mp, _bn(96),
            _conv(96, 128, 3), mp, _bn(128),
            _conv(128, 128, 3, groups=128), _bn(128),
            _conv(128, 128, 3, groups=128), _bn(128),
        )
        self.pcb = nn.Sequential(  # -> p8: 64 × H/32 × W/32
            TxLayer(0.8, tx),
            _conv(64, 32, 3), _bn(32), mp,
            _conv(32, 64, 3), _bn(64), mp,
        ) if pcb else None
        self.head = nn.Linear(128 + (64 if pcb else 0), num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Raw 0–255 pixel values in (the first BatchNorm normalises them); logits out (softmax in the loss)."""
        c1 = self.stem(x)
        feats = self.main(c1)
        if self.pcb is not None:
            feats = torch.cat([feats, self.pcb(c1)], dim=1)
        return self.head(feats.mean(dim=(2, 3)))
