"""TransNetOCT (transnet-oct card): a ResNet-50 encoder with a transformer bottleneck, a DeepLabV3+-style decoder
and a 3D head that turns a 2.5D stack of B-scans (plus prior label maps) into a 3D label volume; and the UNet and
FPN baselines with the same input and the same 3D head.

Shapes (card defaults): input (B, 9, 256, 256) = 5 B-scans + 4 prior maps; output logits (B, 12, 5, 256, 256).

- Encoder: MONAI's 2D ResNet-50 (bottleneck blocks [3, 4, 6, 3], conv1 7×7 stride 2, max-pool, no bias in the
  shortcut convolutions: the torchvision layout, so a torchvision ``resnet50`` state dict loads by name, see
  :func:`load_resnet50_weights`). F1 = layer1 (256 ch, /4), F4 = layer4 (2048 ch, /32).
- Bottleneck: F4 flattened to (S/32)² patch-1 tokens, Linear 2048→D, learnable position embedding, ``depth``
  pre-LN transformer layers (MSA + GELU MLP, ratio 4), reshaped back to D×(S/32)².
- Decoder: Conv1×1(D→256), bilinear ×8 to /4; concat Conv1×1(F1→48)-BN-ReLU; 2 × [Conv3×3→256, BN, ReLU];
  bilinear ×4; Conv1×1 → slices·head_channels.
- 3D head: reshape to (B, head_channels, slices, S, S), Conv3d(head_channels→classes, k 3, pad 1).

Imports torch and MONAI only.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def resnet50_encoder(in_channels: int) -> nn.Module:
    """MONAI's 2D ResNet-50 trunk in torchvision's layout (conv1 7×7 s2, max-pool, bias-free shortcuts)."""
    from monai.networks.nets import resnet50

    net = resnet50(spatial_dims=2, n_input_channels=in_channels, conv1_t_stride=2, bias_downsample=False,
                   num_classes=1)
    net.fc = nn.Identity()
    return net


def encode(enc: nn.Module, x: torch.Tensor) -> list[torch.Tensor]:
    """[layer1, layer2, layer3, layer4] features of the ResNet trunk."""
    x = enc.maxpool(enc.act(enc.bn1(enc.conv1(x))))
    feats = []
    for layer in (enc.layer1, enc.layer2, enc.layer3, enc.layer4):
        x = layer(x)
        feats.append(x)
    return feats


def load_resnet50_weights(encoder: nn.Module, state: dict, in_channels: int) -> list[str]:
    """Load an ImageNet ResNet-50 state dict (torchvision key names) into the encoder. conv1's RGB kernel is tiled
    along the input axis to ``in_channels`` and divided by the tiling factor (keeps the activation scale; the
    card's choice). The classifier (``fc.*``) is dropped. Returns the encoder keys left at their random init."""
    state = {k.removeprefix("module."): v for k, v in state.items() if not k.startswith("fc.")}
    w = state.get("conv1.weight")
    if w is not None and w.shape[1] != in_channels:
        reps = -(-in_channels // w.shape[1])
        state["conv1.weight"] = w.repeat(1, reps, 1, 1)[:, :in_channels] * (w.shape[1] / in_channels)
    missing, unexpected = encoder.load_state_dict(state, strict=False)
    if unexpected:
        raise KeyError(f"weights hold keys a ResNet-50 does not have: {', '.join(unexpected[:5])}")
    return list(missing)


class Head3D(nn.Module):
    """(B, slices·C, H, W) → (B, C, slices, H, W) → Conv3d(C→classes, k 3, pad 1)."""

    def __init__(self, head_channels: int, num_classes: int, slices: int):
        super().__init__()
        self.c, self.slices = head_channels, slices
        self.conv = nn.Conv3d(head_channels, num_classes, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, _, h, w = x.shape
        return self.conv(x.view(b, self.slices, self.c, h, w).transpose(1, 2))


def _conv_bn_relu(cin: int, cout: int, k: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, k, padding=k // 2, bias=False), nn.BatchNorm2d(cout), nn.ReLU(True))


class TransNetOCT(nn.Module):
    def __init__(self, in_channels: int = 9, num_classes: int = 12, slices: int = 5, img_size: int = 256,
                 dim: int = 512, depth: int = 4, heads: int = 8, mlp_ratio: float = 4.0, head_channels: int = 16):
        super().__init__()
        if img_size % 32:
            raise ValueError(f"img_size {img_size} must be a multiple of 32 (ResNet-50 downsamples 32×)")
        if dim % heads:
            raise ValueError(f"dim {dim} must be divisible by heads {heads}")
        self.in_channels, self.slices, self.num_classes, self.grid = in_channels, slices, num_classes, img_size // 32
        self.encoder = resnet50_encoder(in_channels)
        self.embed = nn.Linear(2048, dim)
        self.pos = nn.Parameter(torch.zeros(1, self.grid ** 2, dim))
        nn.init.trunc_normal_(self.pos, std=0.02)
        layer = nn.TransformerEncoderLayer(dim, heads, int(dim * mlp_ratio), dropout=0.0, activation="gelu",
                                           batch_first=True, norm_first=True)
        self.transformer = nn.TransformerEncoder(layer, depth, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(dim)
        self.ctx_proj = nn.Conv2d(dim, 256, 1)
        self.low_proj = _conv_bn_relu(256, 48, 1)
        self.fuse = nn.Sequential(_conv_bn_relu(256 + 48, 256, 3), _conv_bn_relu(256, 256, 3))
        self.out = nn.Conv2d(256, slices * head_channels, 1)
        self.head = Head3D(head_channels, num_classes, slices)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        f1, _, _, f4 = encode(self.encoder, x)
        b, _, gh, gw = f4.shape
        tokens = self.embed(f4.flatten(2).transpose(1, 2))
        if tokens.shape[1] != self.pos.shape[1]:
            raise ValueError(f"input {tuple(x.shape[-2:])} gives {gh}×{gw} tokens; the model was built for "
                             f"{self.grid}×{self.grid} (img_size {self.grid * 32})")
        tokens = self.norm(self.transformer(tokens + self.pos))
        ctx = self.ctx_proj(tokens.transpose(1, 2).reshape(b, -1, gh, gw))
        ctx = F.interpolate(ctx, size=f1.shape[-2:], mode="bilinear", align_corners=False)
        y = self.fuse(torch.cat([ctx, self.low_proj(f1)], 1))
        y = F.interpolate(y, size=x.shape[-2:], mode="bilinear", align_corners=False)
        return self.head(self.out(y))


class UNet25D(nn.Module):
    """The UNet baseline: MONAI BasicUNet (2D, default widths 32-32-64-128-256-32) on the same input, then the
    same 3D head."""

    def __init__(self, in_channels: int = 9, num_classes: int = 12, slices: int = 5, head_channels: int = 16,
                 features: tuple[int, ...] = (32, 32, 64, 128, 256, 32)):
        super().__init__()
        from monai.networks.nets import BasicUNet

        self.in_channels, self.slices, self.num_classes = in_channels, slices, num_classes
        self.body = BasicUNet(spatial_dims=2, in_channels=in_channels, out_channels=slices * head_channels,
                              features=tuple(features))
        self.head = Head3D(head_channels, num_classes, slices)

    def forward(self, x):
        return self.head(self.body(x))


class FPN25D(nn.Module):
    """The FPN baseline: the same ResNet-50 trunk, MONAI's FeaturePyramidNetwork over layer1-4 (256 ch), each
    level through Conv3×3-BN-ReLU (128 ch) and bilinearly upsampled to /4, summed (semantic-FPN style), bilinear ×4,
    Conv1×1 → slices·head_channels, then the same 3D head."""

    def __init__(self, in_channels: int = 9, num_classes: int = 12, slices: int = 5, head_channels: int = 16):
        super().__init__()
        from monai.networks.blocks.feature_pyramid_network import FeaturePyramidNetwork

        self.in_channels, self.slices, self.num_classes = in_channels, slices, num_classes
        self.encoder = resnet50_encoder(in_channels)
        self.fpn = FeaturePyramidNetwork(2, [256, 512, 1024, 2048], 256)
        self.levels = nn.ModuleList(_conv_bn_relu(256, 128, 3) for _ in range(4))
        self.out = nn.Conv2d(128, slices * head_channels, 1)
        self.head = Head3D(head_channels, num_classes, slices)

    def forward(self, x):
        feats = encode(self.encoder, x)
        pyr = self.fpn({str(i): f for i, f in enumerate(feats)})
        size = feats[0].shape[-2:]
        y = sum(F.interpolate(conv(p), size=size, mode="bilinear", align_corners=False) if p.shape[-2:] != size
                else conv(p) for conv, p in zip(self.levels, pyr.values(), strict=True))
        y = F.interpolate(y, size=x.shape[-2:], mode="bilinear", align_corners=False)
        return self.head(self.out(y))
