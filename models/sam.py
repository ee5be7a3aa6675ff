"""Segment Anything (SAM) in plain torch: ViT image encoder, neck, prompt encoder, two-way mask decoder.

Spec: issue 8 item 1 and the lorasam card, section "Method" (`../shared/papers/lorasam.md`): ViT-B with patch 16,
embed 768, depth 12, 12 heads, window 14, global attention in blocks 2/5/8/11, decomposed relative positions; neck
Conv1x1 768→256, LN2d, Conv3x3 256→256, LN2d; prompt encoder and two-way mask decoder (depth 2, dim 256, 8 heads,
MLP 2048) as in the official release.

Choices (the card is silent on these):

* Written here in plain torch rather than on HF transformers' SAM. Reasons: the official checkpoint's key layout
  then maps onto ours by name (see `convert_official_state_dict`), the lorasam card's LoRA targets
  (`blocks.N.attn.qkv`, `neck.0`, ...) and its "every parameter whose name contains `norm`" rule apply to our
  module names literally, and nothing extra has to install. The modules therefore carry the attribute names of
  the official release; the module code itself is our own. `tests/models/test_sam_vs_hf.py` checks it
  numerically against HF transformers' `SamModel` (which reproduces the official release) on point, box and
  mask prompts.
* The model is built for one input size (`SamConfig.img_size`, default 1024). For another size the absolute
  position embedding has `img_size/16` cells per side and the global blocks' relative-position tables
  `2*img_size/16 - 1` rows; windowed blocks keep `2*14 - 1 = 27` rows. A 1024 checkpoint is resampled to that size
  when it is loaded (`resize_pos_embed`, `resize_rel_pos`): the card prescribes adaptive average pooling for
  shrinking the position embedding (public LoRASAM code) and linear interpolation for the rel-pos tables; for
  *growing* the position embedding (not covered by the card) we use bicubic interpolation.
* Inputs of another size than `img_size` raise a ValueError instead of being padded silently; resizing and padding
  belong to the pipeline's transforms.
* `pixel_mean`/`pixel_std` (SAM's normalisation) are non-persistent buffers and `Sam.preprocess` applies them,
  so checkpoints without them load cleanly and checkpoints with them lose nothing.
* Checkpoint loading (`load_official_checkpoint`): `torch.load(weights_only=True)` with an allowlist of
  plain-data extras only (argparse.Namespace, numpy scalars/arrays); state dicts nested under
  `model_state_dict`/`state_dict`/`model` are unwrapped and a common `module.`/`model.`/`sam.` prefix stripped;
  the variant (vit_b/l/h, or a 3D file) is read from the patch-embedding width and block count and a mismatch
  is a UsageError; any other shape mismatch is a UsageError listing the tensors; unreadable files are a
  DataError. Missing and unexpected keys are returned in a `LoadReport` and logged, not fatal (unless
  `require_complete`); LoRA adapter tensors are never counted as missing, and a peft-wrapped layer's
  `.base_layer.` weight is matched to its official name, so a checkpoint can be loaded before or after LoRA.
* Weight initialisation is torch's default for every layer, with `pos_embed`, the rel-pos tables and the
  prompt/mask tokens at zero or N(0, 1) as nn.Embedding gives. This only matters when no checkpoint is given, and
  then the numbers are meaningless anyway (lorasam card, "Pretrained weights").
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from medrun.errors import DataError, UsageError

log = logging.getLogger(__name__)

# Official ViT-B parameter counts, computed from the official architecture (the random-Fourier Gaussian matrix is
# a buffer there, not a parameter). HF transformers' SamModel at its default (ViT-B) config gives the same
# 89,670,912 and 4,058,340, and 6,476 = 6,220 + 256 for the prompt encoder because it keeps that matrix as a
# parameter. The tests check our model against these numbers.
VIT_B_PARAMS = {"image_encoder": 89_670_912, "prompt_encoder": 6_220, "mask_decoder": 4_058_340}
VIT_B_PARAMS_TOTAL = sum(VIT_B_PARAMS.values())  # 93,735,472

# The variants of the official release, told apart by embedding width and depth when a checkpoint is loaded.
SAM_VARIANTS = {"vit_b": (768, 12), "vit_l": (1024, 24), "vit_h": (1280, 32)}


@dataclass
class SamConfig:
    """Sizes of a SAM model. Defaults are the official ViT-B at 1024²."""

    img_size: int = 1024
    patch_size: int = 16
    in_chans: int = 3
    embed_dim: int = 768
    depth: int = 12
    num_heads: int = 12
    mlp_ratio: float = 4.0
    window_size: int = 14
    global_attn_indexes: tuple[int, ...] = (2, 5, 8, 11)
    prompt_dim: int = 256  # neck output, prompt embeddings and decoder width
    mask_in_chans: int = 16
    decoder_depth: int = 2
    decoder_heads: int = 8
    decoder_mlp_dim: int = 2048
    num_multimask_outputs: int = 3
    iou_head_depth: int = 3
    iou_head_hidden_dim: int = 256
    pixel_mean: tuple[float, float, float] = (123.675, 116.28, 103.53)
    pixel_std: tuple[float, float, float] = (58.395, 57.12, 57.375)

    @property
    def grid(self) -> int:
        """Tokens per side of the image embedding."""
        return self.img_size // self.patch_size


def sam_vit_b_config(img_size: int = 1024) -> SamConfig:
    """The official ViT-B sizes at input `img_size` (lorasam uses 256)."""
    return SamConfig(img_size=img_size)


# ---------------------------------------------------------------------------------------------------------------
# Small building blocks
# ---------------------------------------------------------------------------------------------------------------


class LayerNorm2d(nn.Module):
    """LayerNorm over the channel axis of an NCHW tensor (eps 1e-6, as in the official neck)."""

    def __init__(self, channels: int, eps: float = 1e-6):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mean = x.mean(1, keepdim=True)
        var = (x - mean).pow(2).mean(1, keepdim=True)
        x = (x - mean) / torch.sqrt(var + self.eps)
        return self.weight[:, None, None] * x + self.bias[:, None, None]


class MLPBlock(nn.Module):
    """Two linear layers with an activation between them (`lin1`, `lin2`)."""

    def __init__(self, dim: int, hidden: int, act: type[nn.Module] = nn.GELU):
        super().__init__()
        self.lin1 = nn.Linear(dim, hidden)
        self.lin2 = nn.Linear(hidden, dim)
        self.act = act()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.lin2(self.act(self.lin1(x)))


class MLP(nn.Module):
    """`num_layers` linear layers with ReLU between them (hypernetworks and IoU head)."""

    def __init__(self, in_dim: int, hidden: int, out_dim: int, num_layers: int):
        super().__init__()
        dims = [in_dim] + [hidden] * (num_layers - 1) + [out_dim]
        self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in zip(dims[:-1], dims[1:], strict=True))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for i, layer in enumerate(self.layers):
            x = layer(x)
            if i < len(self.layers) - 1:
                x = F.relu(x)
        return x


# ---------------------------------------------------------------------------------------------------------------
# Image encoder: ViT with windowed and global attention and decomposed relative positions
# ---------------------------------------------------------------------------------------------------------------


def resize_rel_pos(table: torch.Tensor, rows: int) -> torch.Tensor:
    """Linearly interpolate a relative-position table (L, head_dim) to `rows` rows (lorasam card: 127 → 31)."""
    if table.shape[0] == rows:
        return table
    resized = F.interpolate(table.T.unsqueeze(0).float(), size=rows, mode="linear", align_corners=False)
    return resized.squeeze(0).T.to(table.dtype)


def resize_pos_embed(pos: torch.Tensor, grid: int) -> torch.Tensor:
    """Resample an absolute position embedding (1, H, W, C) to (1, grid, grid, C).

    Shrinking uses adaptive average pooling (lorasam card, 64×64 → 16×16); growing uses bicubic interpolation.
    """
    if pos.shape[1] == grid and pos.shape[2] == grid:
        return pos
    x = pos.permute(0, 3, 1, 2).float()
    if grid <= min(pos.shape[1], pos.shape[2]):
        x = F.adaptive_avg_pool2d(x, grid)
    else:
        x = F.interpolate(x, size=(grid, grid), mode="bicubic", align_corners=False)
    return x.permute(0, 2, 3, 1).to(pos.dtype)


def rel_pos_lookup(q_size: int, k_size: int, table: torch.Tensor) -> torch.Tensor:
    """Embeddings (q_size, k_size, head_dim) for every query/key offset along one axis.

    Offsets run from -(k_size-1) to q_size-1; when query and key lengths differ they are scaled to the longer one.
    """
    rows = 2 * max(q_size, k_size) - 1
    table = resize_rel_pos(table, rows)
    q_coords = torch.arange(q_size, device=table.device)[:, None] * max(k_size / q_size, 1.0)
    k_coords = torch.arange(k_size, device=table.device)[None, :] * max(q_size / k_size, 1.0)
    offsets = (q_coords - k_coords) + (k_size - 1) * max(q_size / k_size, 1.0)
    return table[offsets.long()]


class Attention(nn.Module):
    """Multi-head self-attention on a (B, H, W, C) grid, with decomposed relative positions (`rel_pos_h/w`)."""

    def __init__(self, dim: int, num_heads: int, grid: int):
        super().__init__()
        self.num_heads = num_heads
        head_dim = dim // num_heads
        self.scale = head_dim**-0.5
        self.qkv = nn.Linear(dim, dim * 3)
        self.proj = nn.Linear(dim, dim)
        # One table per axis with a row for each offset in [-(grid-1), grid-1].
        self.rel_pos_h = nn.Parameter(torch.zeros(2 * grid - 1, head_dim))
        self.rel_pos_w = nn.Parameter(torch.zeros(2 * grid - 1, head_dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, h, w, _ = x.shape
        qkv = self.qkv(x).reshape(b, h * w, 3, self.num_heads, -1).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.reshape(3, b * self.num_heads, h * w, -1).unbind(0)

        attn = (q * self.scale) @ k.transpose(-2, -1)
        # Decomposed relative position: bias[q=(i,j), k=(m,n)] = q·Rh[i-m] + q·Rw[j-n].
        rh = rel_pos_lookup(h, h, self.rel_pos_h)
        rw = rel_pos_lookup(w, w, self.rel_pos_w)
        q_grid = q.reshape(-1, h, w, q.shape[-1])
        bias_h = torch.einsum("bhwc,hkc->bhwk", q_grid, rh)
        bias_w = torch.einsum("bhwc,wkc->bhwk", q_grid, rw)
        attn = attn.view(-1, h, w, h, w) + bias_h[:, :, :, :, None] + bias_w[:, :, :, None, :]
        attn = attn.view(-1, h * w, h * w).softmax(dim=-1)

        out = (attn @ v).view(b, self.num_heads, h, w, -1).permute(0, 2, 3, 1, 4).reshape(b, h, w, -1)
        return self.proj(out)


def window_partition(x: torch.Tensor, window: int) -> tuple[torch.Tensor, tuple[int, int]]:
    """Zero-pad (B, H, W, C) to multiples of `window` and cut it into (B·nW, window, window, C)."""
    b, h, w, c = x.shape
    pad_h, pad_w = (window - h % window) % window, (window - w % window) % window
    x = F.pad(x, (0, 0, 0, pad_w, 0, pad_h))
    hp, wp = h + pad_h, w + pad_w
    x = x.view(b, hp // window, window, wp // window, window, c)
    return x.permute(0, 1, 3, 2, 4, 5).reshape(-1, window, window, c), (hp, wp)


def window_unpartition(windows: torch.Tensor, window: int, padded: tuple[int, int], size: tuple[int, int]):
    """Inverse of `window_partition`, dropping the padding."""
    hp, wp = padded
    h, w = size
    b = windows.shape[0] // (hp * wp // window // window)
    x = windows.view(b, hp // window, wp // window, window, window, -1)
    x = x.permute(0, 1, 3, 2, 4, 5).reshape(b, hp, wp, -1)
    return x[:, :h, :w, :].contiguous()


class Block(nn.Module):
    """Pre-norm transformer block; windowed attention when `window_size > 0`, global otherwise."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float, window_size: int, grid: int):
        super().__init__()
        self.window_size = window_size
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = Attention(dim, num_heads, grid=window_size if window_size > 0 else grid)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = MLPBlock(dim, int(dim * mlp_ratio))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = x
        x = self.norm1(x)
        if self.window_size > 0:
            h, w = x.shape[1], x.shape[2]
            x, padded = window_partition(x, self.window_size)
            x = self.attn(x)
            x = window_unpartition(x, self.window_size, padded, (h, w))
        else:
            x = self.attn(x)
        x = shortcut + x
        return x + self.mlp(self.norm2(x))


class PatchEmbed(nn.Module):
    """Non-overlapping patches → (B, H/p, W/p, C)."""

    def __init__(self, patch_size: int, in_chans: int, embed_dim: int):
        super().__init__()
        self.proj = nn.Conv2d(in_chans, embed_dim, kernel_size=patch_size, stride=patch_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x).permute(0, 2, 3, 1)


class ImageEncoderViT(nn.Module):
    """(B, 3, S, S) → (B, prompt_dim, S/16, S/16)."""

    def __init__(self, cfg: SamConfig):
        super().__init__()
        self.img_size = cfg.img_size
        self.patch_embed = PatchEmbed(cfg.patch_size, cfg.in_chans, cfg.embed_dim)
        self.pos_embed = nn.Parameter(torch.zeros(1, cfg.grid, cfg.grid, cfg.embed_dim))
        self.blocks = nn.ModuleList(
            Block(
                cfg.embed_dim,
                cfg.num_heads,
                cfg.mlp_ratio,
                window_size=0 if i in cfg.global_attn_indexes else cfg.window_size,
                grid=cfg.grid,
            )
            for i in range(cfg.depth)
        )
        self.neck = nn.Sequential(
            nn.Conv2d(cfg.embed_dim, cfg.prompt_dim, kernel_size=1, bias=False),
            LayerNorm2d(cfg.prompt_dim),
            nn.Conv2d(cfg.prompt_dim, cfg.prompt_dim, kernel_size=3, padding=1, bias=False),
            LayerNorm2d(cfg.prompt_dim),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-2:] != (self.img_size, self.img_size):
            raise ValueError(
                f"image encoder built for {self.img_size}x{self.img_size} inputs, got {tuple(x.shape[-2:])}; "
                "resize/pad the images, or build the model with SamConfig(img_size=...)"
            )
        x = self.patch_embed(x) + self.pos_embed
        for block in self.blocks:
            x = block(x)
        return self.neck(x.permute(0, 3, 1, 2))


# ---------------------------------------------------------------------------------------------------------------
# Prompt encoder
# ---------------------------------------------------------------------------------------------------------------


class PositionEmbeddingRandom(nn.Module):
    """Random-Fourier positional encoding of normalised coordinates (a fixed Gaussian matrix, kept as a buffer)."""

    def __init__(self, num_pos_feats: int, scale: float = 1.0):
        super().__init__()
        self.register_buffer("positional_encoding_gaussian_matrix", scale * torch.randn(2, num_pos_feats))

    def _encode(self, coords: torch.Tensor) -> torch.Tensor:
        """coords in [0, 1], shape (..., 2) → (..., 2·num_pos_feats)."""
        coords = (2 * coords - 1) @ self.positional_encoding_gaussian_matrix
        coords = 2 * math.pi * coords
        return torch.cat([torch.sin(coords), torch.cos(coords)], dim=-1)

    def forward(self, size: tuple[int, int]) -> torch.Tensor:
        """Dense encoding of an (h, w) grid of cell centres → (C, h, w)."""
        h, w = size
        device = self.positional_encoding_gaussian_matrix.device
        ys = (torch.arange(h, device=device, dtype=torch.float32) + 0.5) / h
        xs = (torch.arange(w, device=device, dtype=torch.float32) + 0.5) / w
        grid = torch.stack(torch.meshgrid(xs, ys, indexing="xy"), dim=-1)  # (h, w, 2) as (x, y)
        return self._encode(grid).permute(2, 0, 1)

    def forward_with_coords(self, coords: torch.Tensor, image_size: tuple[int, int]) -> torch.Tensor:
        """Pixel coordinates (x, y) in an image of `image_size` (h, w) → encodings."""
        coords = coords.clone().float()
        coords[..., 0] = coords[..., 0] / image_size[1]
        coords[..., 1] = coords[..., 1] / image_size[0]
        return self._encode(coords)


class PromptEncoder(nn.Module):
    """Points, boxes and masks → sparse tokens (B, N, C) and a dense embedding (B, C, h, w)."""

    def __init__(self, cfg: SamConfig):
        super().__init__()
        dim = cfg.prompt_dim
        self.embed_dim = dim
        self.image_embedding_size = (cfg.grid, cfg.grid)
        self.input_image_size = (cfg.img_size, cfg.img_size)
        self.pe_layer = PositionEmbeddingRandom(dim // 2)
        # 0/1: negative/positive point, 2/3: box top-left/bottom-right corner.
        self.point_embeddings = nn.ModuleList(nn.Embedding(1, dim) for _ in range(4))
        self.not_a_point_embed = nn.Embedding(1, dim)
        c = cfg.mask_in_chans
        self.mask_downscaling = nn.Sequential(
            nn.Conv2d(1, c // 4, kernel_size=2, stride=2),
            LayerNorm2d(c // 4),
            nn.GELU(),
            nn.Conv2d(c // 4, c, kernel_size=2, stride=2),
            LayerNorm2d(c),
            nn.GELU(),
            nn.Conv2d(c, dim, kernel_size=1),
        )
        self.no_mask_embed = nn.Embedding(1, dim)

    def get_dense_pe(self) -> torch.Tensor:
        """(1, C, h, w) positional encoding of the image embedding grid."""
        return self.pe_layer(self.image_embedding_size).unsqueeze(0)

    def _embed_points(self, coords: torch.Tensor, labels: torch.Tensor, pad: bool) -> torch.Tensor:
        coords = coords + 0.5  # pixel centres
        if pad:  # without a box, a padding point stands in for it
            coords = torch.cat([coords, torch.zeros_like(coords[:, :1])], dim=1)
            labels = torch.cat([labels, -torch.ones_like(labels[:, :1])], dim=1)
        emb = self.pe_layer.forward_with_coords(coords, self.input_image_size)
        lab = labels[..., None]
        emb = torch.where(lab == -1, self.not_a_point_embed.weight.expand_as(emb), emb)
        emb = emb + (lab == 0) * self.point_embeddings[0].weight + (lab == 1) * self.point_embeddings[1].weight
        return emb

    def _embed_boxes(self, boxes: torch.Tensor) -> torch.Tensor:
        corners = (boxes + 0.5).reshape(-1, 2, 2)
        emb = self.pe_layer.forward_with_coords(corners, self.input_image_size)
        emb[:, 0] = emb[:, 0] + self.point_embeddings[2].weight
        emb[:, 1] = emb[:, 1] + self.point_embeddings[3].weight
        return emb

    def forward(
        self,
        points: tuple[torch.Tensor, torch.Tensor] | None = None,
        boxes: torch.Tensor | None = None,
        masks: torch.Tensor | None = None,
        batch_size: int | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """`points` = (coords (B, N, 2) in input pixels as (x, y), labels (B, N) with 1 = foreground, 0 =
        background, -1 = padding); `boxes` (B, 4) as x0, y0, x1, y1; `masks` (B, 1, 4h, 4w) low-res logits.
        With no prompt at all, give `batch_size`: the result is zero sparse tokens and the `no_mask` embedding."""
        if points is not None:
            b = points[0].shape[0]
        elif boxes is not None:
            b = boxes.shape[0]
        elif masks is not None:
            b = masks.shape[0]
        else:
            b = batch_size or 1
        device = self.no_mask_embed.weight.device
        sparse = torch.empty(b, 0, self.embed_dim, device=device)
        if points is not None:
            coords, labels = points
            sparse = torch.cat([sparse, self._embed_points(coords, labels, pad=boxes is None)], dim=1)
        if boxes is not None:
            sparse = torch.cat([sparse, self._embed_boxes(boxes)], dim=1)
        if masks is not None:
            dense = self.mask_downscaling(masks)
        else:
            h, w = self.image_embedding_size
            dense = self.no_mask_embed.weight.reshape(1, -1, 1, 1).expand(b, -1, h, w)
        return sparse, dense


# ---------------------------------------------------------------------------------------------------------------
# Mask decoder: two-way transformer + hypernetwork heads
# ---------------------------------------------------------------------------------------------------------------


class DecoderAttention(nn.Module):
    """Attention with separate q/k/v projections that may shrink the width by `downsample_rate`."""

    def __init__(self, dim: int, num_heads: int, downsample_rate: int = 1):
        super().__init__()
        inner = dim // downsample_rate
        self.num_heads = num_heads
        self.q_proj = nn.Linear(dim, inner)
        self.k_proj = nn.Linear(dim, inner)
        self.v_proj = nn.Linear(dim, inner)
        self.out_proj = nn.Linear(inner, dim)

    def _heads(self, x: torch.Tensor) -> torch.Tensor:
        b, n, c = x.shape
        return x.reshape(b, n, self.num_heads, c // self.num_heads).transpose(1, 2)

    def forward(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        q, k, v = self._heads(self.q_proj(q)), self._heads(self.k_proj(k)), self._heads(self.v_proj(v))
        attn = (q @ k.transpose(-2, -1)) / math.sqrt(q.shape[-1])
        out = attn.softmax(dim=-1) @ v
        return self.out_proj(out.transpose(1, 2).flatten(2))


class TwoWayAttentionBlock(nn.Module):
    """Token self-attention, token→image, MLP on tokens, image→token; each followed by a LayerNorm."""

    def __init__(self, dim: int, num_heads: int, mlp_dim: int, skip_first_layer_pe: bool):
        super().__init__()
        self.self_attn = DecoderAttention(dim, num_heads)
        self.norm1 = nn.LayerNorm(dim)
        self.cross_attn_token_to_image = DecoderAttention(dim, num_heads, downsample_rate=2)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = MLPBlock(dim, mlp_dim, act=nn.ReLU)
        self.norm3 = nn.LayerNorm(dim)
        self.norm4 = nn.LayerNorm(dim)
        self.cross_attn_image_to_token = DecoderAttention(dim, num_heads, downsample_rate=2)
        self.skip_first_layer_pe = skip_first_layer_pe

    def forward(self, queries, keys, query_pe, key_pe):
        if self.skip_first_layer_pe:  # the first layer's queries are the prompt tokens themselves
            queries = self.self_attn(queries, queries, queries)
        else:
            q = queries + query_pe
            queries = queries + self.self_attn(q, q, queries)
        queries = self.norm1(queries)

        queries = queries + self.cross_attn_token_to_image(queries + query_pe, keys + key_pe, keys)
        queries = self.norm2(queries)

        queries = self.norm3(queries + self.mlp(queries))

        keys = keys + self.cross_attn_image_to_token(keys + key_pe, queries + query_pe, queries)
        keys = self.norm4(keys)
        return queries, keys


class TwoWayTransformer(nn.Module):
    def __init__(self, depth: int, dim: int, num_heads: int, mlp_dim: int):
        super().__init__()
        self.layers = nn.ModuleList(
            TwoWayAttentionBlock(dim, num_heads, mlp_dim, skip_first_layer_pe=(i == 0)) for i in range(depth)
        )
        self.final_attn_token_to_image = DecoderAttention(dim, num_heads, downsample_rate=2)
        self.norm_final_attn = nn.LayerNorm(dim)

    def forward(self, image_embedding, image_pe, point_embedding):
        keys = image_embedding.flatten(2).permute(0, 2, 1)  # (B, hw, C)
        key_pe = image_pe.flatten(2).permute(0, 2, 1)
        queries = point_embedding
        for layer in self.layers:
            queries, keys = layer(queries, keys, point_embedding, key_pe)
        queries = queries + self.final_attn_token_to_image(queries + point_embedding, keys + key_pe, keys)
        return self.norm_final_attn(queries), keys


class MaskDecoder(nn.Module):
    """Image embedding + prompt tokens → low-res mask logits (B, M, 4h, 4w) and IoU predictions (B, M)."""

    def __init__(self, cfg: SamConfig):
        super().__init__()
        dim = cfg.prompt_dim
        self.transformer = TwoWayTransformer(cfg.decoder_depth, dim, cfg.decoder_heads, cfg.decoder_mlp_dim)
        self.num_mask_tokens = cfg.num_multimask_outputs + 1
        self.iou_token = nn.Embedding(1, dim)
        self.mask_tokens = nn.Embedding(self.num_mask_tokens, dim)
        self.output_upscaling = nn.Sequential(
            nn.ConvTranspose2d(dim, dim // 4, kernel_size=2, stride=2),
            LayerNorm2d(dim // 4),
            nn.GELU(),
            nn.ConvTranspose2d(dim // 4, dim // 8, kernel_size=2, stride=2),
            nn.GELU(),
        )
        self.output_hypernetworks_mlps = nn.ModuleList(
            MLP(dim, dim, dim // 8, 3) for _ in range(self.num_mask_tokens)
        )
        self.iou_prediction_head = MLP(dim, cfg.iou_head_hidden_dim, self.num_mask_tokens, cfg.iou_head_depth)

    def forward(self, image_embeddings, image_pe, sparse_prompt_embeddings, dense_prompt_embeddings,
                multimask_output: bool = False):
        b = sparse_prompt_embeddings.shape[0]
        out_tokens = torch.cat([self.iou_token.weight, self.mask_tokens.weight], dim=0)
        tokens = torch.cat([out_tokens.unsqueeze(0).expand(b, -1, -1), sparse_prompt_embeddings], dim=1)

        # One image embedding may serve several prompts: repeat it to the prompt batch.
        src = image_embeddings
        if src.shape[0] != b:
            src = torch.repeat_interleave(src, b // src.shape[0], dim=0)
        src = src + dense_prompt_embeddings
        pos = image_pe.expand(b, -1, -1, -1)
        _, c, h, w = src.shape

        hs, src = self.transformer(src, pos, tokens)
        iou_token_out = hs[:, 0]
        mask_tokens_out = hs[:, 1 : 1 + self.num_mask_tokens]

        upscaled = self.output_upscaling(src.transpose(1, 2).reshape(b, c, h, w))
        kernels = torch.stack(
            [mlp(mask_tokens_out[:, i]) for i, mlp in enumerate(self.output_hypernetworks_mlps)], dim=1
        )
        bb, cc, hh, ww = upscaled.shape
        masks = (kernels @ upscaled.view(bb, cc, hh * ww)).view(bb, -1, hh, ww)
        iou_pred = self.iou_prediction_head(iou_token_out)

        # Token 0 is the single-mask output, tokens 1..3 the multimask outputs.
        sl = slice(1, None) if multimask_output else slice(0, 1)
        return masks[:, sl], iou_pred[:, sl]


# ---------------------------------------------------------------------------------------------------------------
# The whole model
# ---------------------------------------------------------------------------------------------------------------


class Sam(nn.Module):
    """image_encoder + prompt_encoder + mask_decoder, with the official attribute names."""

    def __init__(self, cfg: SamConfig | None = None):
        super().__init__()
        self.cfg = cfg or SamConfig()
        self.image_encoder = ImageEncoderViT(self.cfg)
        self.prompt_encoder = PromptEncoder(self.cfg)
        self.mask_decoder = MaskDecoder(self.cfg)
        self.register_buffer("pixel_mean", torch.tensor(self.cfg.pixel_mean).view(-1, 1, 1), persistent=False)
        self.register_buffer("pixel_std", torch.tensor(self.cfg.pixel_std).view(-1, 1, 1), persistent=False)

    def preprocess(self, images: torch.Tensor) -> torch.Tensor:
        """RGB in 0..255 → normalised with SAM's mean and std."""
        return (images - self.pixel_mean) / self.pixel_std

    def forward(self, images, points=None, boxes=None, masks=None, multimask_output: bool = False):
        """Normalised images (B, 3, S, S) + prompts → (low-res mask logits (B, M, S/4, S/4), IoU (B, M))."""
        image_embeddings = self.image_encoder(images)
        sparse, dense = self.prompt_encoder(points, boxes, masks, batch_size=images.shape[0])
        return self.mask_decoder(
            image_embeddings, self.prompt_encoder.get_dense_pe(), sparse, dense, multimask_output
        )


def build_sam_vit_b(img_size: int = 1024) -> Sam:
    """Official ViT-B sizes with random weights at input `img_size`."""
    return Sam(sam_vit_b_config(img_size))


def count_params(module: nn.Module, trainable_only: bool = False) -> int:
    return sum(p.numel() for p in module.parameters() if p.requires_grad or not trainable_only)


# ---------------------------------------------------------------------------------------------------------------
# Official checkpoints
# ---------------------------------------------------------------------------------------------------------------

_CONTAINER_KEYS = ("model_state_dict", "state_dict", "model")
_WRAPPER_PREFIXES = ("module.", "model.", "sam.")
_IGNORED_KEYS = ("pixel_mean", "pixel_std")  # non-persistent buffers in our model


@dataclass
class LoadReport:
    """What `load_official_checkpoint` did: keys the model lacks in the file, keys the file has that the model
    does not know, and tensors that were resampled to the model's input size."""

    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    resized: list[str] = field(default_factory=list)

    def summary(self) -> str:
        return (
            f"{len(self.missing)} missing, {len(self.unexpected)} unexpected, {len(self.resized)} resized"
            + (f"; missing: {', '.join(self.missing[:8])}" if self.missing else "")
            + (f"; unexpected: {', '.join(self.unexpected[:8])}" if self.unexpected else "")
        )


def _safe_extra_globals() -> list:
    """Plain-data types that training scripts pickle next to the weights (SAM-Med3D's trainer stores its
    `argparse.Namespace` and numpy scalars such as the best Dice). They carry no code, so we allow them in
    `weights_only` loading rather than fall back to full unpickling."""
    import argparse

    allowed: list = [argparse.Namespace]
    try:
        import numpy as np

        multiarray = np._core.multiarray if hasattr(np, "_core") else np.core.multiarray  # numpy 2 vs 1
        allowed += [np.dtype, np.ndarray, type(np.dtype(np.float64)), type(np.dtype(np.float32)),
                    type(np.dtype(np.int64)), multiarray.scalar, multiarray._reconstruct,
                    # files written under numpy 1 name the same functions under numpy.core
                    (multiarray.scalar, "numpy.core.multiarray.scalar"),
                    (multiarray._reconstruct, "numpy.core.multiarray._reconstruct")]
    except (ImportError, AttributeError):  # pragma: no cover - numpy is a project dependency
        pass
    return allowed


def torch_load_weights(path: str | Path):
    """`torch.load(weights_only=True)` on CPU, allowing only the plain-data extras of `_safe_extra_globals`."""
    with torch.serialization.safe_globals(_safe_extra_globals()):
        return torch.load(path, map_location="cpu", weights_only=True)


def unwrap_state_dict(obj) -> dict[str, torch.Tensor]:
    """Find the tensor dict inside what `torch.load` returned and strip DataParallel/Lightning prefixes."""
    while isinstance(obj, Mapping) and not any(isinstance(v, torch.Tensor) for v in obj.values()):
        inner = next((obj[k] for k in _CONTAINER_KEYS if k in obj and isinstance(obj[k], Mapping)), None)
        if inner is None:
            break
        obj = inner
    if not isinstance(obj, Mapping):
        raise TypeError(f"expected a state dict, got {type(obj).__name__}")
    sd = {k: v for k, v in obj.items() if isinstance(v, torch.Tensor)}
    for prefix in _WRAPPER_PREFIXES:
        if sd and all(k.startswith(prefix) for k in sd):
            sd = {k[len(prefix):]: v for k, v in sd.items()}
    return sd


def official_key_to_ours(key: str) -> str:
    """Map an official SAM key to ours. Our modules carry the official attribute names (see the module
    docstring), so this is the identity on names; it exists so that the mapping is explicit, tested and the one
    place to change should our layout diverge."""
    return key


def our_key_to_official(key: str) -> str:
    """Inverse of `official_key_to_ours`."""
    return key


def detect_variant(sd: Mapping[str, torch.Tensor]) -> str | None:
    """'vit_b' / 'vit_l' / 'vit_h' from the patch-embedding width and the number of blocks, or None."""
    w = sd.get("image_encoder.patch_embed.proj.weight")
    if w is None:
        return None
    if w.dim() != 4:
        return f"3D ({w.dim() - 2}-D patch embedding, e.g. SAM-Med3D)"
    depth = 1 + max(
        (int(k.split(".")[2]) for k in sd if k.startswith("image_encoder.blocks.")), default=-1
    )
    for name, (dim, d) in SAM_VARIANTS.items():
        if w.shape[0] == dim and depth == d:
            return name
    return f"unknown (embed {w.shape[0]}, depth {depth})"


def convert_official_state_dict(official: Mapping[str, torch.Tensor], model: nn.Module,
                                file: str | None = None) -> tuple[dict[str, torch.Tensor], LoadReport]:
    """Official SAM state dict → one that `model.load_state_dict(strict=False)` accepts.

    Renames keys (`official_key_to_ours`), resamples `pos_embed` and the rel-pos tables to the model's size,
    and lists missing/unexpected keys. A checkpoint of another variant (e.g. ViT-H into ViT-B) or with shapes
    that cannot be resampled raises `UsageError` naming the file.
    """
    ours = model.state_dict()
    # After peft injection a wrapped layer keeps its weight under `<name>.base_layer.`; adapters are not in
    # official files and are not reported as missing.
    alias = {k.replace(".base_layer.", "."): k for k in ours if "lora_" not in k}
    want_variant = detect_variant(ours)
    have_variant = detect_variant(official)
    if have_variant is not None and want_variant is not None and have_variant != want_variant:
        raise UsageError(
            f"checkpoint is SAM {have_variant}, the model is SAM {want_variant}",
            file=file,
            fix=f"pass a {want_variant} checkpoint (e.g. sam_vit_b_01ec64.pth for vit_b)",
        )
    report = LoadReport()
    out: dict[str, torch.Tensor] = {}
    bad: list[str] = []
    for key, value in official.items():
        if key in _IGNORED_KEYS:
            continue
        name = alias.get(official_key_to_ours(key))
        if name is None:
            report.unexpected.append(key)
            continue
        target = ours[name].shape
        if value.shape != target:
            if name.endswith("pos_embed") and value.dim() == 4 and value.shape[-1] == target[-1]:
                value = resize_pos_embed(value, target[1])
            elif name.split(".")[-1].startswith("rel_pos") and value.shape[1:] == target[1:]:
                value = resize_rel_pos(value, target[0])
            else:
                bad.append(f"{key} {tuple(value.shape)} vs {tuple(target)}")
                continue
            report.resized.append(name)
        out[name] = value
    if bad:
        raise UsageError(
            f"checkpoint does not fit the model ({len(bad)} tensors of the wrong shape: {'; '.join(bad[:3])})",
            file=file,
            fix="check that the checkpoint is the model variant the manifest names",
        )
    report.missing = sorted(k for k in alias.values() if k not in out)
    return out, report


def load_official_checkpoint(path: str | Path, model: nn.Module, *, require_complete: bool = False) -> LoadReport:
    """Load an official SAM `.pth` (e.g. `sam_vit_b_01ec64.pth`) into `model` with `weights_only=True`.

    Unreadable or non-checkpoint files raise `DataError`, a wrong variant `UsageError`; missing and unexpected
    keys are logged and returned in the `LoadReport` (with `require_complete`, any missing key is a UsageError).
    Nothing is ever downloaded.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError("SAM checkpoint not found", file=str(path), fix="download it and pass its path")
    try:
        official = unwrap_state_dict(torch_load_weights(path))
    except Exception as err:  # pickle, zip and type errors all mean the same thing to the user
        raise DataError(
            f"cannot read SAM checkpoint ({type(err).__name__}: {str(err).splitlines()[0][:120] if str(err) else ''})",
            file=str(path),
            fix="the file is corrupt or not a PyTorch state dict; download it again",
        ) from err
    if not any(k.startswith(("image_encoder.", "prompt_encoder.", "mask_decoder.")) for k in official):
        raise UsageError(
            "file holds no SAM weights (no image_encoder./prompt_encoder./mask_decoder. keys)",
            file=str(path),
            fix="pass an official SAM checkpoint",
        )
    sd, report = convert_official_state_dict(official, model, file=str(path))
    if require_complete and report.missing:
        raise UsageError(f"checkpoint lacks {len(report.missing)} tensors: {report.missing[:5]}", file=str(path))
    model.load_state_dict(sd, strict=False)
    log.info("loaded %s: %s", path, report.summary())
    if report.missing or report.unexpected:
        log.warning("%s: %s", path, report.summary())
    return report
