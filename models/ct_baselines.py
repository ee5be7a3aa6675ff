"""UNETR and SwinUNETR (MONAI) as prompt-free 3D CT segmenters: the supervised baselines of the totalct-sam card
(Table 1 lists UNETR; SwinUNETR is MONAI's stronger transformer U-Net, asked for beside it).

Both take a (B, 1, S, S, S) CT crop and return (B, C + 1, S, S, S) class logits (background first), the interface
of TotalCT-SAM's ``semantic``, so one training step, sliding-window pass and score serve all three. At the paper's
configuration (128³, 104 classes + background) UNETR (feature size 16, hidden 768, MLP 3072, 12 heads, 12 layers,
16³ patches) has 93,031,353 parameters against the paper's 94.86 M, and SwinUNETR (feature size 48, depths
2-2-2-2, heads 3-6-12-24, window 7) 62,191,755.
"""

from __future__ import annotations

from torch import nn


class _Semantic(nn.Module):
    """A MONAI network behind TotalCT-SAM's ``semantic`` entry point (state-dict keys under ``net.``)."""

    def __init__(self, net: nn.Module):
        super().__init__()
        self.net = net

    def forward(self, volumes):
        return self.net(volumes)

    def semantic(self, volumes):
        return self.net(volumes)


def unetr(num_classes: int, img_size: int = 128, feature_size: int = 16, hidden_size: int = 768,
          mlp_dim: int = 3072, num_heads: int = 12) -> nn.Module:
    """UNETR (Hatamizadeh et al. 2022, MONAI) for ``num_classes`` foreground classes plus background; MONAI fixes
    the 16³ patches and 12 layers, so ``img_size`` must divide by 16."""
    from monai.networks.nets import UNETR

    return _Semantic(UNETR(1, num_classes + 1, img_size, feature_size=feature_size, hidden_size=hidden_size,
                           mlp_dim=mlp_dim, num_heads=num_heads, proj_type="conv", norm_name="instance"))


def swinunetr(num_classes: int, feature_size: int = 48, depths=(2, 2, 2, 2), num_heads=(3, 6, 12, 24)) -> nn.Module:
    """SwinUNETR (Hatamizadeh et al. 2022, MONAI, v1 blocks) for ``num_classes`` foreground classes plus
    background; the crop side must divide by 32."""
    from monai.networks.nets import SwinUNETR

    return _Semantic(SwinUNETR(in_channels=1, out_channels=num_classes + 1, feature_size=feature_size,
                               depths=tuple(depths), num_heads=tuple(num_heads)))
