"""MCGAN's stage-2 generator and perceptual network (Ouyang et al.; DropInOcean/MCGAN ``models/I2I.py``).

- ``AttentionUNet``: encoder blocks [conv3×3-BN-ReLU]×2 at ``channels`` (64 … 1024) with 2×2 max-pooling between;
  decoder stages upsample ×2 + conv3×3-BN-ReLU, an attention gate on the encoder skip of the same size, concat,
  conv block; a final 1×1 conv to ``out_ch`` (no activation). ``forward(x, return_attention=True)`` also returns
  the gates' α maps (coarsest first); ``attention_maps`` picks the finest (Fig. 6) and the mean of all.
- ``AttentionGate`` (Eq. 4–6): q = ReLU(BN(W_x x) + BN(W_g g)), 1×1 convs to F_int = F_l / 2 channels;
  α = σ(BN(ψ(q))), ψ a 1×1 conv to one channel; x̂ = α·x.
- ``VGG16Features``: ImageNet VGG16's ``features`` up to relu2_2 (layers 0–8), torchvision's key names
  (``features.0.weight`` …), frozen; grayscale input repeated to 3 channels and ImageNet-normalised from [−1, 1].
The DA stage's ResNet generator and PatchGAN are CycleGAN's (``models.cyclegan``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def conv_block(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1), nn.BatchNorm2d(cout), nn.ReLU(inplace=True),
                         nn.Conv2d(cout, cout, 3, padding=1), nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


class AttentionGate(nn.Module):
    def __init__(self, f_g: int, f_l: int, f_int: int):
        super().__init__()
        self.w_g = nn.Sequential(nn.Conv2d(f_g, f_int, 1), nn.BatchNorm2d(f_int))
        self.w_x = nn.Sequential(nn.Conv2d(f_l, f_int, 1), nn.BatchNorm2d(f_int))
        self.psi = nn.Sequential(nn.Conv2d(f_int, 1, 1), nn.BatchNorm2d(1), nn.Sigmoid())
        self.relu = nn.ReLU(inplace=True)

    def forward(self, g: torch.Tensor, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        alpha = self.psi(self.relu(self.w_g(g) + self.w_x(x)))
        return x * alpha, alpha


class AttentionUNet(nn.Module):
    """Image (B, in_ch, H, W), H and W divisible by 2^(levels−1) → (B, out_ch, H, W)."""

    def __init__(self, in_ch: int = 1, out_ch: int = 1, channels: tuple[int, ...] = (64, 128, 256, 512, 1024)):
        super().__init__()
        ch = list(channels)
        self.pool = nn.MaxPool2d(2, 2)
        self.enc = nn.ModuleList([conv_block(in_ch, ch[0]),
                                  *[conv_block(a, b) for a, b in zip(ch, ch[1:], strict=False)]])
        self.up = nn.ModuleList()
        self.gates = nn.ModuleList()
        self.dec = nn.ModuleList()
        for hi, lo in zip(reversed(ch[1:]), reversed(ch[:-1]), strict=True):
            self.up.append(nn.Sequential(nn.Upsample(scale_factor=2), nn.Conv2d(hi, lo, 3, padding=1),
                                         nn.BatchNorm2d(lo), nn.ReLU(inplace=True)))
            self.gates.append(AttentionGate(lo, lo, lo // 2))
            self.dec.append(conv_block(2 * lo, lo))
        self.out = nn.Conv2d(ch[0], out_ch, 1)

    def forward(self, x: torch.Tensor, return_attention: bool = False):
        skips = []
        for i, block in enumerate(self.enc):
            x = block(x if i == 0 else self.pool(x))
            skips.append(x)
        d, alphas = skips.pop(), []
        for up, gate, dec in zip(self.up, self.gates, self.dec, strict=True):
            g = up(d)
            s, alpha = gate(g, skips.pop())
            alphas.append(alpha)
            d = dec(torch.cat([s, g], 1))
        y = self.out(d)
        return (y, alphas) if return_attention else y


def attention_maps(alphas: list[torch.Tensor], size: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
    """The gates' α (coarsest first, each (B, 1, h, w)) → (the finest gate's α, the mean of all gates upsampled
    nearest to ``size``), each (B, *size). The finest gate is the map the paper shows: the released code's
    ``AttU_Net`` returns only ``Att2``'s α (on the input grid) as its ``attention_map`` (Fig. 6)."""
    mean = torch.stack([F.interpolate(a, size=tuple(size), mode="nearest")[:, 0] for a in alphas]).mean(0)
    return alphas[-1][:, 0], mean


class VGG16Features(nn.Module):
    """VGG16 ``features[0:9]`` (conv1_1 … relu2_2), frozen; input one channel in [−1, 1]."""

    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(3, 64, 3, padding=1), nn.ReLU(), nn.Conv2d(64, 64, 3, padding=1),
                                      nn.ReLU(), nn.MaxPool2d(2, 2), nn.Conv2d(64, 128, 3, padding=1), nn.ReLU(),
                                      nn.Conv2d(128, 128, 3, padding=1), nn.ReLU())
        self.register_buffer("mean", torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1), persistent=False)
        self.requires_grad_(False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = ((x + 1) / 2).repeat(1, 3, 1, 1)
        return self.features((x - self.mean) / self.std)
