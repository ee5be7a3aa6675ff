"""Screen-corner regressor of the icu-vitals card: a CNN backbone, three 'valid' 3×3 convolutions, global average
pooling and three dense layers to 8 numbers (x1, y1, …, x4, y4).

Backbones: MONAI's EfficientNet-B0 … B4 (``effnet-b0`` … ``effnet-b4``: stem, MBConv blocks and the 1×1 head conv
with its BN and swish, i.e. everything before pooling; B4 at 380² gives 1792×12×12), torchvision's MobileNetV2
features (``mobilenetv2``, when torchvision is installed) and ``tiny`` (4 conv blocks, each a stride-2
conv3×3-BN-ReLU, for CPU smoke runs). The head is the card's: Conv3×3 1280 → Conv3×3 1540 → Conv3×3 1960, ReLU,
no padding (12 → 10 → 8 → 6 at 380²), GAP, Dense 1024 → Dense 128 (ReLU) → Dense 8 (linear); its widths are
arguments so a tiny model can keep the structure at a CPU-friendly size.
"""

from __future__ import annotations

import torch
from torch import nn

EFFNETS = ("effnet-b0", "effnet-b1", "effnet-b2", "effnet-b3", "effnet-b4")
BACKBONES = (*EFFNETS, "mobilenetv2", "tiny")


class EfficientNetFeatures(nn.Module):
    """MONAI ``EfficientNetBN`` without its pooling, dropout and classifier."""

    def __init__(self, variant: str = "effnet-b4", in_channels: int = 3):
        super().__init__()
        from monai.networks.nets import EfficientNetBN

        net = EfficientNetBN(variant.replace("effnet-", "efficientnet-"), pretrained=False, spatial_dims=2,
                             in_channels=in_channels, num_classes=1)
        self.stem_pad, self.stem, self.bn0, self.swish = net._conv_stem_padding, net._conv_stem, net._bn0, net._swish
        self.blocks = net._blocks
        self.head_pad, self.head, self.bn1 = net._conv_head_padding, net._conv_head, net._bn1
        self.out_channels = net._fc.in_features

    def forward(self, x):
        x = self.swish(self.bn0(self.stem(self.stem_pad(x))))
        x = self.blocks(x)
        return self.swish(self.bn1(self.head(self.head_pad(x))))


class TinyBackbone(nn.Module):
    """4 blocks of stride-2 conv3×3-BN-ReLU (stride 16 overall), CoordConv style: two coordinate channels (x, y in
    −1…1) are appended to the input of every block and to the output. A small network trained from scratch cannot
    otherwise recover absolute positions through the head's global average pooling (the EfficientNets learn them
    from their padding)."""

    def __init__(self, in_channels: int = 3, widths=(16, 32, 64, 96)):
        super().__init__()
        blocks, c = [], in_channels
        for w in widths:
            blocks.append(nn.Sequential(nn.Conv2d(c + 2, w, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(w),
                                        nn.ReLU(inplace=True)))
            c = w
        self.blocks = nn.ModuleList(blocks)
        self.out_channels = c + 2

    @staticmethod
    def coords(x):
        b, _, h, w = x.shape
        ys = torch.linspace(-1, 1, h, device=x.device, dtype=x.dtype).view(1, 1, h, 1).expand(b, 1, h, w)
        xs = torch.linspace(-1, 1, w, device=x.device, dtype=x.dtype).view(1, 1, 1, w).expand(b, 1, h, w)
        return torch.cat([x, xs, ys], 1)

    def forward(self, x):
        for block in self.blocks:
            x = block(self.coords(x))
        return self.coords(x)


def backbone(name: str, in_channels: int = 3) -> nn.Module:
    if name in EFFNETS:
        return EfficientNetFeatures(name, in_channels)
    if name == "tiny":
        return TinyBackbone(in_channels)
    if name == "mobilenetv2":
        try:
            from torchvision.models import mobilenet_v2
        except ImportError as e:  # the caller turns this into an EnvError with the fix
            raise ImportError("backbone mobilenetv2 needs torchvision (pip install torchvision)") from e
        net = mobilenet_v2(weights=None).features
        net.out_channels = 1280
        return net
    raise KeyError(f"unknown backbone '{name}'; known: {', '.join(BACKBONES)}")


class CornerRegressor(nn.Module):
    def __init__(self, backbone_name: str = "effnet-b4", head_convs=(1280, 1540, 1960), head_dense=(1024, 128),
                 outputs: int = 8, in_channels: int = 3, offset: float = 0.5, scale: float = 0.1,
                 head_norm: bool = False):
        super().__init__()
        # the outputs are offset + scale · Dense(…): targets in 0–1 (fractions of the padded frame) start near the
        # frame's centre and train at unit scale; no parameters
        self.offset, self.scale = offset, scale
        self.backbone = backbone(backbone_name, in_channels)
        convs, c = [], self.backbone.out_channels
        for w in head_convs:
            convs += [nn.Conv2d(c, w, 3, padding=0),  # 'valid' padding
                      *([nn.BatchNorm2d(w)] if head_norm else []), nn.ReLU(inplace=True)]
            c = w
        self.convs = nn.Sequential(*convs)
        dense = []
        for w in head_dense:
            dense += [nn.Linear(c, w), nn.ReLU(inplace=True)]
            c = w
        self.dense = nn.Sequential(*dense, nn.Linear(c, outputs))

    def features(self, x):
        """Backbone then the head's convolutions: (B, head_convs[-1], h, w)."""
        return self.convs(self.backbone(x))

    def forward(self, x):
        return self.offset + self.scale * self.dense(self.features(x).mean(dim=(2, 3)))


def corner_regressor_b4(**kw) -> CornerRegressor:
    """The paper's model: EfficientNet-B4 features + the card's head, for 380×380 inputs."""
    return CornerRegressor("effnet-b4", **kw)
