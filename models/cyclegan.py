"""CycleGAN networks (Zhu et al. 2017; junyanz/pytorch-CycleGAN-and-pix2pix): the ResNet generator, the 70×70
PatchGAN discriminator and the 50-image history pool.

- ``ResnetGenerator``: c7s1-ngf → d(2·ngf) → d(4·ngf) → n residual blocks of 4·ngf → u(2·ngf) → u(ngf) → c7s1-out →
  tanh, with reflection padding, InstanceNorm (no affine) and ReLU; convolutions keep their bias (as the reference
  does with InstanceNorm). At ngf 64 and 9 blocks it has 11,378,179 parameters, the reference's count.
- ``PatchDiscriminator``: C64 (no norm) → C128 → C256 → C512 (stride 1) → 1-channel map, 4×4 kernels, LeakyReLU 0.2,
  InstanceNorm: 2,764,737 parameters at ndf 64 (70×70 receptive field).
- ``ImagePool``: the discriminators see a mix of current and up to ``size`` earlier fakes (each query swaps with
  probability 0.5 once the pool is full). The pool lives in memory only: a resumed run starts it empty.
"""

from __future__ import annotations

import torch
from torch import nn


class ResnetBlock(nn.Module):
    def __init__(self, dim: int):
        super().__init__()
        self.block = nn.Sequential(
            nn.ReflectionPad2d(1), nn.Conv2d(dim, dim, 3), nn.InstanceNorm2d(dim), nn.ReLU(True),
            nn.ReflectionPad2d(1), nn.Conv2d(dim, dim, 3), nn.InstanceNorm2d(dim))

    def forward(self, x):
        return x + self.block(x)


class ResnetGenerator(nn.Module):
    """Image in [−1, 1] → image in [−1, 1] of the same size (divisible by 4)."""

    def __init__(self, in_ch: int = 3, out_ch: int = 3, ngf: int = 64, n_blocks: int = 9):
        super().__init__()
        layers = [nn.ReflectionPad2d(3), nn.Conv2d(in_ch, ngf, 7), nn.InstanceNorm2d(ngf), nn.ReLU(True)]
        for mult in (1, 2):  # two stride-2 downsamplings
            layers += [nn.Conv2d(ngf * mult, ngf * mult * 2, 3, stride=2, padding=1), nn.InstanceNorm2d(ngf * mult * 2),
                       nn.ReLU(True)]
        layers += [ResnetBlock(ngf * 4) for _ in range(n_blocks)]
        for mult in (4, 2):  # two stride-2 upsamplings
            layers += [nn.ConvTranspose2d(ngf * mult, ngf * mult // 2, 3, stride=2, padding=1, output_padding=1),
                       nn.InstanceNorm2d(ngf * mult // 2), nn.ReLU(True)]
        layers += [nn.ReflectionPad2d(3), nn.Conv2d(ngf, out_ch, 7), nn.Tanh()]
        self.model = nn.Sequential(*layers)

    def forward(self, x):
        return self.model(x)


class PatchDiscriminator(nn.Module):
    """70×70 PatchGAN: image → a map of real/fake logits."""

    def __init__(self, in_ch: int = 3, ndf: int = 64, n_layers: int = 3):
        super().__init__()
        layers = [nn.Conv2d(in_ch, ndf, 4, stride=2, padding=1), nn.LeakyReLU(0.2, True)]
        mult = 1
        for n in range(1, n_layers + 1):
            prev, mult = mult, min(2**n, 8)
            stride = 2 if n < n_layers else 1
            layers += [nn.Conv2d(ndf * prev, ndf * mult, 4, stride=stride, padding=1), nn.InstanceNorm2d(ndf * mult),
                       nn.LeakyReLU(0.2, True)]
        layers += [nn.Conv2d(ndf * mult, 1, 4, stride=1, padding=1)]
        self.model = nn.Sequential(*layers)

    def forward(self, x):
        return self.model(x)


class ImagePool:
    """History of generated images (Shrivastava et al. 2017) as CycleGAN uses it."""

    def __init__(self, size: int = 50, generator: torch.Generator | None = None):
        self.size, self.images, self.gen = size, [], generator

    def query(self, images: torch.Tensor) -> torch.Tensor:
        if self.size == 0:
            return images
        out = []
        for img in images.detach():
            img = img[None]
            if len(self.images) < self.size:
                self.images.append(img)
                out.append(img)
            elif torch.rand(1, generator=self.gen).item() > 0.5:
                i = int(torch.randint(0, self.size, (1,), generator=self.gen))
                out.append(self.images[i].clone())
                self.images[i] = img
            else:
                out.append(img)
        return torch.cat(out)


class CycleGAN(nn.Module):
    """The four networks of a CycleGAN between domains M and B: ``g_m`` (M → B), ``g_b`` (B → M), ``d_b`` (real
    benign vs g_m(m)) and ``d_m`` (real malignant vs g_b(b))."""

    def __init__(self, ngf: int = 64, ndf: int = 64, n_blocks: int = 9, channels: int = 3):
        super().__init__()
        self.g_m = ResnetGenerator(channels, channels, ngf, n_blocks)
        self.g_b = ResnetGenerator(channels, channels, ngf, n_blocks)
        self.d_b = PatchDiscriminator(channels, ndf)
        self.d_m = PatchDiscriminator(channels, ndf)


def init_weights(net: nn.Module, gain: float = 0.02, generator: torch.Generator | None = None) -> nn.Module:
    """CycleGAN's ``normal`` init: conv weights N(0, 0.02), biases 0."""
    for m in net.modules():
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
            with torch.no_grad():
                m.weight.normal_(0.0, gain, generator=generator)
                if m.bias is not None:
                    m.bias.zero_()
    return net
