"""SEANet (CTformer + Spectral Residual Units), SEANet² (RED-CNN + SRUs) and their baselines, for 2D LDCT denoising.

Source: ``seanet.md``, section "Method"; the backbone follows CTformer (Wang et al. 2023, ``CTformer.py``) and the
Token-Performer of T2T-ViT; the spectral transform follows FFC (Chi et al. 2020) as LaMa implements it.

Every network maps a (B, 1, H, W) image in normalised units ((HU + 1024) / 4096) to the denoised image in the same
units, by residual learning (CTformer / SEANet / UNet: ŷ = x − n̂; RED-CNN: its input → output shortcut).

- ``SEANet(sru=True)``: CTformer whose skips run through SRUs. With ``sru=False`` it *is* CTformer (the same
  parameter names, so a CTformer's weights load into SEANet with the SRUs left at zero, and a SEANet whose SRU
  branches are all zero computes exactly CTformer's output).
  Shapes for a 64×64 patch and dilation (2, 1, 1, 2): I2T ``Unfold(7, stride 2)`` → 29×29 = 841 tokens of 49;
  DM1 performer → 64; roll(+2, +2); ``Unfold(3, dilation 2)`` → 25×25 = 625 tokens of 576; DM2 performer → 64;
  roll; ``Unfold(3)`` → 23×23 = 529 tokens of 576 → Linear → E; a fixed sinusoidal position table, ``depth`` ViT
  blocks, LayerNorm; then the mirror image with Fold and roll(−2, −2), each decoder level adding its skip.
  The grids follow Eq. 5 (``grid``), so other dilations (the ablation's [3, 1, 1, 3], [3, 2, 2, 3]) and other
  patch sizes work; the decoder's dilations must mirror the encoder's.
- ``SRU``: split the C channels into c_l = C − round(ratio·C) local and c_g = round(ratio·C) global ones; local:
  Conv3×3 + BN + ReLU; global: ``SpectralTransform`` (Conv1×1 c_g → c_r = c_g // 2 + BN + ReLU = u, then
  Conv1×1 c_r → c_g of FU(u) + LFU(u) + u); the two are concatenated back to C channels (FM^syn). A skip becomes
  ``s + Lin(SRU(s))`` with Lin a Conv1×1 C → C (``SpectralSkip``).
- ``FourierUnit``: optional resize, ``rfft2(norm="ortho")``, real and imaginary parts as channels, a 2-channel
  spectral position code (row and column frequency, each 0…1), Conv1×1 → 2·c_out + BN + ReLU, ``irfft2`` back to
  the input size, resize back. The LFU takes the first c_r // 4 channels, zero-pads odd sides to even, folds the
  four quadrants into channels, applies a FourierUnit (4·(c_r // 4) → c_r), tiles 2×2 and crops.
- ``REDCNN(sru=...)``: 5 Conv2d(k5, 96, no padding) + 5 ConvTranspose2d(k5) with shortcuts input → output,
  conv2 → after tconv3 and conv4 → after tconv1, a final ReLU (Chen et al. 2017, SSinyu/RED-CNN). With
  ``sru=True`` (SEANet²) the two 96-channel shortcuts become ``s + Lin(SRU(s))`` (c_l 29, c_g 67).
- ``ResidualUNet``: MONAI ``BasicUNet`` (2D, 1 → 1 channel) predicting the noise, ŷ = x − n̂.

Choices where the sources leave room (also in the pipeline's docstring):

- The performer's random-feature matrix and the position table are buffers, not parameters (CTformer keeps them
  as frozen parameters); they are stored with the weights (the random matrix) or rebuilt (the table).
- The spectral position code is added in both the FU and the LFU; convolutions followed by BatchNorm, and the
  transform's last Conv1×1, have no bias (LaMa); the SRU's Lin has one.
- ``fourier="encoder" | "decoder" | "both"`` (Table 2's "Fourier E / D / E-D"): the Token-Performers of the DMs,
  the IDMs or both replace their MLP by a FourierUnit on the token map (the card's reading; CTformer's units have
  no convolutions to replace).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["FourierUnit", "SpectralTransform", "SRU", "SpectralSkip", "TokenPerformer", "SEANet", "REDCNN",
           "ResidualUNet", "grid", "ctformer", "seanet", "redcnn", "seanet2", "sru_channels", "zero_noise_estimate"]


def grid(size: int, kernel: int, dilation: int = 1, stride: int = 1) -> int:
    """Side of the block grid an Unfold makes of a size² map (Eq. 5, one dimension)."""
    return (size - dilation * (kernel - 1) - 1) // stride + 1


def sru_channels(channels: int, global_ratio: float) -> tuple[int, int]:
    """(c_l, c_g) of an SRU: c_g = round(ratio · C), c_l = C − c_g (3L7G on 64: 19 and 45; on 96: 29 and 67)."""
    cg = int(round(global_ratio * channels))
    return channels - cg, cg


# -- spectral blocks (FFC / LaMa) -------------------------------------------------------------------------------
class FourierUnit(nn.Module):
    """Conv1×1 + BN + ReLU in the 2D Fourier domain of a (B, C, H, W) map; output (B, out_channels, H, W)."""

    def __init__(self, in_channels: int, out_channels: int, pos_encoding: bool = True,
                 scale_factor: float | None = None,
                 mode: str = "bilinear"):
        super().__init__()
        self.pos_encoding, self.scale_factor, self.mode = pos_encoding, scale_factor, mode
        self.conv = nn.Conv2d(2 * in_channels + (2 if pos_encoding else 0), 2 * out_channels, 1, bias=False)
        self.bn = nn.BatchNorm2d(2 * out_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        size = x.shape[-2:]
        if self.scale_factor not in (None, 1, 1.0):
            x = F.interpolate(x, scale_factor=self.scale_factor, mode=self.mode, align_corners=False)
        b, _, h, w = x.shape
        f = torch.fft.rfft2(x.float(), norm="ortho")  # (B, C, H, W//2+1), complex
        f = torch.stack((f.real, f.imag), dim=2).reshape(b, -1, h, f.shape[-1])  # (B, 2C, …): re, im per channel
        if self.pos_encoding:
            fh, fw = f.shape[-2:]
            rows = torch.linspace(0, 1, fh, device=x.device, dtype=f.dtype)[None, None, :, None].expand(b, 1, fh, fw)
            cols = torch.linspace(0, 1, fw, device=x.device, dtype=f.dtype)[None, None, None, :].expand(b, 1, fh, fw)
            f = torch.cat((rows, cols, f), dim=1)
        f = F.relu(self.bn(self.conv(f.to(x.dtype))))
        f = f.float().reshape(b, -1, 2, *f.shape[-2:])
        out = torch.fft.irfft2(torch.complex(f[:, :, 0], f[:, :, 1]), s=(h, w), norm="ortho").to(x.dtype)
        if out.shape[-2:] != size:
            out = F.interpolate(out, size=size, mode=self.mode, align_corners=False)
        return out


class SpectralTransform(nn.Module):
    """FFC's global branch: u = ReLU(BN(Conv1×1(x))) with c_r = channels // 2; Conv1×1(FU(u) + LFU(u) + u)."""

    def __init__(self, in_channels: int, out_channels: int, lfu: bool = True):
        super().__init__()
        cr = max(1, out_channels // 2)
        self.reduce = nn.Sequential(nn.Conv2d(in_channels, cr, 1, bias=False), nn.BatchNorm2d(cr),
                                    nn.ReLU(inplace=True))
        self.fu = FourierUnit(cr, cr)
        self.lfu_in = cr // 4
        self.lfu = FourierUnit(4 * self.lfu_in, cr) if lfu and self.lfu_in else None
        self.expand = nn.Conv2d(cr, out_channels, 1, bias=False)

    def local_fourier(self, u: torch.Tensor) -> torch.Tensor:
        h, w = u.shape[-2:]
        xs = F.pad(u[:, :self.lfu_in], (0, w % 2, 0, h % 2))  # odd grids (29, 25) → even (30, 26)
        hh, hw = xs.shape[-2] // 2, xs.shape[-1] // 2
        xs = torch.cat(torch.split(xs, hh, dim=-2), dim=1)
        xs = torch.cat(torch.split(xs, hw, dim=-1), dim=1)  # four quadrants as channels
        return self.lfu(xs).repeat(1, 1, 2, 2)[..., :h, :w]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        u = self.reduce(x)
        y = self.fu(u) + u
        if self.lfu is not None:
            y = y + self.local_fourier(u)
        return self.expand(y)


class SRU(nn.Module):
    """Spectral Residual Unit: [Conv3×3+BN+ReLU on c_l channels ; SpectralTransform on c_g] → C channels (FM^syn).
    ``forward(x, with_global=True)`` also returns the global branch's output FM^global (Fig. 6)."""

    def __init__(self, channels: int, global_ratio: float = 0.7, lfu: bool = True):
        super().__init__()
        self.cl, self.cg = sru_channels(channels, global_ratio)
        self.local = (nn.Sequential(nn.Conv2d(self.cl, self.cl, 3, padding=1, bias=False), nn.BatchNorm2d(self.cl),
                                    nn.ReLU(inplace=True)) if self.cl else None)
        self.spectral = SpectralTransform(self.cg, self.cg, lfu=lfu) if self.cg else None

    def forward(self, x: torch.Tensor, with_global: bool = False):
        parts, g = [], None
        if self.local is not None:
            parts.append(self.local(x[:, :self.cl]))
        if self.spectral is not None:
            g = self.spectral(x[:, self.cl:])
            parts.append(g)
        out = torch.cat(parts, dim=1)
        return (out, g) if with_global else out


class SpectralSkip(nn.Module):
    """A skip ``s`` → ``s + Lin(SRU(s))`` (FM^enh = FM^syn after the linear operation + FM^b)."""

    def __init__(self, channels: int, global_ratio: float = 0.7, lfu: bool = True):
        super().__init__()
        self.sru = SRU(channels, global_ratio, lfu)
        self.linear = nn.Conv2d(channels, channels, 1)

    def forward(self, x: torch.Tensor, with_global: bool = False):
        syn, g = self.sru(x, with_global=True)
        out = x + self.linear(syn)
        return (out, g) if with_global else out


# -- transformer parts (T2T-ViT / CTformer) ----------------------------------------------------------------------
class TokenMLP(nn.Module):
    def __init__(self, dim: int, hidden: int, out: int | None = None, drop: float = 0.0):
        super().__init__()
        self.fc1, self.fc2, self.drop = nn.Linear(dim, hidden), nn.Linear(hidden, out or dim), nn.Dropout(drop)

    def forward(self, x):
        return self.drop(self.fc2(self.drop(F.gelu(self.fc1(x)))))


class TokenFourier(nn.Module):
    """A FourierUnit on the tokens' square map: (B, g², C) → (B, g², C) (the ablation's Fourier transformer unit)."""

    def __init__(self, dim: int, side: int):
        super().__init__()
        self.side, self.fu = side, FourierUnit(dim, dim)

    def forward(self, x):
        b, n, c = x.shape
        y = self.fu(x.transpose(1, 2).reshape(b, c, self.side, self.side))
        return y.reshape(b, c, n).transpose(1, 2)


class TokenPerformer(nn.Module):
    """T2T-ViT's Token_performer (one head): LayerNorm → kqv → positive-random-feature softmax kernel
    (``kernel_ratio``·dim features, orthogonal) → proj, with v as the residual (dim may differ from in_dim), then
    ``x + MLP(LayerNorm(x))`` — or a FourierUnit on the token map when ``fourier_side`` is given."""

    def __init__(self, dim: int, in_dim: int, kernel_ratio: float = 0.5, dp1: float = 0.1, dp2: float = 0.1,
                 fourier_side: int | None = None):
        super().__init__()
        self.emb = in_dim
        self.kqv = nn.Linear(dim, 3 * in_dim)
        self.dp = nn.Dropout(dp1)
        self.proj = nn.Linear(in_dim, in_dim)
        self.norm1, self.norm2 = nn.LayerNorm(dim), nn.LayerNorm(in_dim)
        self.epsilon = 1e-8
        self.mlp = (TokenFourier(in_dim, fourier_side) if fourier_side else
                    nn.Sequential(nn.Linear(in_dim, in_dim), nn.GELU(), nn.Linear(in_dim, in_dim), nn.Dropout(dp2)))
        self.m = max(1, int(in_dim * kernel_ratio))
        self.register_buffer("w", nn.init.orthogonal_(torch.randn(self.m, in_dim)) * math.sqrt(self.m))

    def prm_exp(self, x):  # exp(wᵀx − |x|²/2) / √m: E_w[φ(x)·φ(y)] = exp(xᵀy)
        xd = (x * x).sum(dim=-1, keepdim=True) / 2
        return torch.exp(torch.einsum("bti,mi->btm", x.float(), self.w) - xd) / math.sqrt(self.m)

    def attention(self, x):
        k, q, v = torch.split(self.kqv(x), self.emb, dim=-1)
        kp, qp = self.prm_exp(k), self.prm_exp(q)
        d = torch.einsum("bti,bi->bt", qp, kp.sum(dim=1)).unsqueeze(2)
        kptv = torch.einsum("bin,bim->bnm", v.float(), kp)
        y = torch.einsum("bti,bni->btn", qp, kptv) / (d + self.epsilon)
        return v + self.dp(self.proj(y.to(v.dtype)))

    def forward(self, x):
        x = self.attention(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class DropPath(nn.Module):
    def __init__(self, p: float = 0.0):
        super().__init__()
        self.p = p

    def forward(self, x):
        if not self.training or self.p == 0:
            return x
        keep = x.new_empty((x.shape[0],) + (1,) * (x.ndim - 1)).bernoulli_(1 - self.p)
        return x * keep / (1 - self.p)


class Block(nn.Module):
    """A standard pre-norm ViT block with exact softmax attention (timm / T2T-ViT ``Block``, qkv without bias)."""

    def __init__(self, dim: int, heads: int, mlp_ratio: float = 2.0, drop: float = 0.1, attn_drop: float = 0.1,
                 drop_path: float = 0.1):
        super().__init__()
        self.heads = heads
        self.norm1, self.norm2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.qkv, self.proj = nn.Linear(dim, 3 * dim, bias=False), nn.Linear(dim, dim)
        self.attn_drop, self.proj_drop = attn_drop, nn.Dropout(drop)
        self.mlp = TokenMLP(dim, int(dim * mlp_ratio), drop=drop)
        self.drop_path = DropPath(drop_path)

    def attn(self, x):
        b, n, c = x.shape
        q, k, v = self.qkv(x).reshape(b, n, 3, self.heads, c // self.heads).permute(2, 0, 3, 1, 4)
        # softmax(qkᵀ/√d)v
        y = F.scaled_dot_product_attention(q, k, v, dropout_p=self.attn_drop if self.training else 0.0)
        return self.proj_drop(self.proj(y.transpose(1, 2).reshape(b, n, c)))

    def forward(self, x):
        x = x + self.drop_path(self.attn(self.norm1(x)))
        return x + self.drop_path(self.mlp(self.norm2(x)))


def sinusoid_table(n: int, dim: int) -> torch.Tensor:
    """(1, n, dim): sin on even, cos on odd dimensions, position / 10000^(2·(j // 2) / dim)."""
    pos = torch.arange(n, dtype=torch.float64)[:, None]
    j = torch.arange(dim, dtype=torch.float64)[None, :]
    angle = pos / torch.pow(10000.0, 2 * torch.div(j, 2, rounding_mode="floor") / dim)
    table = torch.where(j % 2 == 0, torch.sin(angle), torch.cos(angle))
    return table.float()[None]


class SEANet(nn.Module):
    """CTformer with its two skips rerouted through SRUs (``sru=True``); ``sru=False`` is CTformer itself."""

    def __init__(self, patch: int = 64, in_chans: int = 1, token_dim: int = 64, embed_dim: int = 64, depth: int = 12,
                 num_heads: int = 8, mlp_ratio: float = 2.0, kernel_ratio: float = 0.5,
                 dilation: tuple[int, int, int, int] = (2, 1, 1, 2), shift: int = 2, sru: bool = True,
                 sru_global: float = 0.7, fourier: str = "none", drop_rate: float = 0.1, attn_drop_rate: float = 0.1,
                 drop_path_rate: float = 0.1, performer_drop: float = 0.1):
        super().__init__()
        d1, d2, d3, d4 = dilation
        if (d1, d2) != (d4, d3):
            raise ValueError(f"dilation {list(dilation)}: the decoder must mirror the encoder ([r1, r2, r2, r1])")
        if embed_dim % num_heads:
            raise ValueError(f"embed_dim {embed_dim} is not divisible by num_heads {num_heads}")
        if fourier not in ("none", "encoder", "decoder", "both"):
            raise ValueError(f"fourier must be none, encoder, decoder or both, got {fourier!r}")
        self.patch, self.shift = patch, shift
        self.g0 = grid(patch, 7, stride=2)
        self.g1 = grid(self.g0, 3, d1)
        self.g2 = grid(self.g1, 3, d2)
        if self.g2 < 1:
            raise ValueError(f"a {patch}² patch with dilation {list(dilation)} leaves no tokens (grids {self.g0}, "
                             f"{self.g1}, {self.g2})")
        enc, dec = fourier in ("encoder", "both"), fourier in ("decoder", "both")
        # encoder (CTformer's T2T_module)
        self.soft_split0 = nn.Unfold(7, stride=2)
        self.soft_split1 = nn.Unfold(3, dilation=d1)
        self.soft_split2 = nn.Unfold(3, dilation=d2)
        unit = dict(kernel_ratio=kernel_ratio, dp1=performer_drop, dp2=performer_drop)
        self.attention1 = TokenPerformer(in_chans * 49, token_dim, fourier_side=self.g0 if enc else None, **unit)
        self.attention2 = TokenPerformer(token_dim * 9, token_dim, fourier_side=self.g1 if enc else None, **unit)
        self.project = nn.Linear(token_dim * 9, embed_dim)
        self.register_buffer("pos_embed", sinusoid_table(self.g2 ** 2, embed_dim), persistent=False)
        self.pos_drop = nn.Dropout(drop_rate)
        rates = torch.linspace(0, drop_path_rate, depth).tolist()
        self.blocks = nn.ModuleList(Block(embed_dim, num_heads, mlp_ratio, drop_rate, attn_drop_rate, r) for r in rates)
        self.norm = nn.LayerNorm(embed_dim)
        # decoder (CTformer's Token_back_Image)
        self.project_back = nn.Linear(embed_dim, token_dim * 9)
        self.fold2 = nn.Fold((self.g1, self.g1), 3, dilation=d3)
        self.fold1 = nn.Fold((self.g0, self.g0), 3, dilation=d4)
        self.fold0 = nn.Fold((patch, patch), 7, stride=2)
        self.dattention2 = TokenPerformer(token_dim, token_dim * 9, fourier_side=self.g1 if dec else None, **unit)
        self.dattention1 = TokenPerformer(token_dim, in_chans * 49, fourier_side=self.g0 if dec else None, **unit)
        # the spectral residual units on the two skips
        self.sru1 = SpectralSkip(token_dim, sru_global) if sru else None
        self.sru2 = SpectralSkip(token_dim, sru_global) if sru else None
        self.apply(_init_linear)

    def _to_map(self, t: torch.Tensor, side: int) -> torch.Tensor:
        return t.transpose(1, 2).reshape(t.shape[0], t.shape[2], side, side)

    def _skip(self, t: torch.Tensor, side: int, unit, feats: dict, name: str):
        """(tokens of the next level's unfold input FM^b, the skip the decoder adds)."""
        fm = torch.roll(self._to_map(t, side), shifts=(self.shift, self.shift), dims=(2, 3))  # FM^b
        if unit is None:
            return fm, t
        enh, g = unit(fm, with_global=True)  # FM^enh = Lin(SRU(FM^b)) + FM^b
        feats[name] = g
        back = torch.roll(enh, shifts=(-self.shift, -self.shift), dims=(2, 3))  # un-shift: same grid as T_i
        return fm, back.flatten(2).transpose(1, 2)

    def forward(self, x: torch.Tensor, features: bool = False):
        if x.shape[-2:] != (self.patch, self.patch):
            raise ValueError(f"SEANet/CTformer takes {self.patch}×{self.patch} patches, got {tuple(x.shape[-2:])}; "
                             "tile larger images (sliding-window inference)")
        feats: dict[str, torch.Tensor] = {}
        t1 = self.attention1(self.soft_split0(x).transpose(1, 2))  # (B, g0², token_dim)
        fm1, skip1 = self._skip(t1, self.g0, self.sru1, feats, "global1")
        t2 = self.attention2(self.soft_split1(fm1).transpose(1, 2))  # (B, g1², token_dim)
        fm2, skip2 = self._skip(t2, self.g1, self.sru2, feats, "global2")
        z = self.project(self.soft_split2(fm2).transpose(1, 2)) + self.pos_embed
        z = self.pos_drop(z)
        for blk in self.blocks:
            z = blk(z)
        z = self.norm(z)
        y = self.fold2(self.project_back(z).transpose(1, 2))
        y = torch.roll(y, shifts=(-self.shift, -self.shift), dims=(-1, -2)).flatten(2).transpose(1, 2) + skip2
        y = self.fold1(self.dattention2(y).transpose(1, 2))
        y = torch.roll(y, shifts=(-self.shift, -self.shift), dims=(-1, -2)).flatten(2).transpose(1, 2) + skip1
        out = x - self.fold0(self.dattention1(y).transpose(1, 2))
        return (out, feats) if features else out


def _init_linear(m):
    if isinstance(m, nn.Linear):  # CTformer: trunc_normal(std .02), zero bias
        nn.init.trunc_normal_(m.weight, std=0.02)
        if m.bias is not None:
            nn.init.zeros_(m.bias)
    elif isinstance(m, nn.LayerNorm):
        nn.init.ones_(m.weight)
        nn.init.zeros_(m.bias)


# -- RED-CNN and SEANet² ----------------------------------------------------------------------------------------
class REDCNN(nn.Module):
    """RED-CNN (Chen et al. 2017); ``sru=True`` is SEANet²: its two 96-channel shortcuts through SpectralSkips."""

    def __init__(self, channels: int = 96, in_chans: int = 1, sru: bool = False, sru_global: float = 0.7):
        super().__init__()
        c = channels
        self.convs = nn.ModuleList([nn.Conv2d(in_chans, c, 5), *[nn.Conv2d(c, c, 5) for _ in range(4)]])
        self.tconvs = nn.ModuleList([*[nn.ConvTranspose2d(c, c, 5) for _ in range(4)],
                                     nn.ConvTranspose2d(c, in_chans, 5)])
        self.sru2 = SpectralSkip(c, sru_global) if sru else None  # conv2 → after tconv3
        self.sru3 = SpectralSkip(c, sru_global) if sru else None  # conv4 → after tconv1

    def forward(self, x: torch.Tensor, features: bool = False):
        feats: dict[str, torch.Tensor] = {}

        def skip(s, unit, name):
            if unit is None:
                return s
            out, feats[name] = unit(s, with_global=True)
            return out

        r1 = x
        out = F.relu(self.convs[1](F.relu(self.convs[0](x))))
        r2 = out
        out = F.relu(self.convs[3](F.relu(self.convs[2](out))))
        r3 = out
        out = F.relu(self.convs[4](out))
        out = self.tconvs[0](out) + skip(r3, self.sru3, "global3")
        out = self.tconvs[2](F.relu(self.tconvs[1](F.relu(out)))) + skip(r2, self.sru2, "global2")
        out = self.tconvs[4](F.relu(self.tconvs[3](F.relu(out)))) + r1
        out = F.relu(out)
        return (out, feats) if features else out


class ResidualUNet(nn.Module):
    """MONAI ``BasicUNet`` (2D) predicting the noise: ŷ = x − n̂ (the card's UNet baseline)."""

    def __init__(self, in_chans: int = 1, features: tuple[int, ...] = (32, 32, 64, 128, 256, 32)):
        super().__init__()
        from monai.networks.nets import BasicUNet

        self.net = BasicUNet(spatial_dims=2, in_channels=in_chans, out_channels=in_chans, features=tuple(features))

    def forward(self, x: torch.Tensor, features: bool = False):
        out = x - self.net(x)
        return (out, {}) if features else out


# -- registry entry points ----------------------------------------------------------------------------------------
def seanet(**kw) -> SEANet:
    return SEANet(sru=True, **kw)


def ctformer(**kw) -> SEANet:
    return SEANet(sru=False, **kw)


def redcnn(**kw) -> REDCNN:
    return REDCNN(sru=False, **kw)


def seanet2(**kw) -> REDCNN:
    return REDCNN(sru=True, **kw)


def zero_noise_estimate(net: nn.Module) -> nn.Module:
    """Start a network at the identity ŷ = x (noise estimate 0) by zeroing its last layer's output path: the value
    path, projection and MLP output of SEANet's/CTformer's last decoder unit; RED-CNN's last transposed convolution;
    the UNet's final convolution. Gradients still reach every zeroed weight (their inputs are not zero)."""
    with torch.no_grad():
        if isinstance(net, SEANet):
            unit = net.dattention1
            unit.kqv.weight[2 * unit.emb:].zero_()
            unit.kqv.bias[2 * unit.emb:].zero_()
            unit.proj.weight.zero_()
            unit.proj.bias.zero_()
            last = unit.mlp[-2] if isinstance(unit.mlp, nn.Sequential) else unit.mlp.fu.conv
            for p in last.parameters():
                p.zero_()
        elif isinstance(net, REDCNN):
            net.tconvs[-1].weight.zero_()
            net.tconvs[-1].bias.zero_()
        elif isinstance(net, ResidualUNet):
            for p in net.net.final_conv.parameters():
                p.zero_()
    return net
