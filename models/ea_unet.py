"""EA-U-Net: the enhanced attention U-Net of the pulmonary artery/vein paper (card pulmonary-av, Stage 2).

Two encoders of the same structure read the CT (``x``) and the binary vessel prior (``p``); the decoder's attention
gates take the CT skip ``x_l`` (key/value), the up-sampled decoder state ``g_l`` (query) and the prior branch's
feature ``r_l`` (an extra key):

    q = W_x x + W_g g + W_r r          (each a 1×1×1 conv to F_int = C_l / 2 with BatchNorm)
    a = sigmoid(BN(ψ(ReLU(q))))        (ψ: 1×1×1 conv F_int → 1, or → C_l with ``gate="per-channel"``)
    d_l = Block(concat[a ⊙ x, g])

Block = 2 × [Conv3d 3³, InstanceNorm, ReLU]; max-pooling 2 between levels; the bottleneck is the CT branch's last
level; g = Conv 3³ of the trilinearly up-sampled deeper state (resized to the skip's size, so odd sizes such as the
paper's 76 slices work without padding); head: 1×1×1 conv to ``out_channels`` logits. The prior branch has one level
fewer than the CT branch: its deepest level would feed no gate (the card's "bottleneck is level 4 of the CT branch").
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def block(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv3d(cin, cout, 3, padding=1), nn.InstanceNorm3d(cout, affine=True),
                         nn.ReLU(inplace=True), nn.Conv3d(cout, cout, 3, padding=1),
                         nn.InstanceNorm3d(cout, affine=True), nn.ReLU(inplace=True))


class Encoder(nn.Module):
    def __init__(self, cin: int, channels: tuple[int, ...]):
        super().__init__()
        self.levels = nn.ModuleList(block(a, b) for a, b in zip((cin, *channels[:-1]), channels, strict=True))

    def forward(self, x) -> list[torch.Tensor]:
        feats = []
        for i, lvl in enumerate(self.levels):
            x = lvl(x if i == 0 else F.max_pool3d(x, 2))
            feats.append(x)
        return feats


class EnhancedGate(nn.Module):
    """The enhanced attention gate: CT skip x, decoder query g and prior feature r → gated skip a ⊙ x."""

    def __init__(self, channels: int, gate: str = "scalar"):
        super().__init__()
        f = max(1, channels // 2)

        def proj():
            return nn.Sequential(nn.Conv3d(channels, f, 1), nn.BatchNorm3d(f))

        self.w_x, self.w_g, self.w_r = proj(), proj(), proj()
        out = channels if gate == "per-channel" else 1
        self.psi = nn.Sequential(nn.Conv3d(f, out, 1), nn.BatchNorm3d(out))
        self.last_attention: torch.Tensor | None = None

    def forward(self, x, g, r):
        q = self.w_x(x) + self.w_g(g) + self.w_r(r)
        a = torch.sigmoid(self.psi(F.relu(q)))
        self.last_attention = a.detach()
        return a * x


class EAUNet(nn.Module):
    def __init__(self, in_channels: int = 1, prior_channels: int = 1, out_channels: int = 3,
                 channels: tuple[int, ...] = (32, 64, 128, 256), gate: str = "scalar"):
        super().__init__()
        if gate not in ("scalar", "per-channel"):
            raise ValueError(f"gate must be 'scalar' or 'per-channel', not {gate!r}")
        channels = tuple(channels)
        if len(channels) < 2:
            raise ValueError("EA-U-Net needs at least two levels")
        self.channels, self.in_channels = channels, in_channels
        self.enc_ct = Encoder(in_channels, channels)
        self.enc_prior = Encoder(prior_channels, channels[:-1])
        self.up = nn.ModuleList(nn.Conv3d(channels[i + 1], channels[i], 3, padding=1)
                                for i in range(len(channels) - 1))
        self.gates = nn.ModuleList(EnhancedGate(c, gate) for c in channels[:-1])
        self.dec = nn.ModuleList(block(2 * c, c) for c in channels[:-1])
        self.head = nn.Conv3d(channels[0], out_channels, 1)

    def forward(self, x, p=None):
        """``x``: (B, in_channels + prior_channels, …) with the prior last when ``p`` is None, else the CT alone."""
        if p is None:
            x, p = x[:, :self.in_channels], x[:, self.in_channels:]
        xs, rs = self.enc_ct(x), self.enc_prior(p)
        d = xs[-1]
        for lvl in reversed(range(len(self.channels) - 1)):
            skip = xs[lvl]
            g = self.up[lvl](F.interpolate(d, size=skip.shape[2:], mode="trilinear", align_corners=False))
            d = self.dec[lvl](torch.cat([self.gates[lvl](skip, g, rs[lvl]), g], 1))
        return self.head(d)
