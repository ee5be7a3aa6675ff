"""3D SAM in SAM-Med3D's `vit_b_ori` layout (the released SAM-Med3D checkpoints), for totalct-sam.

Spec: totalct-sam card, "Method" (`../shared/papers/totalct-sam.md`), and issue 8 item 1:

* Image encoder: Conv3d(1→768, k16, s16) on 128³ → 8³ tokens + learnable 3D absolute position embedding;
  12 blocks, 12 heads, MLP ratio 4, decomposed 3D relative positions (`rel_pos_d/h/w`), window 14, global
  blocks 2/5/8/11; neck Conv3d 1×1 768→384, LN3d, Conv3d 3×3×3 384→384, LN3d → 384×8³.
* Prompt encoder: random-Fourier 3D encoding (a 3×128 Gaussian matrix; sin, cos, sin → 384), learned
  positive/negative point embeddings, the previous mask at 32³ through conv downsampling, `no_mask` embedding.
* Mask decoder: two-way transformer (2 blocks, dim 384, 8 heads, MLP 2048, cross-attention width 192) and a
  final token→image attention; upscaling ConvT3d 384→96, LN3d, GELU, ConvT3d 96→48, GELU → 48×32³; one
  hypernetwork MLP (384→384→384→48) per mask token; IoU head.

The two-way transformer, its attention and the MLPs are dimension-agnostic and come from `sam.py`; the 3D parts
are written here with the attribute names of SAM-Med3D, so its checkpoint keys map onto ours by name.

Choices and facts of the released layout the card does not spell out:

* Windowed blocks pad the 8³ grid to one 14³ window (zeros after `norm1`), exactly as SAM-Med3D does: the
  "effectively global" attention of the card therefore also sees 2,744 − 512 padding keys. We keep that
  behaviour because the released weights were trained with it. Their rel-pos tables have 2·14 − 1 = 27 rows,
  the global blocks' 2·8 − 1 = 15.
* The dense positional grid of the SAM-Med3D prompt encoder encodes (axis 1, axis 0, axis 2) of the embedding
  grid while point prompts are encoded in the order they are given; we reproduce that quirk (`_grid_coords`)
  so that released weights behave as trained. Give point coordinates as voxel indices (axis 0, 1, 2) of the
  input volume, as SAM-Med3D's own click simulation does.
* Another input size: `Sam3dConfig(img_size=...)`; `convert_sammed3d_state_dict` resamples the 3D position
  embedding (trilinear, or adaptive average pooling when shrinking) and the rel-pos tables (linear).
* Input is one channel; intensity normalisation (per-volume z-score) belongs to the pipeline's transforms, so
  `pixel_mean`/`pixel_std` of the released model (unused by SAM-Med3D's 3D path) are not part of this module.
* totalct-sam "Change 1" (class tokens + one shared hypernetwork) is built in when `num_classes > 0`, as the
  card resolves it; new keys `mask_decoder.class_tokens.*` / `class_hypernetwork.*` are reported missing when a
  SAM-Med3D checkpoint is loaded. "Change 2" (the memorizing-transformer block) belongs to the pipeline and
  plugs into `MaskDecoder3D.image_token_block`.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from medrun.errors import DataError, UsageError

from .sam import (
    MLP,
    LoadReport,
    MLPBlock,
    TwoWayTransformer,
    resize_rel_pos,
    torch_load_weights,
    unwrap_state_dict,
)

log = logging.getLogger(__name__)


@dataclass
class Sam3dConfig:
    """Sizes of a 3D SAM. Defaults are SAM-Med3D `vit_b_ori` at 128³."""

    img_size: int = 128
    patch_size: int = 16
    in_chans: int = 1
    embed_dim: int = 768
    depth: int = 12
    num_heads: int = 12
    mlp_ratio: float = 4.0
    window_size: int = 14
    global_attn_indexes: tuple[int, ...] = (2, 5, 8, 11)
    prompt_dim: int = 384
    mask_in_chans: int = 16
    decoder_depth: int = 2
    decoder_heads: int = 8
    decoder_mlp_dim: int = 2048
    num_multimask_outputs: int = 3
    iou_head_depth: int = 3
    iou_head_hidden_dim: int = 256
    # totalct-sam "Change 1": number of foreground classes C (0 = plain SAM-Med3D, no class tokens)
    num_classes: int = 0

    @property
    def grid(self) -> int:
        return self.img_size // self.patch_size


class LayerNorm3d(nn.Module):
    """LayerNorm over the channel axis of an NCDHW tensor (eps 1e-6)."""

    def __init__(self, channels: int, eps: float = 1e-6):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mean = x.mean(1, keepdim=True)
        var = (x - mean).pow(2).mean(1, keepdim=True)
        x = (x - mean) / torch.sqrt(var + self.eps)
        return self.weight[:, None, None, None] * x + self.bias[:, None, None, None]


# ---------------------------------------------------------------------------------------------------------------
# 3D image encoder
# ---------------------------------------------------------------------------------------------------------------


def _axis_rel_pos(size: int, table: torch.Tensor) -> torch.Tensor:
    """(size, size, head_dim) embeddings of offsets i − j along one axis (query and key lengths are equal)."""
    table = resize_rel_pos(table, 2 * size - 1)
    idx = torch.arange(size, device=table.device)
    return table[idx[:, None] - idx[None, :] + size - 1]


class Attention3d(nn.Module):
    """Multi-head self-attention over a (B, D, H, W, C) grid with decomposed 3D relative positions."""

    def __init__(self, dim: int, num_heads: int, grid: int):
        super().__init__()
        self.num_heads = num_heads
        head_dim = dim // num_heads
        self.scale = head_dim**-0.5
        self.qkv = nn.Linear(dim, dim * 3)
        self.proj = nn.Linear(dim, dim)
        self.rel_pos_d = nn.Parameter(torch.zeros(2 * grid - 1, head_dim))
        self.rel_pos_h = nn.Parameter(torch.zeros(2 * grid - 1, head_dim))
        self.rel_pos_w = nn.Parameter(torch.zeros(2 * grid - 1, head_dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, d, h, w, _ = x.shape
        n = d * h * w
        qkv = self.qkv(x).reshape(b, n, 3, self.num_heads, -1).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.reshape(3, b * self.num_heads, n, -1).unbind(0)

        attn = (q * self.scale) @ k.transpose(-2, -1)
        q_grid = q.reshape(-1, d, h, w, q.shape[-1])
        bias_d = torch.einsum("bdhwc,dkc->bdhwk", q_grid, _axis_rel_pos(d, self.rel_pos_d))
        bias_h = torch.einsum("bdhwc,hkc->bdhwk", q_grid, _axis_rel_pos(h, self.rel_pos_h))
        bias_w = torch.einsum("bdhwc,wkc->bdhwk", q_grid, _axis_rel_pos(w, self.rel_pos_w))
        attn = (
            attn.view(-1, d, h, w, d, h, w)
            + bias_d[..., :, None, None]
            + bias_h[..., None, :, None]
            + bias_w[..., None, None, :]
        )
        attn = attn.view(-1, n, n).softmax(dim=-1)
        out = (attn @ v).view(b, self.num_heads, d, h, w, -1).permute(0, 2, 3, 4, 1, 5).reshape(b, d, h, w, -1)
        return self.proj(out)


def window_partition3d(x: torch.Tensor, window: int):
    """Zero-pad (B, D, H, W, C) to multiples of `window` and cut it into (B·nW, window, window, window, C)."""
    b, d, h, w, c = x.shape
    pads = [(window - s % window) % window for s in (d, h, w)]
    x = F.pad(x, (0, 0, 0, pads[2], 0, pads[1], 0, pads[0]))
    dp, hp, wp = d + pads[0], h + pads[1], w + pads[2]
    x = x.view(b, dp // window, window, hp // window, window, wp // window, window, c)
    windows = x.permute(0, 1, 3, 5, 2, 4, 6, 7).reshape(-1, window, window, window, c)
    return windows, (dp, hp, wp)


def window_unpartition3d(windows: torch.Tensor, window: int, padded, size) -> torch.Tensor:
    dp, hp, wp = padded
    d, h, w = size
    nd, nh, nw = dp // window, hp // window, wp // window
    b = windows.shape[0] // (nd * nh * nw)
    x = windows.view(b, nd, nh, nw, window, window, window, -1)
    x = x.permute(0, 1, 4, 2, 5, 3, 6, 7).reshape(b, dp, hp, wp, -1)
    return x[:, :d, :h, :w].contiguous()


class Block3d(nn.Module):
    def __init__(self, dim: int, num_heads: int, mlp_ratio: float, window_size: int, grid: int):
        super().__init__()
        self.window_size = window_size
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = Attention3d(dim, num_heads, grid=window_size if window_size > 0 else grid)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = MLPBlock(dim, int(dim * mlp_ratio))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = x
        x = self.norm1(x)
        if self.window_size > 0:
            size = x.shape[1:4]
            x, padded = window_partition3d(x, self.window_size)
            x = window_unpartition3d(self.attn(x), self.window_size, padded, size)
        else:
            x = self.attn(x)
        x = shortcut + x
        return x + self.mlp(self.norm2(x))


class PatchEmbed3d(nn.Module):
    def __init__(self, patch_size: int, in_chans: int, embed_dim: int):
        super().__init__()
        self.proj = nn.Conv3d(in_chans, embed_dim, kernel_size=patch_size, stride=patch_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x).permute(0, 2, 3, 4, 1)


class ImageEncoderViT3D(nn.Module):
    """(B, 1, S, S, S) → (B, prompt_dim, S/16, S/16, S/16)."""

    def __init__(self, cfg: Sam3dConfig):
        super().__init__()
        self.img_size = cfg.img_size
        g = cfg.grid
        self.patch_embed = PatchEmbed3d(cfg.patch_size, cfg.in_chans, cfg.embed_dim)
        self.pos_embed = nn.Parameter(torch.zeros(1, g, g, g, cfg.embed_dim))
        self.blocks = nn.ModuleList(
            Block3d(cfg.embed_dim, cfg.num_heads, cfg.mlp_ratio,
                    window_size=0 if i in cfg.global_attn_indexes else cfg.window_size, grid=g)
            for i in range(cfg.depth)
        )
        self.neck = nn.Sequential(
            nn.Conv3d(cfg.embed_dim, cfg.prompt_dim, kernel_size=1, bias=False),
            LayerNorm3d(cfg.prompt_dim),
            nn.Conv3d(cfg.prompt_dim, cfg.prompt_dim, kernel_size=3, padding=1, bias=False),
            LayerNorm3d(cfg.prompt_dim),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if tuple(x.shape[-3:]) != (self.img_size,) * 3:
            raise ValueError(f"3D image encoder built for {self.img_size}³ patches, got {tuple(x.shape[-3:])}")
        x = self.patch_embed(x) + self.pos_embed
        for block in self.blocks:
            x = block(x)
        return self.neck(x.permute(0, 4, 1, 2, 3))


# ---------------------------------------------------------------------------------------------------------------
# 3D prompt encoder
# ---------------------------------------------------------------------------------------------------------------


class PositionEmbeddingRandom3D(nn.Module):
    """Random-Fourier encoding of 3D coordinates: (sin, cos, sin) of a 3×(C/3) Gaussian projection."""

    def __init__(self, num_pos_feats: int):
        super().__init__()
        self.register_buffer("positional_encoding_gaussian_matrix", torch.randn(3, num_pos_feats))

    def _encode(self, coords: torch.Tensor) -> torch.Tensor:
        proj = 2 * math.pi * ((2 * coords - 1) @ self.positional_encoding_gaussian_matrix)
        return torch.cat([torch.sin(proj), torch.cos(proj), torch.sin(proj)], dim=-1)

    def _grid_coords(self, size: tuple[int, int, int]) -> torch.Tensor:
        """Cell centres of a (s0, s1, s2) grid in [0, 1], stacked as (axis 1, axis 0, axis 2) like SAM-Med3D."""
        s0, s1, s2 = size
        device = self.positional_encoding_gaussian_matrix.device
        a0 = (torch.arange(s0, device=device, dtype=torch.float32) + 0.5)
        a1 = (torch.arange(s1, device=device, dtype=torch.float32) + 0.5)
        a2 = (torch.arange(s2, device=device, dtype=torch.float32) + 0.5)
        c0, c1, c2 = torch.meshgrid(a0, a1, a2, indexing="ij")
        # SAM-Med3D divides axis-1 centres by s0 and axis-0 centres by s1 (equal on cubes).
        return torch.stack([c1 / s0, c0 / s1, c2 / s2], dim=-1)

    def forward(self, size: tuple[int, int, int]) -> torch.Tensor:
        return self._encode(self._grid_coords(size)).permute(3, 0, 1, 2)

    def forward_with_coords(self, coords: torch.Tensor, image_size: tuple[int, int, int]) -> torch.Tensor:
        coords = coords.clone().float()
        for i in range(3):
            coords[..., i] = coords[..., i] / image_size[i]
        return self._encode(coords)


class PromptEncoder3D(nn.Module):
    """Points and a low-res mask → sparse tokens (B, N, C) and a dense embedding (B, C, g, g, g)."""

    def __init__(self, cfg: Sam3dConfig):
        super().__init__()
        dim = cfg.prompt_dim
        self.embed_dim = dim
        self.image_embedding_size = (cfg.grid,) * 3
        self.input_image_size = (cfg.img_size,) * 3
        self.pe_layer = PositionEmbeddingRandom3D(dim // 3)
        self.point_embeddings = nn.ModuleList(nn.Embedding(1, dim) for _ in range(2))  # 0 negative, 1 positive
        self.not_a_point_embed = nn.Embedding(1, dim)
        c = cfg.mask_in_chans
        self.mask_downscaling = nn.Sequential(
            nn.Conv3d(1, c // 4, kernel_size=2, stride=2),
            LayerNorm3d(c // 4),
            nn.GELU(),
            nn.Conv3d(c // 4, c, kernel_size=2, stride=2),
            LayerNorm3d(c),
            nn.GELU(),
            nn.Conv3d(c, dim, kernel_size=1),
        )
        self.no_mask_embed = nn.Embedding(1, dim)

    def get_dense_pe(self) -> torch.Tensor:
        return self.pe_layer(self.image_embedding_size).unsqueeze(0)

    def forward(self, points=None, masks=None, batch_size: int | None = None):
        """`points` = (coords (B, N, 3) voxel indices, labels (B, N): 1 fg, 0 bg, -1 padding); `masks`
        (B, 1, 4g, 4g, 4g) previous low-res logits. No prompt: give `batch_size`."""
        b = points[0].shape[0] if points is not None else masks.shape[0] if masks is not None else batch_size or 1
        device = self.no_mask_embed.weight.device
        sparse = torch.empty(b, 0, self.embed_dim, device=device)
        if points is not None:
            coords, labels = points
            coords = torch.cat([coords + 0.5, torch.zeros_like(coords[:, :1])], dim=1)  # + one padding point
            labels = torch.cat([labels, -torch.ones_like(labels[:, :1])], dim=1)[..., None]
            emb = self.pe_layer.forward_with_coords(coords, self.input_image_size)
            emb = torch.where(labels == -1, self.not_a_point_embed.weight.expand_as(emb), emb)
            emb = (
                emb + (labels == 0) * self.point_embeddings[0].weight + (labels == 1) * self.point_embeddings[1].weight
            )
            sparse = torch.cat([sparse, emb], dim=1)
        if masks is not None:
            dense = self.mask_downscaling(masks)
        else:
            dense = self.no_mask_embed.weight.reshape(1, -1, 1, 1, 1).expand(b, -1, *self.image_embedding_size)
        return sparse, dense


# ---------------------------------------------------------------------------------------------------------------
# 3D mask decoder
# ---------------------------------------------------------------------------------------------------------------


class MaskDecoder3D(nn.Module):
    """Image embedding + prompt tokens → mask logits (B, M, 4g, 4g, 4g) and IoU predictions (B, M).

    With `cfg.num_classes = C > 0` (totalct-sam card, "Change 1"): C + 1 learned class tokens
    (`class_tokens`, background first) join the output tokens, and one shared 3-layer hypernetwork
    (`class_hypernetwork`, 384→384→384→48) turns each into a kernel, giving (B, C+1, 4g, 4g, 4g) class logits
    (`return_class_logits=True`). SAM-Med3D's own mask-token path stays as it is for the prompted binary mask.

    `image_token_block` (None by default) is a hook for a module applied to the image tokens (B, g³, dim) after
    the two-way transformer and before upscaling; totalct-sam's memorizing-transformer block goes there (card,
    "Change 2"). It belongs to that pipeline, not to this module.
    """

    def __init__(self, cfg: Sam3dConfig):
        super().__init__()
        dim = cfg.prompt_dim
        self.transformer = TwoWayTransformer(cfg.decoder_depth, dim, cfg.decoder_heads, cfg.decoder_mlp_dim)
        self.num_mask_tokens = cfg.num_multimask_outputs + 1
        self.iou_token = nn.Embedding(1, dim)
        self.mask_tokens = nn.Embedding(self.num_mask_tokens, dim)
        self.output_upscaling = nn.Sequential(
            nn.ConvTranspose3d(dim, dim // 4, kernel_size=2, stride=2),
            LayerNorm3d(dim // 4),
            nn.GELU(),
            nn.ConvTranspose3d(dim // 4, dim // 8, kernel_size=2, stride=2),
            nn.GELU(),
        )
        self.output_hypernetworks_mlps = nn.ModuleList(
            MLP(dim, dim, dim // 8, 3) for _ in range(self.num_mask_tokens)
        )
        self.iou_prediction_head = MLP(dim, cfg.iou_head_hidden_dim, self.num_mask_tokens, cfg.iou_head_depth)
        self.num_classes = cfg.num_classes
        if cfg.num_classes > 0:
            self.class_tokens = nn.Embedding(cfg.num_classes + 1, dim)
            self.class_hypernetwork = MLP(dim, dim, dim // 8, 3)
        self.image_token_block: nn.Module | None = None

    def forward(self, image_embeddings, image_pe, sparse_prompt_embeddings, dense_prompt_embeddings,
                multimask_output: bool = False, return_class_logits: bool = False):
        b = sparse_prompt_embeddings.shape[0]
        out_tokens = [self.iou_token.weight, self.mask_tokens.weight]
        if self.num_classes > 0:
            out_tokens.append(self.class_tokens.weight)
        elif return_class_logits:
            raise ValueError("class logits need a decoder built with Sam3dConfig(num_classes=C > 0)")
        out_tokens = torch.cat(out_tokens, dim=0)
        tokens = torch.cat([out_tokens.unsqueeze(0).expand(b, -1, -1), sparse_prompt_embeddings], dim=1)
        src = image_embeddings
        if src.shape[0] != b:
            src = torch.repeat_interleave(src, b // src.shape[0], dim=0)
        src = src + dense_prompt_embeddings
        pos = image_pe.expand(b, -1, -1, -1, -1)
        _, c, d, h, w = src.shape

        hs, src = self.transformer(src, pos, tokens)
        if self.image_token_block is not None:
            src = self.image_token_block(src)
        upscaled = self.output_upscaling(src.transpose(1, 2).reshape(b, c, d, h, w))
        flat = upscaled.flatten(2)  # (B, dim/8, (4g)³)
        kernels = torch.stack(
            [mlp(hs[:, 1 + i]) for i, mlp in enumerate(self.output_hypernetworks_mlps)], dim=1
        )
        masks = (kernels @ flat).view(b, -1, *upscaled.shape[2:])
        iou_pred = self.iou_prediction_head(hs[:, 0])
        sl = slice(1, None) if multimask_output else slice(0, 1)
        if not return_class_logits:
            return masks[:, sl], iou_pred[:, sl]
        start = 1 + self.num_mask_tokens
        class_kernels = self.class_hypernetwork(hs[:, start : start + self.num_classes + 1])
        class_logits = (class_kernels @ flat).view(b, -1, *upscaled.shape[2:])
        return masks[:, sl], iou_pred[:, sl], class_logits


class Sam3D(nn.Module):
    """image_encoder + prompt_encoder + mask_decoder with SAM-Med3D's attribute names."""

    def __init__(self, cfg: Sam3dConfig | None = None):
        super().__init__()
        self.cfg = cfg or Sam3dConfig()
        self.image_encoder = ImageEncoderViT3D(self.cfg)
        self.prompt_encoder = PromptEncoder3D(self.cfg)
        self.mask_decoder = MaskDecoder3D(self.cfg)

    def forward(self, volumes, points=None, masks=None, multimask_output: bool = False,
                return_class_logits: bool = False):
        """(B, 1, S, S, S) → (mask logits at S/4 per side (B, M, …), IoU predictions (B, M)[, class logits
        (B, C+1, …) when `return_class_logits`])."""
        emb = self.image_encoder(volumes)
        sparse, dense = self.prompt_encoder(points, masks, batch_size=volumes.shape[0])
        return self.mask_decoder(emb, self.prompt_encoder.get_dense_pe(), sparse, dense, multimask_output,
                                 return_class_logits)


def build_sam3d_vit_b_ori(img_size: int = 128) -> Sam3D:
    """SAM-Med3D `vit_b_ori` sizes with random weights."""
    return Sam3D(Sam3dConfig(img_size=img_size))


# ---------------------------------------------------------------------------------------------------------------
# SAM-Med3D checkpoints
# ---------------------------------------------------------------------------------------------------------------


def resize_pos_embed3d(pos: torch.Tensor, grid: int) -> torch.Tensor:
    """(1, D, H, W, C) → (1, grid, grid, grid, C): adaptive average pooling to shrink, trilinear to grow."""
    if tuple(pos.shape[1:4]) == (grid,) * 3:
        return pos
    x = pos.permute(0, 4, 1, 2, 3).float()
    if grid <= min(pos.shape[1:4]):
        x = F.adaptive_avg_pool3d(x, grid)
    else:
        x = F.interpolate(x, size=(grid,) * 3, mode="trilinear", align_corners=False)
    return x.permute(0, 2, 3, 4, 1).to(pos.dtype)


def convert_sammed3d_state_dict(official, model: Sam3D, file: str | None = None):
    """SAM-Med3D state dict → ours (names are identical; resamples pos_embed and rel-pos tables; reports
    missing/unexpected keys; a checkpoint of another width or layout raises UsageError)."""
    ours = model.state_dict()
    alias = {k.replace(".base_layer.", "."): k for k in ours if "lora_" not in k}
    w = official.get("image_encoder.patch_embed.proj.weight")
    if w is not None and w.shape[:2] != ours["image_encoder.patch_embed.proj.weight"].shape[:2]:
        raise UsageError(
            f"checkpoint's 3D patch embedding is {tuple(w.shape)}, the model expects "
            f"{tuple(ours['image_encoder.patch_embed.proj.weight'].shape)} (a SAM-Med3D vit_b_ori checkpoint)",
            file=file,
            fix="pass sam_med3d.pth / sam_med3d_turbo.pth (vit_b_ori), not a 2D SAM or another variant",
        )
    report = LoadReport()
    out, bad = {}, []
    for key, value in official.items():
        if key in ("pixel_mean", "pixel_std"):
            continue
        name = alias.get(key)
        if name is None:
            report.unexpected.append(key)
            continue
        target = ours[name].shape
        if value.shape != target:
            if name.endswith("pos_embed") and value.dim() == 5 and value.shape[-1] == target[-1]:
                value = resize_pos_embed3d(value, target[1])
            elif name.split(".")[-1].startswith("rel_pos") and value.shape[1:] == target[1:]:
                value = resize_rel_pos(value, target[0])
            else:
                bad.append(f"{key} {tuple(value.shape)} vs {tuple(target)}")
                continue
            report.resized.append(name)
        out[name] = value
    if bad:
        raise UsageError(f"checkpoint does not fit the 3D model: {'; '.join(bad[:3])}", file=file,
                         fix="pass a SAM-Med3D vit_b_ori checkpoint")
    report.missing = sorted(k for k in alias.values() if k not in out)
    return out, report


def load_sammed3d_checkpoint(path: str | Path, model: nn.Module, *, prefix: str = "") -> LoadReport:
    """Load a SAM-Med3D `.pth` (`{"model_state_dict": …}` or a bare state dict) with `weights_only=True`.

    `model` is a `Sam3D`, or any module holding one under `prefix` (e.g. "sam." for a wrapper); keys of the
    wrapper outside the SAM (new modules) are then reported as missing. Corrupt files raise DataError, a
    wrong variant UsageError."""
    path = Path(path)
    if not path.is_file():
        raise DataError("SAM-Med3D checkpoint not found", file=str(path), fix="download it and pass its path")
    try:
        official = unwrap_state_dict(torch_load_weights(path))
    except Exception as err:
        raise DataError(f"cannot read SAM-Med3D checkpoint ({type(err).__name__})", file=str(path),
                        fix="the file is corrupt or not a PyTorch state dict; download it again") from err
    if not any(k.startswith("image_encoder.") for k in official):
        raise UsageError("file holds no SAM-Med3D weights (no image_encoder. keys)", file=str(path))
    sam = model.get_submodule(prefix.rstrip(".")) if prefix else model
    sd, report = convert_sammed3d_state_dict(official, sam, file=str(path))
    sam.load_state_dict(sd, strict=False)
    if prefix:
        inside = {prefix + k for k in sam.state_dict()}
        report.missing += sorted(k for k in model.state_dict() if k not in inside)
    if report.missing or report.unexpected:
        log.warning("%s: %s", path, report.summary())
    return report
