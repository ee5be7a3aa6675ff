"""DuAT (Tang et al., PRCV 2023): a PVTv2-B2 encoder, Global-to-Local Spatial Aggregation (GLSA) on encoder stages
2–4 and a Selective Boundary Aggregation (SBA) decoder; two logit maps (a coarse one from the fused GLSA features at
1/8, upsampled ×8, and the SBA map at 1/4, upsampled ×4), as the official code (Barrett-python/DuAT, ``lib/DuAT.py``).

The PVTv2-B2 encoder is written out here (the official ``lib/pvtv2.py`` structure and parameter names, so an
ImageNet ``pvt_v2_b2`` state dict loads into ``DuAT.backbone``); timm's implementation needs torchvision, which this
project does not install. Stochastic depth comes from MONAI (``DropPath``). mmcv's initialisers are replaced by the
same torch ones (kaiming fan-in for the attention-pooling mask, zeros for the last layer of the channel branch).
"""

from __future__ import annotations

import math
from functools import partial

import torch
import torch.nn.functional as F
from monai.networks.layers import DropPath
from torch import nn


# -- PVTv2 ---------------------------------------------------------------------------------------------------------
def _init(m: nn.Module) -> None:
    if isinstance(m, nn.Linear):
        nn.init.trunc_normal_(m.weight, std=0.02)
        if m.bias is not None:
            nn.init.zeros_(m.bias)
    elif isinstance(m, nn.LayerNorm):
        nn.init.ones_(m.weight)
        nn.init.zeros_(m.bias)
    elif isinstance(m, nn.Conv2d):
        fan_out = m.kernel_size[0] * m.kernel_size[1] * m.out_channels // m.groups
        nn.init.normal_(m.weight, 0, math.sqrt(2.0 / fan_out))
        if m.bias is not None:
            nn.init.zeros_(m.bias)


class DWConv(nn.Module):
    def __init__(self, dim: int):
        super().__init__()
        self.dwconv = nn.Conv2d(dim, dim, 3, 1, 1, bias=True, groups=dim)

    def forward(self, x, h, w):
        b, n, c = x.shape
        return self.dwconv(x.transpose(1, 2).reshape(b, c, h, w)).flatten(2).transpose(1, 2)


class Mlp(nn.Module):
    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.fc1, self.dwconv, self.act = nn.Linear(dim, hidden), DWConv(hidden), nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x, h, w):
        return self.fc2(self.act(self.dwconv(self.fc1(x), h, w)))


class Attention(nn.Module):
    """Spatial-reduction attention: keys and values from the map downsampled by ``sr_ratio``."""

    def __init__(self, dim: int, num_heads: int, sr_ratio: int):
        super().__init__()
        self.num_heads, self.scale, self.sr_ratio = num_heads, (dim // num_heads) ** -0.5, sr_ratio
        self.q, self.kv, self.proj = nn.Linear(dim, dim), nn.Linear(dim, 2 * dim), nn.Linear(dim, dim)
        if sr_ratio > 1:
            self.sr = nn.Conv2d(dim, dim, sr_ratio, stride=sr_ratio)
            self.norm = nn.LayerNorm(dim)

    def forward(self, x, h, w):
        b, n, c = x.shape
        q = self.q(x).reshape(b, n, self.num_heads, c // self.num_heads).transpose(1, 2)
        if self.sr_ratio > 1:
            x = self.norm(self.sr(x.transpose(1, 2).reshape(b, c, h, w)).flatten(2).transpose(1, 2))
        k, v = self.kv(x).reshape(b, -1, 2, self.num_heads, c // self.num_heads).permute(2, 0, 3, 1, 4)
        attn = ((q @ k.transpose(-2, -1)) * self.scale).softmax(-1)
        return self.proj((attn @ v).transpose(1, 2).reshape(b, n, c))


class Block(nn.Module):
    def __init__(self, dim, num_heads, mlp_ratio, sr_ratio, drop_path, norm_layer):
        super().__init__()
        self.norm1, self.attn = norm_layer(dim), Attention(dim, num_heads, sr_ratio)
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()
        self.norm2, self.mlp = norm_layer(dim), Mlp(dim, int(dim * mlp_ratio))

    def forward(self, x, h, w):
        x = x + self.drop_path(self.attn(self.norm1(x), h, w))
        return x + self.drop_path(self.mlp(self.norm2(x), h, w))


class OverlapPatchEmbed(nn.Module):
    def __init__(self, patch_size, stride, in_chans, embed_dim):
        super().__init__()
        self.proj = nn.Conv2d(in_chans, embed_dim, patch_size, stride=stride, padding=patch_size // 2)
        self.norm = nn.LayerNorm(embed_dim)

    def forward(self, x):
        x = self.proj(x)
        _, _, h, w = x.shape
        return self.norm(x.flatten(2).transpose(1, 2)), h, w


class PVTv2(nn.Module):
    """PVTv2 feature pyramid (strides 4, 8, 16, 32); default widths and depths are B2's."""

    def __init__(self, in_chans=3, embed_dims=(64, 128, 320, 512), num_heads=(1, 2, 5, 8), mlp_ratios=(8, 8, 4, 4),
                 depths=(3, 4, 6, 3), sr_ratios=(8, 4, 2, 1), drop_path_rate=0.1):
        super().__init__()
        norm = partial(nn.LayerNorm, eps=1e-6)
        dpr = torch.linspace(0, drop_path_rate, sum(depths)).tolist()
        cur = 0
        for i in range(4):
            setattr(self, f"patch_embed{i + 1}", OverlapPatchEmbed(7 if i == 0 else 3, 4 if i == 0 else 2,
                                                                   in_chans if i == 0 else embed_dims[i - 1],
                                                                   embed_dims[i]))
            setattr(self, f"block{i + 1}", nn.ModuleList(
                Block(embed_dims[i], num_heads[i], mlp_ratios[i], sr_ratios[i], dpr[cur + j], norm)
                for j in range(depths[i])))
            setattr(self, f"norm{i + 1}", norm(embed_dims[i]))
            cur += depths[i]
        self.apply(_init)

    def forward(self, x):
        outs = []
        for i in range(1, 5):
            x, h, w = getattr(self, f"patch_embed{i}")(x)
            for blk in getattr(self, f"block{i}"):
                x = blk(x, h, w)
            x = getattr(self, f"norm{i}")(x).reshape(x.shape[0], h, w, -1).permute(0, 3, 1, 2).contiguous()
            outs.append(x)
        return outs


# -- DuAT's modules ------------------------------------------------------------------------------------------------
class BasicConv2d(nn.Sequential):
    def __init__(self, cin, cout, k, stride=1, padding=0):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, k, stride=stride, padding=padding, bias=False)
        self.bn = nn.BatchNorm2d(cout)
        self.relu = nn.ReLU(inplace=True)


def _up(x, size):
    return F.interpolate(x, size=size, mode="bilinear", align_corners=False)


class ContextBlock(nn.Module):
    """GCNet's global context block with attention pooling and a channel-multiplicative fusion (the global half)."""

    def __init__(self, inplanes: int, ratio: float):
        super().__init__()
        planes = int(inplanes * ratio)
        self.conv_mask = nn.Conv2d(inplanes, 1, 1)
        self.softmax = nn.Softmax(dim=2)
        self.channel_mul_conv = nn.Sequential(nn.Conv2d(inplanes, planes, 1), nn.LayerNorm([planes, 1, 1]),
                                              nn.ReLU(inplace=True), nn.Conv2d(planes, inplanes, 1))
        nn.init.kaiming_normal_(self.conv_mask.weight, mode="fan_in", nonlinearity="relu")
        nn.init.zeros_(self.conv_mask.bias)
        nn.init.zeros_(self.channel_mul_conv[-1].weight)
        nn.init.zeros_(self.channel_mul_conv[-1].bias)

    def forward(self, x):
        b, c, h, w = x.shape
        mask = self.softmax(self.conv_mask(x).view(b, 1, h * w)).unsqueeze(-1)
        context = torch.matmul(x.view(b, 1, c, h * w), mask).view(b, c, 1, 1)
        return x + x * torch.sigmoid(self.channel_mul_conv(context))


class _Unused(nn.Module):
    """Named layers that the official code builds and never calls (their weights are in its checkpoints)."""

    def __init__(self, *layers, names):
        super().__init__()
        for n, layer in zip(names, layers, strict=True):
            setattr(self, n, layer)


class ConvBranch(nn.Module):
    """The local half: 1×1 / depthwise 3×3 residual convolutions ending in a sigmoid spatial gate."""

    def __init__(self, dim: int):
        super().__init__()

        def cbr(k, act=nn.ReLU):
            return nn.Sequential(nn.Conv2d(dim, dim, k, padding=k // 2, groups=dim if k == 3 else 1, bias=False),
                                 nn.BatchNorm2d(dim), act(inplace=True))

        self.conv1, self.conv2, self.conv3, self.conv4 = cbr(1), cbr(3), cbr(1), cbr(3)
        self.conv5, self.conv6 = cbr(1, nn.SiLU), cbr(3)
        self.conv7 = nn.Sequential(nn.Conv2d(dim, dim, 1, bias=False), nn.ReLU(inplace=True))
        # built but never called in the official forward; kept so that its parameters and state dict are the same
        self.ca = _Unused(nn.Conv2d(64, 4, 1, bias=False), nn.Conv2d(4, 64, 1, bias=False), names=("fc1", "fc2"))
        self.sa = _Unused(nn.Conv2d(2, 1, 7, padding=3, bias=False), names=("conv1",))

    def forward(self, x):
        y = self.conv1(x)
        y = self.conv3(y + self.conv2(y))
        y = self.conv5(y + self.conv4(y))
        y = self.conv7(y + self.conv6(y))
        return x + x * torch.sigmoid(y)


class GLSA(nn.Module):
    """Split the channels in two: a local branch and a global-context branch, each to ``embed_dim``; concatenated
    and fused by a 1×1 conv."""

    def __init__(self, input_dim: int, embed_dim: int = 32):
        super().__init__()
        self.conv1_1 = BasicConv2d(2 * embed_dim, embed_dim, 1)
        self.conv1_1_1 = BasicConv2d(input_dim // 2, embed_dim, 1)  # unused in the official forward, as there
        self.local_11conv = nn.Conv2d(input_dim // 2, embed_dim, 1)
        self.global_11conv = nn.Conv2d(input_dim // 2, embed_dim, 1)
        self.GlobelBlock = ContextBlock(embed_dim, ratio=2)
        self.local = ConvBranch(embed_dim)

    def forward(self, x):
        x0, x1 = x.chunk(2, dim=1)
        return self.conv1_1(torch.cat([self.local(self.local_11conv(x0)), self.GlobelBlock(self.global_11conv(x1))], 1))


class SBA(nn.Module):
    """Selective boundary aggregation of a high-level (semantic) and a low-level (boundary) feature map."""

    def __init__(self, input_dim: int = 32):
        super().__init__()
        half = input_dim // 2
        self.d_in1, self.d_in2 = BasicConv2d(half, half, 1), BasicConv2d(half, half, 1)
        self.conv = nn.Sequential(BasicConv2d(input_dim, input_dim, 3, 1, 1), nn.Conv2d(input_dim, 1, 1, bias=False))
        self.fc1 = nn.Conv2d(input_dim, half, 1, bias=False)
        self.fc2 = nn.Conv2d(input_dim, half, 1, bias=False)

    def forward(self, high, low):
        low, high = self.fc1(low), self.fc2(high)
        g_low, g_high = torch.sigmoid(low), torch.sigmoid(high)
        low, high = self.d_in1(low), self.d_in2(high)
        low = low + low * g_low + (1 - g_low) * _up(g_high * high, low.shape[2:])
        high = high + high * g_high + (1 - g_high) * _up(g_low * low, high.shape[2:])
        return self.conv(torch.cat([_up(high, low.shape[2:]), low], dim=1))


class DuAT(nn.Module):
    """``forward(x)`` → ``(coarse, sba)`` logit maps at the input size (input sides: multiples of 32)."""

    def __init__(self, in_channels: int = 3, dim: int = 32, dims=(64, 128, 320, 512)):
        super().__init__()
        self.backbone = PVTv2(in_chans=in_channels, embed_dims=dims)
        self.GLSA_c4, self.GLSA_c3, self.GLSA_c2 = GLSA(dims[3], dim), GLSA(dims[2], dim), GLSA(dims[1], dim)
        self.L_feature = BasicConv2d(dims[0], dim, 3, 1, 1)
        self.SBA = SBA(dim)
        self.fuse = BasicConv2d(2 * dim, dim, 1)
        self.fuse2 = nn.Sequential(BasicConv2d(3 * dim, dim, 1, 1), nn.Conv2d(dim, 1, 1, bias=False))

    def forward(self, x):
        c1, c2, c3, c4 = self.backbone(x)
        g4 = _up(self.GLSA_c4(c4), c3.shape[2:])
        g3, g2 = self.GLSA_c3(c3), self.GLSA_c2(c2)
        coarse = self.fuse2(torch.cat([_up(g4, c2.shape[2:]), _up(g3, c2.shape[2:]), g2], dim=1))
        high = _up(self.fuse(torch.cat([g4, g3], dim=1)), c2.shape[2:])
        sba = self.SBA(high, self.L_feature(c1))
        return (F.interpolate(coarse, scale_factor=8, mode="bilinear"),
                F.interpolate(sba, scale_factor=4, mode="bilinear"))
