"""Adaptive multi-modal fusion (AMF) and attentive structural encoding (ASE) of SM-SAFE, for 2D and 3D maps.

Source: ``sm-safe.md``, section "Method (enough to implement without the paper)". Everything except the two formulas
of the paper is the card's resolved design, which is followed here:

- ``ModalityStems``: each input channel (modality) i gets its own 2 x [Conv 3, InstanceNorm, LeakyReLU 0.01] -> M_i
  with 32 channels.
- ``AdaptiveFusion`` (AMF, as written in the paper): s_i(v) = sigmoid(V^T M_i(v) + b) with V, b shared over the
  modalities; w_i(v) = s_i(v) / (sum_j s_j(v) + 1e-6); F(v) = sum_i w_i(v) M_i(v). The weights sum to 1 per voxel
  (up to the 1e-6), and with one modality F = M_1 (likewise).
- ``MultiModalFusion``: stems + AMF, and with ``levels=2`` (the card's ``--amf-levels 2``, "hierarchical") a second
  fusion after one more stride-2 stage per modality, returned for the caller to add into its second U-Net level.
- ``AttentiveStructuralEncoder`` (ASE): L (<= 3) layers at 1/4, 1/8, 1/16 of the input; layer 1 uses two stride-2
  conv blocks, the others one; 64 channels; per layer multi-head self-attention (4 heads, 1x1 Q/K/V projections,
  ``scaled_dot_product_attention``) and ``H <- LayerNorm(H + Conv1(E))``; output ``X = F + sum_l Conv1(up(H_l))``.
- ``SMSAFE``: stems + AMF + ASE + MONAI ``UNet`` (the card's segmentation network), with switches that give the
  card's comparison models (baseline U-Net on raw channels, AMF-Net without ASE) from the same code.

Choices where the card is silent:

- ASE conv blocks are Conv 3 (stride 2) + InstanceNorm + LeakyReLU 0.01, the same block as the stems.
- The LayerNorm of ASE normalises the channels of each token.
- ASE's 1x1 output projection is applied before the trilinear (or bilinear) upsampling rather than after: both
  are linear per voxel and the interpolation weights sum to one, so the result is identical and cheaper.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "AdaptiveFusion",
    "AttentiveStructuralEncoder",
    "ModalityStems",
    "MultiModalFusion",
    "SMSAFE",
    "conv_block",
]


def _conv(spatial_dims: int) -> type[nn.Module]:
    if spatial_dims not in (2, 3):
        raise ValueError(f"spatial_dims must be 2 or 3, got {spatial_dims}")
    return nn.Conv2d if spatial_dims == 2 else nn.Conv3d


def conv_block(in_channels: int, out_channels: int, spatial_dims: int = 3, stride: int = 1) -> nn.Sequential:
    """Conv 3 (padding 1) -> InstanceNorm (affine) -> LeakyReLU(0.01)."""
    norm = nn.InstanceNorm2d if spatial_dims == 2 else nn.InstanceNorm3d
    return nn.Sequential(
        _conv(spatial_dims)(in_channels, out_channels, 3, stride=stride, padding=1),
        norm(out_channels, affine=True),
        nn.LeakyReLU(0.01, inplace=True),
    )


class ModalityStems(nn.Module):
    """One stem per input channel: (B, M, *S) -> list of M maps (B, channels, *S)."""

    def __init__(self, modalities: int, channels: int = 32, spatial_dims: int = 3):
        super().__init__()
        self.stems = nn.ModuleList(
            nn.Sequential(conv_block(1, channels, spatial_dims), conv_block(channels, channels, spatial_dims))
            for _ in range(modalities)
        )

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        if x.shape[1] != len(self.stems):
            raise ValueError(f"expected {len(self.stems)} modalities (channels), got {x.shape[1]}")
        return [stem(x[:, i : i + 1]) for i, stem in enumerate(self.stems)]


class AdaptiveFusion(nn.Module):
    """AMF: per-voxel weights from one shared scoring vector, normalised over the modalities.

    ``forward(maps)`` returns ``(fused, weights)`` with fused (B, C, *S) and weights (B, M, *S).
    """

    def __init__(self, channels: int = 32, eps: float = 1e-6):
        super().__init__()
        self.score = nn.Linear(channels, 1)  # V and b, shared by every modality
        self.eps = eps

    def forward(self, maps: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        stacked = torch.stack(maps, dim=1)  # (B, M, C, *S)
        scores = torch.sigmoid(self.score(stacked.movedim(2, -1)).squeeze(-1))  # (B, M, *S)
        weights = scores / (scores.sum(dim=1, keepdim=True) + self.eps)
        fused = (weights.unsqueeze(2) * stacked).sum(dim=1)
        return fused, weights


class MultiModalFusion(nn.Module):
    """Stems + AMF; ``levels=2`` adds a stride-2 stage per modality and a second AMF at half resolution.

    ``forward(x)`` returns ``(fused maps, weight maps)``: one entry per level, finest first.
    """

    def __init__(self, modalities: int, channels: int = 32, spatial_dims: int = 3, levels: int = 1):
        super().__init__()
        if levels not in (1, 2):
            raise ValueError(f"levels must be 1 or 2, got {levels}")
        self.stems = ModalityStems(modalities, channels, spatial_dims)
        self.fusions = nn.ModuleList([AdaptiveFusion(channels)])
        self.down = None
        if levels == 2:
            self.down = nn.ModuleList(
                conv_block(channels, 2 * channels, spatial_dims, stride=2) for _ in range(modalities)
            )
            self.fusions.append(AdaptiveFusion(2 * channels))

    def forward(self, x: torch.Tensor) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        maps = self.stems(x)
        fused, weights = self.fusions[0](maps)
        outputs, weight_maps = [fused], [weights]
        if self.down is not None:
            fused, weights = self.fusions[1]([down(m) for down, m in zip(self.down, maps, strict=True)])
            outputs.append(fused)
            weight_maps.append(weights)
        return outputs, weight_maps


class _AttentionLayer(nn.Module):
    """Multi-head self-attention over all positions of a map, then ``LayerNorm(H + Conv1(E))``."""

    def __init__(self, channels: int, heads: int, spatial_dims: int):
        super().__init__()
        if channels % heads:
            raise ValueError(f"channels ({channels}) must be divisible by heads ({heads})")
        conv = _conv(spatial_dims)
        self.heads = heads
        self.qkv = conv(channels, 3 * channels, 1)
        self.proj = conv(channels, channels, 1)
        self.norm = nn.LayerNorm(channels)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        batch, channels, *spatial = h.shape
        q, k, v = self.qkv(h).flatten(2).chunk(3, dim=1)  # each (B, C, N)

        def heads(t: torch.Tensor) -> torch.Tensor:  # (B, C, N) -> (B, heads, N, C / heads)
            return t.view(batch, self.heads, channels // self.heads, -1).transpose(2, 3)

        e = F.scaled_dot_product_attention(heads(q), heads(k), heads(v))  # softmax(Q K^T / sqrt(d)) V
        e = e.transpose(2, 3).reshape(batch, channels, *spatial)
        out = h + self.proj(e)
        return self.norm(out.movedim(1, -1)).movedim(-1, 1)


class AttentiveStructuralEncoder(nn.Module):
    """ASE: ``X = F + sum_l Conv1(up(H_l))`` with H_l attention-refined maps at 1/4, 1/8, 1/16 (module docstring).

    Args:
        channels: channels of the fused map F (and of the output), 32.
        width: ASE working width, 64.
        layers: 1 to 3 (the smoke run uses 1 layer at 1/4).
        heads: attention heads, 4.
    """

    def __init__(self, channels: int = 32, width: int = 64, layers: int = 3, heads: int = 4, spatial_dims: int = 3):
        super().__init__()
        if not 1 <= layers <= 3:
            raise ValueError(f"layers must be 1, 2 or 3, got {layers}")
        self.downs = nn.ModuleList()
        for layer in range(layers):
            if layer == 0:
                stage = nn.Sequential(
                    conv_block(channels, width, spatial_dims, stride=2),
                    conv_block(width, width, spatial_dims, stride=2),
                )
            else:
                stage = conv_block(width, width, spatial_dims, stride=2)
            self.downs.append(stage)
        self.attentions = nn.ModuleList(_AttentionLayer(width, heads, spatial_dims) for _ in range(layers))
        self.outs = nn.ModuleList(_conv(spatial_dims)(width, channels, 1) for _ in range(layers))
        self.mode = "bilinear" if spatial_dims == 2 else "trilinear"

    def forward(self, fused: torch.Tensor) -> torch.Tensor:
        out = fused
        h = fused
        for down, attention, proj in zip(self.downs, self.attentions, self.outs, strict=True):
            h = attention(down(h))
            out = out + F.interpolate(proj(h), size=fused.shape[2:], mode=self.mode, align_corners=False)
        return out


class SMSAFE(nn.Module):
    """SM-SAFE: stems + AMF + ASE + MONAI ``UNet``; the same class builds the card's comparison models.

    - ``SMSAFE(m, k)``: the full model.
    - ``SMSAFE(m, k, use_ase=False)``: AMF-Net.
    - ``SMSAFE(m, k, use_amf=False, use_ase=False)``: the baseline U-Net on the raw channels.
    ``concat_raw`` also feeds the raw images to the U-Net (the card's "spatial cues" option).
    """

    def __init__(
        self,
        modalities: int,
        out_channels: int,
        spatial_dims: int = 3,
        fusion_channels: int = 32,
        unet_channels: tuple[int, ...] = (32, 64, 128, 256, 320),
        unet_strides: tuple[int, ...] | None = None,
        num_res_units: int = 2,
        ase_layers: int = 3,
        use_amf: bool = True,
        use_ase: bool = True,
        concat_raw: bool = False,
    ):
        super().__init__()
        from monai.networks.nets import UNet

        if use_ase and not use_amf:
            raise ValueError("ASE works on the fused map: use_ase needs use_amf")
        self.fusion = MultiModalFusion(modalities, fusion_channels, spatial_dims) if use_amf else None
        self.ase = (
            AttentiveStructuralEncoder(fusion_channels, layers=ase_layers, spatial_dims=spatial_dims)
            if use_ase
            else None
        )
        self.concat_raw = concat_raw or not use_amf
        unet_in = (fusion_channels if use_amf else 0) + (modalities if self.concat_raw else 0)
        self.unet = UNet(
            spatial_dims=spatial_dims,
            in_channels=unet_in,
            out_channels=out_channels,
            channels=unet_channels,
            strides=unet_strides or (2,) * (len(unet_channels) - 1),
            num_res_units=num_res_units,
            norm="INSTANCE",
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        parts = []
        if self.fusion is not None:
            (fused,), _ = self.fusion(x)
            parts.append(self.ase(fused) if self.ase is not None else fused)
        if self.concat_raw:
            parts.append(x)
        return self.unet(torch.cat(parts, dim=1))

    def fusion_weights(self, x: torch.Tensor) -> torch.Tensor:
        """Per-modality AMF weight maps (B, M, *S), e.g. for the ``fuse-maps`` verb."""
        if self.fusion is None:
            raise ValueError("this model has no AMF")
        return self.fusion(x)[1][0]
