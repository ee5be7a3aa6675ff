"""SM-SAFE with hierarchical fusion (card sm-safe.md, "--amf-levels 2"): the abstract's "hierarchical multi-modal
fusion", resolved by the card as a second AMF after one stride-2 stage per modality, fed to the U-Net's second level
by addition.

``SMSAFEHierarchical`` is ``models.fusion.SMSAFE`` with ``MultiModalFusion(levels=2)``: the level-1 fused map goes
through ASE into the U-Net as before; the level-2 fused map (2 × fusion channels, half resolution) is projected by
a 1×1×1 convolution to the U-Net's first width and added to the output of the U-Net's first (stride-2) block, i.e.
the input of its second level. The projection is ours (the card says "by addition" without matching widths).
MONAI's ``UNet`` is ``Sequential(first block, SkipConnection(deeper levels), last block)``; the forward below runs
those three parts explicitly.
"""

from __future__ import annotations

import torch

from .fusion import SMSAFE, MultiModalFusion, _conv

__all__ = ["SMSAFEHierarchical"]


class SMSAFEHierarchical(SMSAFE):
    def __init__(self, modalities: int, out_channels: int, spatial_dims: int = 3, fusion_channels: int = 32,
                 unet_channels: tuple[int, ...] = (32, 64, 128, 256, 320), unet_strides: tuple[int, ...] | None = None,
                 num_res_units: int = 2, ase_layers: int = 3, use_ase: bool = True, concat_raw: bool = False):
        super().__init__(modalities, out_channels, spatial_dims, fusion_channels, unet_channels, unet_strides,
                         num_res_units, ase_layers, use_amf=True, use_ase=use_ase, concat_raw=concat_raw)
        if (unet_strides or (2,) * (len(unet_channels) - 1))[0] != 2:
            raise ValueError("hierarchical fusion needs a stride-2 first U-Net level")
        self.fusion = MultiModalFusion(modalities, fusion_channels, spatial_dims, levels=2)
        self.level2 = _conv(spatial_dims)(2 * fusion_channels, unet_channels[0], 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        (fused, fused2), _ = self.fusion(x)
        parts = [self.ase(fused) if self.ase is not None else fused]
        if self.concat_raw:
            parts.append(x)
        first, deeper, last = self.unet.model
        h = first(torch.cat(parts, dim=1)) + self.level2(fused2)
        return last(deeper(h))
