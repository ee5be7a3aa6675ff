"""MA-DTNet: a shared encoder with a U-Net segmentation decoder and a benign/malignant classifier, every skip
routed through an attention block (C-SMA in the paper). Source: ``ma-dtnet.md``, "Method" and "Ablation models".

``DualTaskNet(encoder=...)`` builds both the paper's network and the ablation models of Tables 3–5:

- ``encoder="resnet34"`` (MA-DTNet): MONAI's 2D ResNet34 (``monai.networks.nets.resnet34`` with a 7×7 stride-2
  stem, as torchvision's; torchvision does not import beside this torch), features f1..f5 of 64@H/2, 64@H/4,
  128@H/8, 256@H/16, 512@H/32. f1..f5 each pass through the skip attention; the attended f5 enters an SMP-style
  U-Net decoder of five blocks (nearest ×2 → concat attended skip → 2 × Conv3×3-BN-ReLU; the fifth block has no
  skip), widths (128, 64, 32, 16, 8); a 3×3 conv gives one logit channel at full resolution.
  MONAI's 1×1 downsample convs carry a bias that torchvision's do not (896 parameters in all); ImageNet weights
  from a torchvision ``resnet34`` state dict load with those biases left at zero (``load_torchvision_encoder``).
- ``encoder="unet"`` (the ablations' "small plain U-Net", base width 16, 5 levels): MONAI's ``BasicUNet``
  blocks (features 16, 32, 64, 128, 256, 16; double 3×3 conv + BN + LeakyReLU, max-pool down, non-trainable
  ×2 upsampling: 1,815,265 parameters, the paper's 1.81 M; transposed-conv upsampling would give 1.95 M), with
  the skip attention on its four skips x0..x3 ("within each skip connection"). ``mhsa`` instead puts a ViT
  encoder block (learned positional embedding sized for 256² input, 4 heads, MLP 4C, pre-norm, residuals) on the
  three deepest maps x2, x3 and the bottleneck x4 (on x1, H/2, the attention matrix would not fit in memory at
  256²): 12C² + 13C + (256/2^k)²·C per map, 1,496,768 in all, so 3,312,033 parameters, Table 3's 3.31 M. A bare
  attention layer with LayerNorm (4C² + 6C) would give 2.16 M.

Table 3 sizes of CA, SMA and C-SMA (paper 1.95 / 1.98 / 1.99 M) are not met and cannot all be met by one reading
of the blocks. Ours, on the four skips (ΣC = 240, ΣC² = 21,760): CA (r = 16, bias-free) adds ΣC²/8 = 2,720
(1,817,985); SMA adds 72C + 24 per skip (6 structuring elements 9C, 6 BN 2C, two 1×1 convs 3C → 1, the 3×3 gate
conv and three BN(1)) = 17,376 (1,832,641); C-SMA both, 20,096 (1,835,361); a 5×5 SE adds 96·ΣC = 23,040. The
same C-SMA on the ResNet34 skips adds 117,880 and, with the classifier (102,593), gives the paper's own MA-DTNet
minus UNet-R34 gap (0.22 M against 22.95 − 22.72 = 0.23 M), so the block definition is the paper's. Within Table
3, C-SMA − SMA = 0.01 M says CA is small, while UNet-CA says it costs 0.14 M; Table 5's 3×3 → 5×5 step of 0.09 M
(0.08–0.10 after rounding) = 96·ΣC implies ΣC ≈ 830–1,040 attended channels, where SMA would cost 72·ΣC ≈ 0.06–
0.08 M, not Table 3's 0.17 M; and Tables 3 and 5 print C-SMA as 1.99 and 1.95 M.

Skip attention: ``none`` | ``ca`` (CBAM channel attention, r = 16) | ``sma`` (morphological spatial gate) |
``csma`` (CA then SMA, ``models/morphology.py``) | ``cbam`` | ``mhsa`` (unet only).

Classifier (``cls_head``) on the raw deepest map (f5 / x4): ``ca`` = CA(C, r=16) → global average pool → FC C→128
→ ReLU → Dropout 0.5 → FC 128→32 → ReLU → Dropout 0.5 → FC 32→1 logit (the official code's head; the card's
"AvgPool 8×8" is the global pool at 256² input, so an adaptive pool keeps smaller inputs working); ``plain``
drops the CA ("ES-MTL" of Table 4); ``none`` gives a segmentation-only network. ``seg_head=False`` gives the
classification-only "UNet Encoder" of Table 4.

``forward(x)`` returns ``(seg_logits B×1×H×W or None, cls_logit B or None)``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .attention import CBAM, ChannelAttention
from .morphology import CSMA, SpatialMorphologicalAttention

__all__ = ["ClassifierHead", "DualTaskNet", "ResNet34Encoder", "UNetDecoder", "load_torchvision_encoder",
           "skip_attention"]

SKIP_ATTENTIONS = ("none", "ca", "sma", "csma", "cbam", "mhsa")
MHSA_INPUT = 256  # the input side the MHSA positional embeddings are sized for (the paper's 256²)


class _MHSA(nn.Module):
    """A ViT encoder block on the H·W positions of a map: a learned positional embedding, then pre-norm multi-head
    self-attention and an MLP of width 4C, each with a residual connection (torch's ``TransformerEncoderLayer``:
    12C² + 13C parameters). The embedding is sized for the paper's 256² input (``grid`` = the map's side there)
    and resized bilinearly for other inputs, as a ViT at another resolution."""

    def __init__(self, channels: int, heads: int = 4, grid: int | None = None):
        super().__init__()
        self.pos = nn.Parameter(torch.zeros(1, channels, grid, grid)) if grid else None
        if self.pos is not None:
            nn.init.trunc_normal_(self.pos, std=0.02)
        self.block = nn.TransformerEncoderLayer(channels, heads, 4 * channels, dropout=0.0, activation="gelu",
                                                batch_first=True, norm_first=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        if self.pos is not None:
            pos = self.pos if self.pos.shape[-2:] == (h, w) else F.interpolate(
                self.pos, size=(h, w), mode="bilinear", align_corners=False)
            x = x + pos
        out = self.block(x.flatten(2).transpose(1, 2))
        return out.transpose(1, 2).reshape(b, c, h, w)


def skip_attention(kind: str, channels: int, rates=(1, 2, 3), se_size: int = 3, reduction: int = 16) -> nn.Module:
    if kind == "none":
        return nn.Identity()
    if kind == "ca":
        return ChannelAttention(channels, reduction)
    if kind == "sma":
        return SpatialMorphologicalAttention(channels, tuple(rates), se_size)
    if kind == "csma":
        return CSMA(channels, reduction, tuple(rates), se_size)
    if kind == "cbam":
        return CBAM(channels, reduction)
    if kind == "mhsa":
        return _MHSA(channels)  # without a positional embedding: the map size is not known here
    raise ValueError(f"unknown skip attention {kind!r} (known: {', '.join(SKIP_ATTENTIONS)})")


_make_attention = skip_attention  # the constructor's argument of the same name shadows it


class ResNet34Encoder(nn.Module):
    """MONAI's 2D ResNet34 without its pool and fc; ``forward`` returns [f1, f2, f3, f4, f5]."""

    channels = (64, 64, 128, 256, 512)

    def __init__(self, in_channels: int = 3):
        super().__init__()
        from monai.networks.nets import resnet34

        net = resnet34(spatial_dims=2, n_input_channels=in_channels, conv1_t_size=7, conv1_t_stride=2,
                       shortcut_type="B", num_classes=1)
        self.conv1, self.bn1, self.act, self.maxpool = net.conv1, net.bn1, net.act, net.maxpool
        self.layer1, self.layer2, self.layer3, self.layer4 = net.layer1, net.layer2, net.layer3, net.layer4

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        f1 = self.act(self.bn1(self.conv1(x)))
        f2 = self.layer1(self.maxpool(f1))
        f3 = self.layer2(f2)
        f4 = self.layer3(f3)
        return [f1, f2, f3, f4, self.layer4(f4)]


def load_torchvision_encoder(encoder: ResNet34Encoder, state: dict) -> ResNet34Encoder:
    """Load a torchvision ``resnet34`` state dict (ImageNet weights a user has) into the MONAI encoder. Key names
    agree; ``fc.*`` is dropped and MONAI's downsample biases stay zero. Anything else missing is an error."""
    state = {k.removeprefix("module."): v for k, v in state.items() if not k.removeprefix("module.").startswith("fc.")}
    own = encoder.state_dict()
    for k in own:
        if k.endswith("downsample.0.bias") and k not in state:
            state[k] = torch.zeros_like(own[k])
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    wrong = sorted(k for k in set(own) & set(state) if tuple(own[k].shape) != tuple(state[k].shape))
    if missing or unexpected or wrong:
        raise ValueError(
            f"not a torchvision resnet34 state dict: {len(missing)} missing, {len(unexpected)} unexpected, "
            f"{len(wrong)} with other shapes (e.g. {(missing + unexpected + wrong)[0]})"
        )
    encoder.load_state_dict(state)
    return encoder


def _conv_bn_relu(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


class UNetDecoder(nn.Module):
    """segmentation_models_pytorch-style U-Net decoder: block i upsamples ×2 (nearest), concatenates the skip of
    that resolution (none for the last block) and applies two Conv3×3-BN-ReLU."""

    def __init__(self, encoder_channels=(64, 64, 128, 256, 512), widths=(128, 64, 32, 16, 8)):
        super().__init__()
        skips = list(encoder_channels[:-1][::-1]) + [0] * (len(widths) - len(encoder_channels) + 1)
        ins = [encoder_channels[-1], *widths[:-1]]
        self.blocks = nn.ModuleList(
            nn.Sequential(_conv_bn_relu(i + s, w), _conv_bn_relu(w, w))
            for i, s, w in zip(ins, skips, widths, strict=True)
        )

    def forward(self, bottom: torch.Tensor, skips: list[torch.Tensor]) -> torch.Tensor:
        """``skips`` from deep to shallow (f4, f3, f2, f1)."""
        x = bottom
        for i, block in enumerate(self.blocks):
            x = F.interpolate(x, scale_factor=2, mode="nearest")
            if i < len(skips):
                x = torch.cat([x, skips[i]], dim=1)
            x = block(x)
        return x


class ClassifierHead(nn.Module):
    """[CA →] global average pool → 128 → 32 → 1 with ReLU and Dropout(0.5) (official MA-DTNet head)."""

    def __init__(self, channels: int = 512, channel_attention: bool = True, dropout: float = 0.5, reduction: int = 16):
        super().__init__()
        self.attention = ChannelAttention(channels, reduction) if channel_attention else nn.Identity()
        self.mlp = nn.Sequential(
            nn.Linear(channels, 128), nn.ReLU(inplace=True), nn.Dropout(dropout),
            nn.Linear(128, 32), nn.ReLU(inplace=True), nn.Dropout(dropout),
            nn.Linear(32, 1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.adaptive_avg_pool2d(self.attention(x), 1).flatten(1)
        return self.mlp(x).squeeze(1)


class DualTaskNet(nn.Module):
    """MA-DTNet (``encoder="resnet34"``, the defaults) and the small-U-Net ablation models (module docstring)."""

    def __init__(
        self,
        encoder: str = "resnet34",
        in_channels: int = 3,
        skip_attention: str = "csma",
        cls_head: str = "ca",
        seg_head: bool = True,
        decoder_widths=(128, 64, 32, 16, 8),
        unet_features=(16, 32, 64, 128, 256, 16),
        rates=(1, 2, 3),
        se_size: int = 3,
        dropout: float = 0.5,
    ):
        super().__init__()
        if skip_attention not in SKIP_ATTENTIONS:
            raise ValueError(f"unknown skip attention {skip_attention!r} (known: {', '.join(SKIP_ATTENTIONS)})")
        if cls_head not in ("none", "plain", "ca"):
            raise ValueError(f"cls_head must be none, plain or ca, got {cls_head!r}")
        if not seg_head and cls_head == "none":
            raise ValueError("a network needs a segmentation or a classification head")
        self.encoder_kind, self.has_seg = encoder, seg_head

        def att(c):
            return _make_attention(skip_attention, c, rates, se_size)

        if encoder == "resnet34":
            if skip_attention == "mhsa":
                raise ValueError("mhsa is defined for the small U-Net ablation only (encoder: unet)")
            self.encoder = ResNet34Encoder(in_channels)
            chans = ResNet34Encoder.channels
            if seg_head:
                self.attentions = nn.ModuleList(att(c) for c in chans)
                self.decoder = UNetDecoder(chans, tuple(decoder_widths))
                self.seg = nn.Conv2d(decoder_widths[-1], 1, 3, padding=1)
            deepest = chans[-1]
        elif encoder == "unet":
            from monai.networks.nets import BasicUNet

            f = tuple(unet_features)
            if len(f) != 6:
                raise ValueError(f"unet_features needs 6 widths (5 levels + the last up block), got {f}")
            base = BasicUNet(
                spatial_dims=2, in_channels=in_channels, out_channels=1, features=f, upsample="nontrainable"
            )
            self.conv_0, self.down_1, self.down_2, self.down_3, self.down_4 = (
                base.conv_0, base.down_1, base.down_2, base.down_3, base.down_4)
            if seg_head:
                self.upcat_4, self.upcat_3, self.upcat_2, self.upcat_1 = (
                    base.upcat_4, base.upcat_3, base.upcat_2, base.upcat_1)
                self.seg = base.final_conv
                if skip_attention == "mhsa":  # x0, x1 plain; x2, x3 and the bottleneck x4 attended
                    self.attentions = nn.ModuleList(
                        [nn.Identity(), nn.Identity(), *(_MHSA(f[k], grid=MHSA_INPUT >> k) for k in (2, 3, 4))]
                    )
                else:  # the four skips; the bottleneck goes straight up
                    self.attentions = nn.ModuleList([*(att(c) for c in f[:4]), nn.Identity()])
            deepest = f[4]
        else:
            raise ValueError(f"encoder must be resnet34 or unet, got {encoder!r}")
        self.classifier = None if cls_head == "none" else ClassifierHead(deepest, cls_head == "ca", dropout)

    def features(self, x: torch.Tensor) -> list[torch.Tensor]:
        if self.encoder_kind == "resnet34":
            return self.encoder(x)
        x0 = self.conv_0(x)
        x1 = self.down_1(x0)
        x2 = self.down_2(x1)
        x3 = self.down_3(x2)
        return [x0, x1, x2, x3, self.down_4(x3)]

    def forward(self, x: torch.Tensor):
        feats = self.features(x)
        cls = self.classifier(feats[-1]) if self.classifier is not None else None
        if not self.has_seg:
            return None, cls
        att = [a(f) for a, f in zip(self.attentions, feats, strict=True)]
        if self.encoder_kind == "resnet34":
            seg = self.seg(self.decoder(att[-1], att[-2::-1]))
        else:
            u = self.upcat_4(att[4], att[3])
            u = self.upcat_3(u, att[2])
            u = self.upcat_2(u, att[1])
            seg = self.seg(self.upcat_1(u, att[0]))
        return seg, cls
