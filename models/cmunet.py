"""CMU-Net (Attention Seekers U-Net with Mamba) and its ablation variants, 2D.

Source: ``cmu-net.md``, section "Method".

An nnU-Net "PlainConvUNet"-style 2D U-Net. Encoder stage k (channels C_k, default 32, 64, 128, 256, 512):

    2 x [3x3 conv (pad 1) -> InstanceNorm2d(affine) -> LeakyReLU(0.01)]  ->  MambaLayer(C_k)  ->  CBAM(C_k)

with a 2x2 max-pool (stride 2) between stages (the paper's max-pool, not nnU-Net's strided conv). The CBAM
output is both the skip feature and the input of the next pool. Decoder level k: 2x2 transposed conv stride 2
(C_{k+1} -> C_k) -> concat skip -> 2 x [conv-IN-LeakyReLU]; a 1x1 conv head to ``num_classes`` at every decoder
level (deep supervision). In training mode ``forward`` returns the list of head outputs, full resolution first
(nnU-Net's order); in eval mode only the full-resolution logits.

Variants (the paper's ablation, Table 5; one code path, two switches):

| variant     | mamba | cbam |
|---|---|---|
| ``unet``      | no  | no  |  nnU-Net's plain U-Net
| ``umamba``    | yes | no  |  "U-Net + Mamba" (U-Mamba Enc-like)
| ``unet-cbam`` | no  | yes |  "U-Net + CBAM"
| ``cmunet``    | yes | yes |  CMU-Net

Choices where the card is silent (also listed in the pipeline's docstring): no residual around the Mamba layer
(``mamba_residual`` switches it on); CBAM r = 16 with hidden width >= 1, bias-free MLP and 7x7 conv (CBAM's
original); Mamba runs at every stage including the full-resolution one; convolutions carry a bias (nnU-Net's
``conv_bias=True``); the transposed convs carry a bias.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from .attention import CBAM
from .selective_scan import DEFAULT_CHUNK, MambaLayer

__all__ = ["VARIANTS", "CMUNet", "ConvBlock", "deep_supervision_weights"]

VARIANTS = {"unet": (False, False), "umamba": (True, False), "unet-cbam": (False, True), "cmunet": (True, True)}


class ConvBlock(nn.Sequential):
    """n x [3x3 conv -> InstanceNorm2d(affine) -> LeakyReLU(0.01)]."""

    def __init__(self, cin: int, cout: int, n: int = 2):
        layers: list[nn.Module] = []
        for i in range(n):
            layers += [nn.Conv2d(cin if i == 0 else cout, cout, 3, padding=1),
                       nn.InstanceNorm2d(cout, eps=1e-5, affine=True), nn.LeakyReLU(0.01, inplace=True)]
        super().__init__(*layers)


class EncoderStage(nn.Module):
    def __init__(self, cin: int, cout: int, mamba: bool, cbam: bool, d_state: int, expand: int,
                 mamba_residual: bool, cbam_reduction: int, scan: str, chunk_size: int):
        super().__init__()
        self.convs = ConvBlock(cin, cout)
        self.mamba = (MambaLayer(cout, d_state=d_state, expand=expand, residual=mamba_residual, scan=scan,
                                 chunk_size=chunk_size) if mamba else nn.Identity())
        self.cbam = CBAM(cout, reduction=cbam_reduction) if cbam else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.cbam(self.mamba(self.convs(x)))


class CMUNet(nn.Module):
    """CMU-Net (``variant="cmunet"``) and its ablation variants.

    Args:
        in_channels: image channels (1 for the fluorescence sets).
        num_classes: output classes (2: background, organelle).
        channels: per-stage widths; ``len(channels) - 1`` poolings, so inputs must be divisible by
            ``2 ** (len(channels) - 1)``.
        variant: ``cmunet`` | ``unet`` | ``umamba`` | ``unet-cbam``.
        d_state, expand: Mamba's N and expansion (E = expand * C); dt_rank = ceil(C / 16), conv k = 4.
        mamba_residual: add the tokens back around the Mamba block (card: off).
        deep_supervision: return every decoder head's output in training mode.
        scan, chunk_size: selective-scan implementation (``auto`` uses mamba_ssm on CUDA when it imports).
    """

    def __init__(self, in_channels: int = 1, num_classes: int = 2, channels: Sequence[int] = (32, 64, 128, 256, 512),
                 variant: str = "cmunet", d_state: int = 16, expand: int = 2, mamba_residual: bool = False,
                 cbam_reduction: int = 16, deep_supervision: bool = True, scan: str = "auto",
                 chunk_size: int = DEFAULT_CHUNK):
        super().__init__()
        if variant not in VARIANTS:
            raise ValueError(f"variant must be one of {sorted(VARIANTS)}, got {variant!r}")
        if len(channels) < 2:
            raise ValueError("channels needs at least two stages")
        mamba, cbam = VARIANTS[variant]
        self.variant, self.channels, self.deep_supervision = variant, tuple(channels), deep_supervision
        self.encoder = nn.ModuleList()
        cin = in_channels
        for c in channels:
            self.encoder.append(EncoderStage(cin, c, mamba, cbam, d_state, expand, mamba_residual, cbam_reduction,
                                             scan, chunk_size))
            cin = c
        self.pool = nn.MaxPool2d(2, 2)
        self.up = nn.ModuleList()
        self.decoder = nn.ModuleList()
        self.heads = nn.ModuleList()
        for k in range(len(channels) - 2, -1, -1):  # deepest decoder level first
            self.up.append(nn.ConvTranspose2d(channels[k + 1], channels[k], 2, stride=2))
            self.decoder.append(ConvBlock(2 * channels[k], channels[k]))
            self.heads.append(nn.Conv2d(channels[k], num_classes, 1))

    @property
    def downsampling(self) -> int:
        return 2 ** (len(self.channels) - 1)

    def forward(self, x: torch.Tensor):
        if x.shape[-1] % self.downsampling or x.shape[-2] % self.downsampling:
            raise ValueError(f"input {tuple(x.shape[-2:])} must be divisible by {self.downsampling}")
        skips = []
        for i, stage in enumerate(self.encoder):
            x = stage(x if i == 0 else self.pool(x))
            skips.append(x)
        outs = []
        x = skips[-1]
        for up, dec, head, skip in zip(self.up, self.decoder, self.heads, reversed(skips[:-1]), strict=True):
            x = dec(torch.cat([up(x), skip], dim=1))
            outs.append(head(x))
        outs.reverse()  # full resolution first
        return outs if (self.training and self.deep_supervision) else outs[0]


def deep_supervision_weights(n: int) -> list[float]:
    """nnU-Net's weights for ``n`` outputs (full resolution first): 1, 1/2, 1/4, …, the lowest resolution
    dropped (weight 0), normalised to sum 1. A single output gets weight 1."""
    if n == 1:
        return [1.0]
    w = [1 / 2**i for i in range(n)]
    w[-1] = 0.0
    total = sum(w)
    return [v / total for v in w]
