"""UNeXt (Valanarasu & Patel 2022) with tokenised shifted-MLP blocks, and the SC-UNeXt additions as flags.

Source: ``sc-unext.md``, section "Method (enough to implement without the paper)".

``unext_small()`` is the base of SC-UNeXt: conv stages 3 -> 8 -> 16 -> 32, tokenised MLP stages 64 and 128, and
exactly 253,561 parameters (the card's figure; checked by ``tests/models/test_unext.py``).
``unext_paper()`` is the published 1.47 M variant (the card's ``--unext-size paper`` option).

SC-UNeXt is the same class with flags (card, "SC-UNeXt additions"):

- ``cbam=True``: CBAM (``models/attention.py``, hidden ``max(C/4, 2)``) on every encoder skip t1..t4:
  +3,112 parameters for the small variant.
- ``sc_skip=True``: the decoder's ``u + t_l`` becomes ``f(u * x_l + u)`` with ``x_l`` the (CBAM-filtered) skip;
  ``f`` = depthwise 3x3 conv + BN + ReLU (+1,440), or a dense 3x3 conv with ``sc_f="full"``.
- ``pfm=True``: pyramid fusion of all five decoder outputs, each 1x1 conv -> 8 channels and then
  ``ConvTranspose2d(k=2, s=2)`` repeated up to full size, summed before the 1x1 head (+3,704).

All three together give 261,817 parameters. The edge loss belongs to the training code, not to the model.

Choices where the card is silent:

- The shift splits the channels into ``shift_size`` groups with ``torch.tensor_split`` (sizes differ by at most
  one). The official code uses ``torch.chunk``, which yields fewer groups when the width is small; the
  parameter count is the same either way.
- The shift fills with zeros (the card: "zero pad"); group g moves by ``g - shift_size // 2`` pixels.
- Bilinear upsampling uses ``align_corners=False`` (PyTorch's default, as in the official code).
- With ``sc_skip`` in D1/D2, ``f`` runs before the stage's shifted block.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .attention import CBAM

__all__ = ["ShiftedMLPBlock", "UNeXt", "unext_small", "unext_paper", "sc_unext", "count_parameters"]


def count_parameters(model: nn.Module) -> int:
    """Number of trainable parameters."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def _shift_zero(x: torch.Tensor, shift: int, dim: int) -> torch.Tensor:
    """Move ``x`` by ``shift`` positions along ``dim``; vacated positions become 0 (no wrap-around)."""
    if shift == 0:
        return x
    size = x.shape[dim]
    step = min(abs(shift), size)
    pad_shape = list(x.shape)
    pad_shape[dim] = step
    zeros = x.new_zeros(pad_shape)
    if shift > 0:
        return torch.cat([zeros, x.narrow(dim, 0, size - step)], dim=dim)
    return torch.cat([x.narrow(dim, step, size - step), zeros], dim=dim)


def shift_groups(x: torch.Tensor, shift_size: int, dim: int) -> torch.Tensor:
    """Split channels (dim 1 of a B, C, H, W map) into ``shift_size`` groups; shift group g by ``g - shift_size//2``."""
    half = shift_size // 2
    groups = torch.tensor_split(x, shift_size, dim=1)
    return torch.cat([_shift_zero(g, i - half, dim) for i, g in enumerate(groups)], dim=1)


class ShiftedMLP(nn.Module):
    """The tokenised MLP: shift along H -> Linear -> depthwise 3x3 -> GELU -> shift along W -> Linear."""

    def __init__(self, dim: int, mlp_ratio: float = 1.0, shift_size: int = 5):
        super().__init__()
        hidden = int(dim * mlp_ratio)
        self.shift_size = shift_size
        self.fc1 = nn.Linear(dim, hidden)
        self.dwconv = nn.Conv2d(hidden, hidden, 3, padding=1, groups=hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, tokens: torch.Tensor, height: int, width: int) -> torch.Tensor:
        x = _to_map(tokens, height, width)
        x = shift_groups(x, self.shift_size, dim=2)
        x = self.fc1(_to_tokens(x))
        x = self.act(self.dwconv(_to_map(x, height, width)))
        x = shift_groups(x, self.shift_size, dim=3)
        return self.fc2(_to_tokens(x))


class ShiftedMLPBlock(nn.Module):
    """``x + MLP(LN(x))`` on tokens (B, H*W, C); mlp_ratio 1 and no dropout, as in UNeXt."""

    def __init__(self, dim: int, mlp_ratio: float = 1.0, shift_size: int = 5):
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.mlp = ShiftedMLP(dim, mlp_ratio, shift_size)

    def forward(self, tokens: torch.Tensor, height: int, width: int) -> torch.Tensor:
        return tokens + self.mlp(self.norm(tokens), height, width)


def _to_tokens(x: torch.Tensor) -> torch.Tensor:
    return x.flatten(2).transpose(1, 2)


def _to_map(tokens: torch.Tensor, height: int, width: int) -> torch.Tensor:
    batch, _, channels = tokens.shape
    return tokens.transpose(1, 2).reshape(batch, channels, height, width)


class TokMLPStage(nn.Module):
    """Overlapping patch embedding (3x3 conv, stride 2) + LN, one shifted block, LN; returns a (B, C, H, W) map."""

    def __init__(self, in_channels: int, dim: int, mlp_ratio: float, shift_size: int):
        super().__init__()
        self.embed = nn.Conv2d(in_channels, dim, 3, stride=2, padding=1)
        self.embed_norm = nn.LayerNorm(dim)
        self.block = ShiftedMLPBlock(dim, mlp_ratio, shift_size)
        self.norm = nn.LayerNorm(dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.embed(x)
        height, width = x.shape[-2:]
        tokens = self.block(self.embed_norm(_to_tokens(x)), height, width)
        return _to_map(self.norm(tokens), height, width)


class SkipFusion(nn.Module):
    """Merges the upsampled decoder map ``u`` with the encoder skip ``t`` (same channels and size).

    plain: ``u + t``;  ``cbam``: ``u + CBAM(t)``;  ``sc``: ``f(u * x + u)`` with ``x = CBAM(t)`` or ``t``
    (the card's reading of the garbled Eq. 2).
    """

    def __init__(self, channels: int, cbam: bool, sc_skip: bool, sc_f: str):
        super().__init__()
        self.cbam = CBAM(channels, reduction=4, min_hidden=2) if cbam else nn.Identity()
        self.sc_skip = sc_skip
        if sc_skip:
            if sc_f not in ("depthwise", "full"):
                raise ValueError(f"sc_f must be 'depthwise' or 'full', got {sc_f!r}")
            groups = channels if sc_f == "depthwise" else 1
            self.f = nn.Sequential(
                nn.Conv2d(channels, channels, 3, padding=1, groups=groups),
                nn.BatchNorm2d(channels),
                nn.ReLU(inplace=True),
            )

    def forward(self, u: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        x = self.cbam(skip)
        if self.sc_skip:
            return self.f(u * x + u)
        return u + x


class PyramidFusion(nn.Module):
    """PFM: every decoder output -> 1x1 conv to ``width`` channels -> k=s=2 deconvs up to full size; summed."""

    def __init__(self, in_channels: list[int], upsamplings: list[int], width: int):
        super().__init__()
        self.branches = nn.ModuleList()
        for channels, times in zip(in_channels, upsamplings, strict=True):
            layers: list[nn.Module] = [nn.Conv2d(channels, width, 1)]
            layers += [nn.ConvTranspose2d(width, width, 2, stride=2) for _ in range(times)]
            self.branches.append(nn.Sequential(*layers))

    def forward(self, features: list[torch.Tensor]) -> torch.Tensor:
        return sum(branch(f) for branch, f in zip(self.branches, features, strict=True))


class UNeXt(nn.Module):
    """UNeXt / SC-UNeXt for 2D input whose sides are multiples of 32.

    Args:
        in_channels, out_channels: image channels and logit channels.
        conv_channels: widths of the three conv stages (E1..E3), small variant (8, 16, 32).
        embed_dims: widths of the tokenised-MLP stage and of the bottleneck, small variant (64, 128).
        mlp_ratio, shift_size: shifted-MLP hidden ratio (1) and number of shifted groups (5).
        cbam, sc_skip, sc_f, pfm: the SC-UNeXt additions (module docstring).
    """

    def __init__(
        self,
        in_channels: int = 3,
        out_channels: int = 1,
        conv_channels: tuple[int, int, int] = (8, 16, 32),
        embed_dims: tuple[int, int] = (64, 128),
        mlp_ratio: float = 1.0,
        shift_size: int = 5,
        cbam: bool = False,
        sc_skip: bool = False,
        sc_f: str = "depthwise",
        pfm: bool = False,
    ):
        super().__init__()
        c1, c2, c3 = conv_channels
        e1, e2 = embed_dims
        # Encoder: three conv stages (Conv3x3 -> BN -> MaxPool2 -> ReLU), then two tokenised-MLP stages.
        self.enc_convs = nn.ModuleList(
            [nn.Conv2d(a, b, 3, padding=1) for a, b in ((in_channels, c1), (c1, c2), (c2, c3))]
        )
        self.enc_bns = nn.ModuleList([nn.BatchNorm2d(c) for c in (c1, c2, c3)])
        self.tok = TokMLPStage(c3, e1, mlp_ratio, shift_size)
        self.bottleneck = TokMLPStage(e1, e2, mlp_ratio, shift_size)
        # Decoder: D1..D4 (conv + BN, x2, ReLU, skip), D5 (conv, x2, ReLU); shifted blocks after D1 and D2.
        dec_in = (e2, e1, c3, c2, c1)
        dec_out = (e1, c3, c2, c1, c1)
        self.dec_convs = nn.ModuleList([nn.Conv2d(a, b, 3, padding=1) for a, b in zip(dec_in, dec_out, strict=True)])
        self.dec_bns = nn.ModuleList([nn.BatchNorm2d(c) for c in dec_out[:4]])
        self.skips = nn.ModuleList([SkipFusion(c, cbam, sc_skip, sc_f) for c in dec_out[:4]])
        self.dec_blocks = nn.ModuleList([ShiftedMLPBlock(c, mlp_ratio, shift_size) for c in (e1, c3)])
        self.dec_norms = nn.ModuleList([nn.LayerNorm(c) for c in (e1, c3)])
        self.pfm = PyramidFusion(list(dec_out), [4, 3, 2, 1, 0], width=c1) if pfm else None
        self.head = nn.Conv2d(c1, out_channels, 1)

    @staticmethod
    def _up(x: torch.Tensor) -> torch.Tensor:
        return F.interpolate(x, scale_factor=2.0, mode="bilinear", align_corners=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-1] % 32 or x.shape[-2] % 32:
            raise ValueError(f"UNeXt needs height and width divisible by 32, got {tuple(x.shape[-2:])}")
        skips = []
        for conv, bn in zip(self.enc_convs, self.enc_bns, strict=True):
            x = F.relu(F.max_pool2d(bn(conv(x)), 2))
            skips.append(x)  # t1, t2, t3
        x = self.tok(x)
        skips.append(x)  # t4
        x = self.bottleneck(x)

        outputs = []
        for level in range(4):
            u = F.relu(self._up(self.dec_bns[level](self.dec_convs[level](x))))
            x = self.skips[level](u, skips[3 - level])
            if level < 2:
                height, width = x.shape[-2:]
                tokens = self.dec_blocks[level](_to_tokens(x), height, width)
                x = _to_map(self.dec_norms[level](tokens), height, width)
            outputs.append(x)
        x = F.relu(self._up(self.dec_convs[4](x)))
        outputs.append(x)
        if self.pfm is not None:
            x = self.pfm(outputs)
        return self.head(x)


def unext_small(in_channels: int = 3, out_channels: int = 1, **flags) -> UNeXt:
    """UNeXt-small of the official ``archs.py`` (253,561 parameters for 3 -> 1 channels)."""
    return UNeXt(in_channels, out_channels, (8, 16, 32), (64, 128), **flags)


def unext_paper(in_channels: int = 3, out_channels: int = 1, **flags) -> UNeXt:
    """The published UNeXt widths (conv 16, 32, 128; tokens 160, 256), about 1.47 M parameters."""
    return UNeXt(in_channels, out_channels, (16, 32, 128), (160, 256), **flags)


def sc_unext(in_channels: int = 3, out_channels: int = 1, sc_f: str = "depthwise") -> UNeXt:
    """SC-UNeXt: UNeXt-small with CBAM skips, SC skips and PFM (261,817 parameters with depthwise ``f``)."""
    return unext_small(in_channels, out_channels, cbam=True, sc_skip=True, sc_f=sc_f, pfm=True)
