"""CDCT's concept VAE and the VGG19 feature stack of its perceptual loss (counterfactual-ldm card, Step 2).

* ``ConceptVAE``: an encoder of ``len(channels)`` ResNet-style downsampling blocks (each two residual 3×3 units
  with GroupNorm + SiLU, then a stride-2 3×3 conv), a final conv, flatten and two linear heads (μ, log σ²) of size
  ``latent``; the decoder mirrors it (linear → 512×4×4 → upsampling blocks → 3×3 conv → sigmoid). The card's
  default: 256×256 input, channels (64, 128, 256, 256, 512, 512) → 4×4×512, latent 128.
* ``VGG19Features``: the 16 conv + ReLU layers of VGG19 with torchvision's ``features.N`` indices (so a torchvision
  state dict loads), returning every ReLU output for the perceptual loss.
"""

from __future__ import annotations

import torch
from torch import nn


def _gn(c: int) -> nn.GroupNorm:
    return nn.GroupNorm(min(32, c // 4) if c >= 8 else 1, c)


class ResUnit(nn.Module):
    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.body = nn.Sequential(_gn(cin), nn.SiLU(), nn.Conv2d(cin, cout, 3, padding=1),
                                  _gn(cout), nn.SiLU(), nn.Conv2d(cout, cout, 3, padding=1))
        self.skip = nn.Identity() if cin == cout else nn.Conv2d(cin, cout, 1)

    def forward(self, x):
        return self.skip(x) + self.body(x)


class ConceptVAE(nn.Module):
    def __init__(self, size: int = 256, channels=(64, 128, 256, 256, 512, 512), latent: int = 128):
        super().__init__()
        channels = tuple(channels)
        self.size, self.latent, self.channels = size, latent, channels
        self.bottom = size // 2 ** len(channels)
        if self.bottom < 1 or size % 2 ** len(channels):
            raise ValueError(f"input {size} cannot be halved {len(channels)} times")
        enc, cin = [nn.Conv2d(3, channels[0], 3, padding=1)], channels[0]
        for c in channels:
            enc += [ResUnit(cin, c), ResUnit(c, c), nn.Conv2d(c, c, 3, stride=2, padding=1)]
            cin = c
        enc += [_gn(cin), nn.SiLU(), nn.Conv2d(cin, cin, 3, padding=1), nn.Flatten()]
        self.encoder = nn.Sequential(*enc)
        flat = cin * self.bottom ** 2
        self.mu, self.logvar = nn.Linear(flat, latent), nn.Linear(flat, latent)
        self.fc = nn.Linear(latent, flat)
        dec, rev = [], channels[::-1]
        for i, c in enumerate(rev):
            nxt = rev[i + 1] if i + 1 < len(rev) else rev[-1]
            dec += [nn.Upsample(scale_factor=2, mode="nearest"), nn.Conv2d(c, c, 3, padding=1), ResUnit(c, nxt),
                    ResUnit(nxt, nxt)]
        dec += [_gn(rev[-1]), nn.SiLU(), nn.Conv2d(rev[-1], 3, 3, padding=1), nn.Sigmoid()]
        self.decoder = nn.Sequential(*dec)

    def encode(self, x):
        h = self.encoder(x)
        return self.mu(h), self.logvar(h)

    def decode(self, z):
        return self.decoder(self.fc(z).view(-1, self.channels[-1], self.bottom, self.bottom))

    def forward(self, x):
        mu, logvar = self.encode(x)
        z = mu + torch.randn_like(mu) * torch.exp(0.5 * logvar) if self.training else mu
        return self.decode(z), mu, logvar


VGG19_CFG = (64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M", 512, 512, 512, 512, "M", 512, 512, 512, 512, "M")


class VGG19Features(nn.Module):
    """torchvision ``vgg19().features`` layout; ``forward`` returns the output of every ReLU."""

    def __init__(self):
        super().__init__()
        layers, cin = [], 3
        for v in VGG19_CFG:
            if v == "M":
                layers.append(nn.MaxPool2d(2, 2))
            else:
                layers += [nn.Conv2d(cin, v, 3, padding=1), nn.ReLU(inplace=False)]
                cin = v
        self.features = nn.Sequential(*layers)
        self.register_buffer("mean", torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1))

    def forward(self, x):  # x in [0, 1]
        h, outs = (x - self.mean) / self.std, []
        for layer in self.features:
            h = layer(h)
            if isinstance(layer, nn.ReLU):
                outs.append(h)
        return outs
