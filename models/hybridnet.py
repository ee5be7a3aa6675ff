"""HybridNet: a CNN encoder, a transformer bottleneck and a U-Net decoder with HoVer-Net heads (hybrid-seg card).

- Encoder: stem 2×[Conv3×3, BN, ReLU] → S1 (w0 @ H); stages of 2 ResNet BasicBlocks (the first with stride 2):
  S2 w1 @ H/2, S3 w2 @ H/4, S4 w3 @ H/8. Full size: widths (32, 64, 128, 256).
- Bottleneck: Conv2×2 stride 2 (w3 → d) gives (H/16)² tokens; a 2D sinusoidal position encoding is added (computed
  for the grid at hand, so any input side divisible by 16 works) and ``layers`` pre-norm encoder layers (d, heads,
  MLP ``mlp``, GELU, dropout) run over them. Attention uses explicit ``q``/``k``/``v``/``o`` ``nn.Linear`` layers and
  the MLP ``fc1``/``fc2``, so peft's LoRA can target them by name. ``bottleneck="cnn"`` replaces the transformer by
  2 BasicBlocks (the card's CNN-only ablation).
- Decoder: 4 stages, each bilinear ×2, concatenation of the skip (S4, S3, S2, S1), 2×[Conv3×3, BN, ReLU] with widths
  (w3, w2, w1, w0).
- Heads (Conv1×1 at full resolution): ``np`` 2 logits, ``hv`` 2 maps (tanh), ``nc`` ``n_types`` logits.
- Metadata fusion (``fusion``): e = MLP(meta) (Linear-ReLU-Linear → ``meta_embed``). ``input``: Conv1×1 of e
  broadcast over the image → 3 extra input channels; ``film``: γ, β = Linear(e) ∈ R^d, bottleneck X ← (1+γ)⊙X + β;
  ``token``: Linear(e) → one extra token in the transformer; ``gated``: film and token together, each scaled by a
  softmax over two learned source logits (X ← X + w_film·(γ⊙X + β), token ← w_token·Linear(e)).

``forward(x, meta=None)`` returns ``{"np", "hv", "nc"}``; ``features(x, meta)`` the pooled bottleneck features.
``SwinHeads`` is the card's large preset: MONAI ``SwinUNETR(spatial_dims=2, out_channels=10, feature_size=24)``
with its output split into the same heads.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

FUSIONS = ("none", "input", "film", "token", "gated")


class BasicBlock(nn.Module):
    """ResNet's basic block (two 3×3 convs with BN, identity or 1×1-conv shortcut)."""

    def __init__(self, cin: int, cout: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.down = None
        if stride != 1 or cin != cout:
            self.down = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + (x if self.down is None else self.down(x)))


def conv_bn_relu(cin: int, cout: int) -> list[nn.Module]:
    return [nn.Conv2d(cin, cout, 3, 1, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)]


def sincos_2d(h: int, w: int, d: int, device=None) -> torch.Tensor:
    """(h·w, d) 2D sinusoidal position encoding: half the channels encode the row, half the column."""
    quarter = d // 4
    omega = 1.0 / (10000 ** (torch.arange(quarter, device=device, dtype=torch.float32) / max(quarter, 1)))
    ys, xs = torch.meshgrid(torch.arange(h, device=device, dtype=torch.float32),
                            torch.arange(w, device=device, dtype=torch.float32), indexing="ij")
    out = [torch.sin(ys.reshape(-1, 1) * omega), torch.cos(ys.reshape(-1, 1) * omega),
           torch.sin(xs.reshape(-1, 1) * omega), torch.cos(xs.reshape(-1, 1) * omega)]
    pe = torch.cat(out, 1)
    return F.pad(pe, (0, d - pe.shape[1]))


class Attention(nn.Module):
    def __init__(self, d: int, heads: int, dropout: float):
        super().__init__()
        if d % heads:
            raise ValueError(f"d_model {d} is not divisible by {heads} heads")
        self.heads = heads
        self.q, self.k, self.v, self.o = (nn.Linear(d, d) for _ in range(4))
        self.drop = nn.Dropout(dropout)

    def forward(self, x):
        b, n, d = x.shape
        h = self.heads

        def split(t):
            return t.reshape(b, n, h, d // h).transpose(1, 2)

        q, k, v = split(self.q(x)), split(self.k(x)), split(self.v(x))
        att = self.drop(torch.softmax(q @ k.transpose(-2, -1) / math.sqrt(d // h), -1))
        return self.o((att @ v).transpose(1, 2).reshape(b, n, d))


class EncoderLayer(nn.Module):
    """Pre-norm transformer encoder layer: x + Attn(LN(x)); x + MLP(LN(x)) with GELU."""

    def __init__(self, d: int, heads: int, mlp: int, dropout: float):
        super().__init__()
        self.norm1, self.norm2 = nn.LayerNorm(d), nn.LayerNorm(d)
        self.attn = Attention(d, heads, dropout)
        self.fc1, self.fc2 = nn.Linear(d, mlp), nn.Linear(mlp, d)
        self.drop = nn.Dropout(dropout)

    def forward(self, x):
        x = x + self.drop(self.attn(self.norm1(x)))
        return x + self.drop(self.fc2(self.drop(F.gelu(self.fc1(self.norm2(x))))))


class HybridNet(nn.Module):
    def __init__(self, in_channels: int = 3, widths=(32, 64, 128, 256), d_model: int = 256, heads: int = 8,
                 layers: int = 4, mlp: int = 1024, dropout: float = 0.1, n_types: int = 6, fusion: str = "none",
                 meta_dim: int = 0, meta_embed: int = 128, bottleneck: str = "transformer"):
        super().__init__()
        if fusion not in FUSIONS:
            raise ValueError(f"fusion must be one of {FUSIONS}, got {fusion!r}")
        if fusion != "none" and meta_dim < 1:
            raise ValueError(f"fusion '{fusion}' needs metadata (meta_dim ≥ 1)")
        if bottleneck not in ("transformer", "cnn"):
            raise ValueError(f"bottleneck must be 'transformer' or 'cnn', got {bottleneck!r}")
        if bottleneck == "cnn" and fusion in ("token", "gated"):
            raise ValueError(f"fusion '{fusion}' adds a transformer token; the CNN-only bottleneck has none")
        w0, w1, w2, w3 = widths
        self.fusion, self.bottleneck_kind, self.d = fusion, bottleneck, d_model
        if fusion != "none":
            self.meta_mlp = nn.Sequential(nn.Linear(meta_dim, meta_embed), nn.ReLU(inplace=True),
                                          nn.Linear(meta_embed, meta_embed))
        if fusion == "input":
            self.meta_in = nn.Conv2d(meta_embed, 3, 1)
        if fusion in ("film", "gated"):
            self.film = nn.Linear(meta_embed, 2 * d_model)
        if fusion in ("token", "gated"):
            self.meta_token = nn.Linear(meta_embed, d_model)
        if fusion == "gated":
            self.gate = nn.Parameter(torch.zeros(2))
        stem_in = in_channels + (3 if fusion == "input" else 0)
        self.stem = nn.Sequential(*conv_bn_relu(stem_in, w0), *conv_bn_relu(w0, w0))
        self.enc2 = nn.Sequential(BasicBlock(w0, w1, 2), BasicBlock(w1, w1))
        self.enc3 = nn.Sequential(BasicBlock(w1, w2, 2), BasicBlock(w2, w2))
        self.enc4 = nn.Sequential(BasicBlock(w2, w3, 2), BasicBlock(w3, w3))
        self.to_tokens = nn.Conv2d(w3, d_model, 2, 2)
        if bottleneck == "transformer":
            self.blocks = nn.ModuleList(EncoderLayer(d_model, heads, mlp, dropout) for _ in range(layers))
            self.norm = nn.LayerNorm(d_model)
        else:
            self.blocks = nn.Sequential(BasicBlock(d_model, d_model), BasicBlock(d_model, d_model))
        dec, cin = [], d_model
        for skip, width in ((w3, w3), (w2, w2), (w1, w1), (w0, w0)):
            dec.append(nn.Sequential(*conv_bn_relu(cin + skip, width), *conv_bn_relu(width, width)))
            cin = width
        self.decoder = nn.ModuleList(dec)
        self.head_np, self.head_hv, self.head_nc = nn.Conv2d(w0, 2, 1), nn.Conv2d(w0, 2, 1), nn.Conv2d(w0, n_types, 1)

    # -- parts -----------------------------------------------------------------------------------------------
    def _embed(self, meta):
        if self.fusion == "none":
            return None
        if meta is None:
            raise ValueError(f"fusion '{self.fusion}' needs the metadata vector")
        return self.meta_mlp(meta)

    def _bottleneck(self, s4, e):
        x = self.to_tokens(s4)
        b, d, h, w = x.shape
        if self.fusion in ("film", "gated"):
            gamma, beta = self.film(e)[..., None, None].chunk(2, dim=1)
            if self.fusion == "film":
                x = (1 + gamma) * x + beta
            else:
                x = x + torch.softmax(self.gate, 0)[0] * (gamma * x + beta)
        if self.bottleneck_kind == "cnn":
            return self.blocks(x)
        tokens = x.flatten(2).transpose(1, 2) + sincos_2d(h, w, d, x.device).to(x.dtype)
        extra = 0
        if self.fusion in ("token", "gated"):
            tok = self.meta_token(e)[:, None]
            if self.fusion == "gated":
                tok = torch.softmax(self.gate, 0)[1] * tok
            tokens, extra = torch.cat([tok, tokens], 1), 1
        for blk in self.blocks:
            tokens = blk(tokens)
        tokens = self.norm(tokens)[:, extra:]
        return tokens.transpose(1, 2).reshape(b, d, h, w)

    def encode(self, x, meta=None):
        """Skips (S1…S4) and the bottleneck map."""
        e = self._embed(meta)
        if self.fusion == "input":
            x = torch.cat([x, self.meta_in(e[..., None, None]).expand(-1, -1, *x.shape[-2:])], 1)
        s1 = self.stem(x)
        s2 = self.enc2(s1)
        s3 = self.enc3(s2)
        s4 = self.enc4(s3)
        return (s1, s2, s3, s4), self._bottleneck(s4, e)

    def features(self, x, meta=None) -> torch.Tensor:
        """Pooled bottleneck features (B, d): FID_seg and the domain gap use them."""
        return self.encode(x, meta)[1].mean((2, 3))

    def forward(self, x, meta=None) -> dict[str, torch.Tensor]:
        if x.shape[-1] % 16 or x.shape[-2] % 16:
            raise ValueError(f"HybridNet needs an input side divisible by 16, got {tuple(x.shape[-2:])}")
        skips, y = self.encode(x, meta)
        for stage, skip in zip(self.decoder, reversed(skips), strict=True):
            y = F.interpolate(y, size=skip.shape[-2:], mode="bilinear", align_corners=False)
            y = stage(torch.cat([y, skip], 1))
        return {"np": self.head_np(y), "hv": torch.tanh(self.head_hv(y)), "nc": self.head_nc(y)}


class SwinHeads(nn.Module):
    """The large preset: MONAI SwinUNETR (2D, 10 output channels) split into np (2), hv (2, tanh), nc (6)."""

    def __init__(self, in_channels: int = 3, n_types: int = 6, feature_size: int = 24):
        super().__init__()
        from monai.networks.nets import SwinUNETR

        self.net = SwinUNETR(spatial_dims=2, in_channels=in_channels, out_channels=4 + n_types,
                             feature_size=feature_size)

    def forward(self, x, meta=None):
        out = self.net(x)
        return {"np": out[:, :2], "hv": torch.tanh(out[:, 2:4]), "nc": out[:, 4:]}

    def features(self, x, meta=None):
        return self.net.swinViT(x, self.net.normalize)[-1].mean((2, 3))


def hybridnet_tiny(**kw) -> HybridNet:
    """The card's smoke size: widths 8/16/32/64, d 64, 2 layers, 4 heads (MLP 4·d)."""
    return HybridNet(**{"widths": (8, 16, 32, 64), "d_model": 64, "heads": 4, "layers": 2, "mlp": 256, **kw})
