"""MedViT (Manzari et al., Computers in Biology and Medicine 2023), written from the paper's description: a hybrid
CNN-transformer in the Next-ViT layout, used by the CycleAdvGAN paper as a transfer source and target (MedViT-S).

- Stem: four Conv 3×3 → BN → ReLU (64 s2, 32, 64, 64 s2).
- Four stages (strides 1, 2, 2, 2) of Efficient Convolution Blocks (ECB) with one Local Transformer Block (LTB)
  closing each stage after the first ("Next hybrid strategy"); stage 3 repeats [ECB ×4, LTB]. MedViT-S: depths
  (3, 4, 10, 3), widths 96 | 192 … 256 | 384 … 512 | 768 … 1024, head dimension 32.
- ECB: patch embedding (2×2 average pool for stride 2, then 1×1 conv + BN when the width changes), x + MHCA(x)
  (multi-head convolutional attention: grouped 3×3 conv with one group per head → BN → ReLU → 1×1 projection),
  then x + LFFN(BN(x)).
- LTB: patch embedding to 3/4 of the width (rounded to a multiple of 32), x + E-MHSA(BN(x)) (efficient multi-head
  self-attention: keys and values from tokens average-pooled by sr² with sr = 8, 4, 2, 1 per stage, then BN),
  then an MHCA branch on a 1×1 projection to the remaining width, concatenated, then x + LFFN(BN(x)).
- LFFN (locally enhanced feed-forward): 1×1 expand (×3 in an ECB, ×2 in an LTB) → BN → h-swish → depthwise 3×3 →
  BN → h-swish → squeeze-excitation (hidden width / block width units, h-sigmoid gate) → 1×1 → BN, with its own
  residual, so the block adds it twice (as the public code does).
- Head: BN → global average pool → Linear(1024 → C). Stochastic depth grows linearly to 0.1 (MedViT-S).

The Patch Moment Changer augmentation of the paper's training is not part of the network and is not used here.
Parameters: 32,161,440 for MedViT-S at 1000 classes, 31,136,440 for its backbone (``num_classes=None``); this
is the count of the layout above, which follows the authors' public MedViT_small definition; no parameter count
from the paper itself was at hand to check it against.
"""

from __future__ import annotations

import torch
from monai.networks.layers import DropPath
from torch import nn

EPS = 1e-5


def _div(v: float, d: int = 32) -> int:
    """Round to a multiple of ``d`` without dropping more than 10 % (MobileNet's rule)."""
    n = max(d, int(v + d / 2) // d * d)
    return n + d if n < 0.9 * v else n


def conv_bn_relu(cin: int, cout: int, stride: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout, eps=EPS),
                         nn.ReLU(inplace=True))


class PatchEmbed(nn.Sequential):
    """2×2 average pool for stride 2, then 1×1 conv + BN when the width changes (or after a pool)."""

    def __init__(self, cin: int, cout: int, stride: int = 1):
        layers = [nn.AvgPool2d(2, 2, ceil_mode=True, count_include_pad=False)] if stride == 2 else []
        if stride == 2 or cin != cout:
            layers += [nn.Conv2d(cin, cout, 1, bias=False), nn.BatchNorm2d(cout, eps=EPS)]
        super().__init__(*layers)


class MHCA(nn.Sequential):
    """Multi-head convolutional attention: grouped 3×3 conv (one group per head) → BN → ReLU → 1×1 projection."""

    def __init__(self, c: int, head_dim: int):
        super().__init__(nn.Conv2d(c, c, 3, 1, 1, groups=c // head_dim, bias=False), nn.BatchNorm2d(c, eps=EPS),
                         nn.ReLU(inplace=True), nn.Conv2d(c, c, 1, bias=False))


class SqueezeExcite(nn.Module):
    def __init__(self, c: int, reduction: int):
        super().__init__()
        self.fc = nn.Sequential(nn.Linear(c, c // reduction), nn.ReLU(inplace=True), nn.Linear(c // reduction, c),
                                nn.Hardsigmoid())

    def forward(self, x):
        return x * self.fc(x.mean((2, 3)))[:, :, None, None]


class LFFN(nn.Module):
    """Locally enhanced feed-forward with its own residual: x + (1×1 → dw 3×3 → SE → 1×1)(x)."""

    def __init__(self, c: int, expand: int):
        super().__init__()
        h = c * expand
        self.conv = nn.Sequential(nn.Conv2d(c, h, 1, bias=False), nn.BatchNorm2d(h), nn.Hardswish(),
                                  nn.Conv2d(h, h, 3, 1, 1, groups=h, bias=False), nn.BatchNorm2d(h), nn.Hardswish(),
                                  SqueezeExcite(h, reduction=c), nn.Conv2d(h, c, 1, bias=False), nn.BatchNorm2d(c))

    def forward(self, x):
        return x + self.conv(x)


class ECB(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int = 1, drop_path: float = 0.0, head_dim: int = 32):
        super().__init__()
        self.patch_embed = PatchEmbed(cin, cout, stride)
        self.mhca = MHCA(cout, head_dim)
        self.drop = DropPath(drop_path)
        self.norm = nn.BatchNorm2d(cout, eps=EPS)
        self.ffn = LFFN(cout, 3)

    def forward(self, x):
        x = self.patch_embed(x)
        x = x + self.drop(self.mhca(x))
        return x + self.ffn(self.norm(x))


class EMHSA(nn.Module):
    """Multi-head self-attention whose keys and values come from tokens average-pooled by ``sr``² (then BN)."""

    def __init__(self, dim: int, head_dim: int = 32, sr: int = 1):
        super().__init__()
        self.heads = dim // head_dim
        self.q, self.k, self.v, self.proj = (nn.Linear(dim, dim) for _ in range(4))
        self.pool = nn.Sequential(nn.AvgPool1d(sr * sr, sr * sr), nn.BatchNorm1d(dim, eps=EPS)) if sr > 1 else None

    def forward(self, x):  # x (B, N, C)
        kv = x if self.pool is None else self.pool(x.transpose(1, 2)).transpose(1, 2)

        def split(t):
            return t.unflatten(-1, (self.heads, -1)).transpose(1, 2)

        out = nn.functional.scaled_dot_product_attention(split(self.q(x)), split(self.k(kv)), split(self.v(kv)))
        return self.proj(out.transpose(1, 2).flatten(2))


class LTB(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int = 1, sr: int = 1, drop_path: float = 0.0,
                 head_dim: int = 32, mix: float = 0.75):
        super().__init__()
        c_sa = _div(int(cout * mix))
        self.patch_embed = PatchEmbed(cin, c_sa, stride)
        self.norm1 = nn.BatchNorm2d(c_sa, eps=EPS)
        self.e_mhsa = EMHSA(c_sa, head_dim, sr)
        self.drop_sa = DropPath(drop_path * mix)
        self.projection = PatchEmbed(c_sa, cout - c_sa)
        self.mhca = MHCA(cout - c_sa, head_dim)
        self.drop_ca = DropPath(drop_path * (1 - mix))
        self.norm2 = nn.BatchNorm2d(cout, eps=EPS)
        self.ffn = LFFN(cout, 2)

    def forward(self, x):
        x = self.patch_embed(x)
        b, c, h, w = x.shape
        sa = self.e_mhsa(self.norm1(x).flatten(2).transpose(1, 2))
        x = x + self.drop_sa(sa.transpose(1, 2).reshape(b, c, h, w))
        ca = self.projection(x)
        x = torch.cat([x, ca + self.drop_ca(self.mhca(ca))], 1)
        return x + self.ffn(self.norm2(x))


class MedViT(nn.Module):
    """x (N, 3, H, W), normalised, H and W divisible by 32 → logits (N, C), or pooled features (N, 1024) when
    ``num_classes`` is None."""

    def __init__(self, depths=(3, 4, 10, 3), stem=(64, 32, 64), num_classes: int | None = 1000,
                 drop_path: float = 0.1, head_dim: int = 32, sr_ratios=(8, 4, 2, 1)):
        super().__init__()
        widths = [[96] * depths[0], [192] * (depths[1] - 1) + [256], [384, 384, 384, 384, 512] * (depths[2] // 5),
                  [768] * (depths[3] - 1) + [1024]]
        kinds = [["ecb"] * depths[0], ["ecb"] * (depths[1] - 1) + ["ltb"], ["ecb"] * 4 + ["ltb"],
                 ["ecb"] * (depths[3] - 1) + ["ltb"]]
        kinds[2] = kinds[2] * (depths[2] // 5)
        self.stem = nn.Sequential(conv_bn_relu(3, stem[0], 2), conv_bn_relu(stem[0], stem[1], 1),
                                  conv_bn_relu(stem[1], stem[2], 1), conv_bn_relu(stem[2], stem[2], 2))
        rates = [drop_path * k / max(1, sum(depths) - 1) for k in range(sum(depths))]
        blocks, cin, i = [], stem[2], 0
        for s, (ws, ks) in enumerate(zip(widths, kinds, strict=True)):
            for j, (w, k) in enumerate(zip(ws, ks, strict=True)):
                stride = 2 if s > 0 and j == 0 else 1
                blocks.append(ECB(cin, w, stride, rates[i], head_dim) if k == "ecb"
                              else LTB(cin, w, stride, sr_ratios[s], rates[i], head_dim))
                cin, i = w, i + 1
        self.features = nn.Sequential(*blocks)
        self.norm = nn.BatchNorm2d(cin, eps=EPS)
        self.head = nn.Linear(cin, num_classes) if num_classes else nn.Identity()
        for m in self.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                nn.init.trunc_normal_(m.weight, std=0.02)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.norm(self.features(self.stem(x))).mean((2, 3)))


def medvit_s(num_classes: int | None = 1000, **kw) -> MedViT:
    """MedViT-S: depths (3, 4, 10, 3), stochastic depth 0.1."""
    return MedViT((3, 4, 10, 3), num_classes=num_classes, **kw)
