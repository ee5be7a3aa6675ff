"""DVTwin: a siamese (weight-shared) ViT encoder over a stereo pair, gated fusion per stage, U-Net-style decoder to a
disparity map in (0, 1) (endo-depth card).

- Encoder: Conv p×p stride p patch stem (3 → D), fixed 2-D sin-cos position embedding (the paper names none; a
  fixed one works at any input size), ``depth`` post-norm transformer blocks (x = LN(x + MHSA(x)); x = LN(x +
  FFN(x)), FFN 4D with GELU) spread over 4 stages (``depth // 4`` each, the remainder to the first stages); after
  the blocks of stages 1–3 the token grid is max-pooled 2×2, so a 224 input at p = 4 gives grids 56, 28, 14, 7.
  Module names follow timm's ViT (``blocks.i.attn.qkv``, ``attn.proj``, ``norm1``, ``mlp.fc1`` …) so a timm
  ViT-S state dict loads where shapes agree.
- Fusion per stage (``fusion="gated"``): G = σ(Conv1×1(F)), F' = G ⊙ F per branch, F_c = Concat(F'_l, F'_r)
  (2D channels); ``fusion="absdiff"``: F_c = |F_l − F_r| (D channels).
- Decoder, stages 4 → 1 starting from x = F_l⁴: z = Concat(x, F_lⁱ, F_cⁱ); x = Up×2(Conv3×3(ReLU(BN(z)))) +
  Up×2(Conv1×1(z)); widths 256, 128, 64, 32; then bilinear ×(p/2) to the input size and the head σ(Conv3×3).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def sincos_2d(h: int, w: int, dim: int, device=None) -> torch.Tensor:
    """(h·w, dim) fixed 2-D sin-cos position embedding (MAE's form: half the channels for rows, half for columns)."""
    if dim % 4:
        raise ValueError(f"embedding width {dim} must be a multiple of 4 for the 2-D sin-cos position embedding")
    q = dim // 4
    omega = 1.0 / 10000 ** (torch.arange(q, dtype=torch.float32, device=device) / q)
    ys, xs = torch.meshgrid(torch.arange(h, dtype=torch.float32, device=device),
                            torch.arange(w, dtype=torch.float32, device=device), indexing="ij")
    out = [torch.sin(ys.reshape(-1, 1) * omega), torch.cos(ys.reshape(-1, 1) * omega),
           torch.sin(xs.reshape(-1, 1) * omega), torch.cos(xs.reshape(-1, 1) * omega)]
    return torch.cat(out, 1)


class Attention(nn.Module):
    def __init__(self, dim: int, heads: int):
        super().__init__()
        if dim % heads:
            raise ValueError(f"embedding width {dim} is not divisible by {heads} heads")
        self.heads = heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x):
        b, n, d = x.shape
        q, k, v = self.qkv(x).reshape(b, n, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        y = F.scaled_dot_product_attention(q, k, v)
        return self.proj(y.transpose(1, 2).reshape(b, n, d))


class Mlp(nn.Module):
    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.fc1, self.act, self.fc2 = nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim)

    def forward(self, x):
        return self.fc2(self.act(self.fc1(x)))


class Block(nn.Module):
    """Post-norm transformer block, as the paper writes it."""

    def __init__(self, dim: int, heads: int, mlp_ratio: float = 4.0):
        super().__init__()
        self.attn, self.norm1 = Attention(dim, heads), nn.LayerNorm(dim)
        self.mlp, self.norm2 = Mlp(dim, int(dim * mlp_ratio)), nn.LayerNorm(dim)

    def forward(self, x):
        x = self.norm1(x + self.attn(x))
        return self.norm2(x + self.mlp(x))


class PatchEmbed(nn.Module):
    def __init__(self, patch: int, dim: int):
        super().__init__()
        self.proj = nn.Conv2d(3, dim, patch, stride=patch)

    def forward(self, x):
        return self.proj(x)


class Encoder(nn.Module):
    """One branch: (B, 3, H, W) → four stage maps (B, D, H/p, W/p), (… /2), (… /4), (… /8)."""

    def __init__(self, patch: int = 4, dim: int = 384, depth: int = 4, heads: int = 6, mlp_ratio: float = 4.0):
        super().__init__()
        if depth < 4:
            raise ValueError(f"depth {depth}: DVTwin needs at least one block per stage (4)")
        self.patch, self.dim = patch, dim
        self.patch_embed = PatchEmbed(patch, dim)
        self.blocks = nn.ModuleList(Block(dim, heads, mlp_ratio) for _ in range(depth))
        self.stage_blocks = [depth // 4 + (i < depth % 4) for i in range(4)]

    def forward(self, x):
        x = self.patch_embed(x)
        b, d, h, w = x.shape
        feats, i = [], 0
        for s, n in enumerate(self.stage_blocks):
            h, w = x.shape[-2:]
            t = x.flatten(2).transpose(1, 2) + sincos_2d(h, w, d, x.device).to(x.dtype)
            for blk in self.blocks[i:i + n]:
                t = blk(t)
            i += n
            x = t.transpose(1, 2).reshape(b, d, h, w)
            feats.append(x)
            if s < 3:
                x = F.max_pool2d(x, 2)
        return feats


class GatedFusion(nn.Module):
    def __init__(self, dim: int, mode: str = "gated"):
        super().__init__()
        self.mode = mode
        if mode == "gated":
            self.w_l, self.w_r = nn.Conv2d(dim, dim, 1), nn.Conv2d(dim, dim, 1)
        elif mode != "absdiff":
            raise ValueError(f"fusion '{mode}' is not gated or absdiff")

    @property
    def out_channels_factor(self) -> int:
        return 2 if self.mode == "gated" else 1

    def forward(self, fl, fr):
        if self.mode == "absdiff":
            return (fl - fr).abs()
        return torch.cat([torch.sigmoid(self.w_l(fl)) * fl, torch.sigmoid(self.w_r(fr)) * fr], 1)


class UpStage(nn.Module):
    """x = Up×2(Conv3×3(ReLU(BN(z)))) + Up×2(Conv1×1(z))."""

    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.bn, self.conv = nn.BatchNorm2d(cin), nn.Conv2d(cin, cout, 3, padding=1)
        self.skip = nn.Conv2d(cin, cout, 1)

    def forward(self, z):
        up = lambda t: F.interpolate(t, scale_factor=2, mode="bilinear", align_corners=False)  # noqa: E731
        return up(self.conv(F.relu(self.bn(z)))) + up(self.skip(z))


class DVTwin(nn.Module):
    def __init__(self, patch: int = 4, dim: int = 384, depth: int = 4, heads: int = 6, mlp_ratio: float = 4.0,
                 fusion: str = "gated", decoder: tuple[int, ...] = (256, 128, 64, 32)):
        super().__init__()
        if len(decoder) != 4:
            raise ValueError("the decoder has four stages")
        self.encoder = Encoder(patch, dim, depth, heads, mlp_ratio)
        self.fusion = nn.ModuleList(GatedFusion(dim, fusion) for _ in range(4))
        fc = dim * self.fusion[0].out_channels_factor
        ups, cin = [], dim
        for cout in decoder:
            ups.append(UpStage(cin + dim + fc, cout))
            cin = cout
        self.decoder = nn.ModuleList(ups)
        self.head = nn.Conv2d(decoder[-1], 1, 3, padding=1)

    def forward(self, left, right):
        """(B, 3, H, W) left and right (H, W multiples of 8·p) → disparity (B, 1, H, W) in (0, 1)."""
        n = left.shape[0]
        feats = self.encoder(torch.cat([left, right]))  # the siamese branches: one encoder, both views in one batch
        fl, fr = [f[:n] for f in feats], [f[n:] for f in feats]
        fc = [fuse(a, b) for fuse, a, b in zip(self.fusion, fl, fr, strict=True)]
        x = fl[3]
        for up, i in zip(self.decoder, (3, 2, 1, 0), strict=True):
            if x.shape[-2:] != fl[i].shape[-2:]:
                x = F.interpolate(x, size=fl[i].shape[-2:], mode="bilinear", align_corners=False)
            x = up(torch.cat([x, fl[i], fc[i]], 1))
        x = F.interpolate(x, size=left.shape[-2:], mode="bilinear", align_corners=False)
        return torch.sigmoid(self.head(x))


def dvtwin(**kw) -> DVTwin:
    """The card's default: p = 4, D = 384, 4 blocks, 6 heads, gated fusion."""
    return DVTwin(**kw)


def load_timm_vit(encoder: Encoder, state: dict) -> tuple[int, int, list[str]]:
    """Copy the tensors of a timm ViT state dict whose names and shapes match this encoder's (``blocks.i.*``,
    ``patch_embed.proj.*`` when the patch size agrees); returns (loaded, total, names skipped)."""
    own = encoder.state_dict()
    usable = {k: v for k, v in state.items() if k in own and tuple(own[k].shape) == tuple(v.shape)}
    encoder.load_state_dict(usable, strict=False)
    return len(usable), len(own), sorted(set(own) - set(usable))


def input_multiple(patch: int) -> int:
    return 8 * patch


def check_size(size: int, patch: int) -> None:
    if size % input_multiple(patch):
        raise ValueError(f"input size {size} is not a multiple of {input_multiple(patch)} (8 × patch {patch})")



