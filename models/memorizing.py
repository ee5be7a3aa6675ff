"""Memorizing-transformer block (kNN memory + gate) and TotalCT-SAM, the 3D SAM it plugs into.

Spec: totalct-sam card, "Method", Change 2 (`../shared/papers/totalct-sam.md`), after Wu et al. 2022
("Memorizing Transformers") and MoViT. Applied to the image tokens (B, N, dim) after the two-way transformer of
the 3D mask decoder (`MaskDecoder3D.image_token_block`):

* q, k, v: Linear(dim → inner) each, `heads` heads of `inner/heads` channels; out: Linear(inner → dim).
* Local attention A_loc: softmax(q·kᵀ/√d)·v over the N current tokens.
* Memory attention A_mem: for each query and head, the top-k keys by dot product among the (key, value) pairs of
  an external FIFO memory (`KNNMemory`, exact search with `torch.topk`), softmax(q·k_topᵀ/√d)·v_top.
* Mix per head: g·A_mem + (1 − g)·A_loc with g = sigmoid(b_h), b_h a learned per-head bias.
* out = LayerNorm(x + out(mix)).
* Sizes at the card's dim 384, 8 heads, inner 192: 3·(384·192 + 192) + 192·384 + 384 + 2·384 + 8 = 296,648
  parameters (the card's 14.18 − 13.88 = 0.30 M).

Choices where the card is silent (also in the pipeline's docstring):

* The gate bias starts at −5 (g = 0.0067 ≈ 0), so a new block starts as the local path plus a small memory share.
  With g exactly 0 (bias −∞) the block is bit-for-bit the local path.
* The memory is one global FIFO of token entries (each entry holds every head's key and value), shared by all
  volumes and batch elements, as MoViT does; it is written with the detached keys and values of every token of
  every training forward (after they are used, so a step never retrieves its own tokens), and never written in
  eval mode ("frozen at inference"). Empty memory: the block is the local path.
* The memory is stored as persistent buffers, so it is saved with the weights (`model.safetensors`) and an eval
  run on a finished train run retrieves from the memory training left.
* Retrieval is by unnormalised dot product (the same scores the attention uses), in query chunks so that a
  16,384-entry memory does not need a (B·heads·N·M) score tensor at once. Gradients flow to the queries
  through the retrieved keys' scores; the memory itself is constant.
* Multi-GPU: there is no all-gather of keys. Under DDP (Lightning's default `broadcast_buffers=True`) the
  buffers are broadcast from rank 0 before each forward, so every rank works with rank 0's memory and the other
  ranks' writes are overwritten; on one device the memory is exactly the card's "kept across iterations".
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from .sam3d import Sam3D, Sam3dConfig


class KNNMemory(nn.Module):
    """A FIFO ring buffer of `size` (key, value) entries, each (heads, head_dim); exact top-k search."""

    def __init__(self, size: int, heads: int, head_dim: int):
        super().__init__()
        self.size = size
        self.register_buffer("keys", torch.zeros(size, heads, head_dim))
        self.register_buffer("values", torch.zeros(size, heads, head_dim))
        self.register_buffer("count", torch.zeros((), dtype=torch.long))  # entries written so far (all time)

    def __len__(self) -> int:
        return int(min(int(self.count), self.size))

    @torch.no_grad()
    def add(self, keys: torch.Tensor, values: torch.Tensor) -> None:
        """Append (n, heads, head_dim) entries, overwriting the oldest when full."""
        keys, values = keys.detach().to(self.keys.dtype), values.detach().to(self.values.dtype)
        n = keys.shape[0]
        if n >= self.size:  # only the newest `size` entries survive
            keys, values = keys[-self.size:], values[-self.size:]
            start = (int(self.count) + n - self.size) % self.size
            idx = (torch.arange(self.size, device=keys.device) + start) % self.size
        else:
            idx = (torch.arange(n, device=keys.device) + int(self.count)) % self.size
        self.keys[idx] = keys
        self.values[idx] = values
        self.count += n

    def ordered(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The stored entries, oldest first."""
        n = len(self)
        if n < self.size:
            return self.keys[:n], self.values[:n]
        start = int(self.count) % self.size
        idx = (torch.arange(self.size, device=self.keys.device) + start) % self.size
        return self.keys[idx], self.values[idx]

    def clear(self) -> None:
        self.keys.zero_()
        self.values.zero_()
        self.count.zero_()

    def search(self, q: torch.Tensor, k: int, chunk: int = 256) -> tuple[torch.Tensor, torch.Tensor]:
        """For q (B, heads, N, d): the top-k memory keys and values per query and head, (B, heads, N, k, d)."""
        n = len(self)
        mk = self.keys[:n].transpose(0, 1)  # (heads, n, d); order does not matter for search
        mv = self.values[:n].transpose(0, 1)
        k = min(k, n)
        out_k, out_v = [], []
        heads = torch.arange(mk.shape[0], device=q.device)[None, :, None, None]
        for s in range(0, q.shape[2], chunk):
            qc = q[:, :, s:s + chunk]
            with torch.no_grad():
                idx = torch.einsum("bhnd,hmd->bhnm", qc, mk).topk(k, dim=-1).indices  # (B, h, c, k)
            out_k.append(mk[heads, idx])
            out_v.append(mv[heads, idx])
        return torch.cat(out_k, 2), torch.cat(out_v, 2)


class MemorizingBlock(nn.Module):
    """kNN-augmented attention over (B, N, dim) tokens: gated mix of local and memory attention, residual, LN."""

    def __init__(self, dim: int = 384, heads: int = 8, inner_dim: int = 192, memory_size: int = 16_384,
                 topk: int = 32, gate_init: float = -5.0):
        super().__init__()
        if inner_dim % heads:
            raise ValueError(f"inner_dim {inner_dim} is not divisible by {heads} heads")
        self.heads, self.head_dim, self.topk = heads, inner_dim // heads, topk
        self.q_proj = nn.Linear(dim, inner_dim)
        self.k_proj = nn.Linear(dim, inner_dim)
        self.v_proj = nn.Linear(dim, inner_dim)
        self.out_proj = nn.Linear(inner_dim, dim)
        self.norm = nn.LayerNorm(dim)
        self.gate = nn.Parameter(torch.full((heads,), float(gate_init)))
        self.memory = KNNMemory(memory_size, heads, self.head_dim)
        self.write = True  # training forwards add their keys/values to the memory (eval never does)

    def _split(self, x: torch.Tensor) -> torch.Tensor:
        b, n, _ = x.shape
        return x.view(b, n, self.heads, self.head_dim).transpose(1, 2)  # (B, h, N, d)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, _ = x.shape
        q, k, v = self._split(self.q_proj(x)), self._split(self.k_proj(x)), self._split(self.v_proj(x))
        scale = 1.0 / math.sqrt(self.head_dim)
        local = torch.softmax((q @ k.transpose(-1, -2)) * scale, dim=-1) @ v  # (B, h, N, d)
        if len(self.memory) > 0:
            mk, mv = self.memory.search(q, self.topk)  # (B, h, N, k, d)
            w = torch.softmax(torch.einsum("bhnd,bhnkd->bhnk", q, mk) * scale, dim=-1)
            remote = torch.einsum("bhnk,bhnkd->bhnd", w, mv)
            g = torch.sigmoid(self.gate)[None, :, None, None]
            mixed = g * remote + (1 - g) * local
        else:
            mixed = local
        if self.training and self.write:
            self.memory.add(k.transpose(1, 2).reshape(b * n, self.heads, self.head_dim),
                            v.transpose(1, 2).reshape(b * n, self.heads, self.head_dim))
        out = self.out_proj(mixed.transpose(1, 2).reshape(b, n, -1))
        return self.norm(x + out)


class TotalCTSAM(Sam3D):
    """SAM-Med3D (vit_b_ori layout) with C class tokens (Change 1) and, unless `memory=False` (the Table 3
    ablation), a `MemorizingBlock` on the decoder's image tokens (Change 2). State-dict keys are SAM-Med3D's,
    so a released checkpoint loads by name; the new modules are `mask_decoder.class_tokens`,
    `mask_decoder.class_hypernetwork` and `mask_decoder.image_token_block`."""

    def __init__(self, cfg: Sam3dConfig, memory: bool = True, memory_size: int = 16_384, topk: int = 32,
                 memory_heads: int = 8, gate_init: float = -5.0):
        if cfg.num_classes < 1:
            raise ValueError("TotalCT-SAM needs Sam3dConfig(num_classes=C ≥ 1)")
        super().__init__(cfg)
        if memory:
            dim = cfg.prompt_dim
            self.mask_decoder.image_token_block = MemorizingBlock(dim, memory_heads, dim // 2, memory_size, topk,
                                                                  gate_init)

    @property
    def memory_block(self) -> MemorizingBlock | None:
        return self.mask_decoder.image_token_block

    def new_module_prefixes(self) -> tuple[str, ...]:
        return ("mask_decoder.class_tokens.", "mask_decoder.class_hypernetwork.", "mask_decoder.image_token_block.")

    def decode(self, emb: torch.Tensor, points=None, write_memory: bool = True):
        """Decoder on an image embedding → (binary mask logits (B, 1, S, S, S), class logits (B, C+1, S, S, S)),
        both upsampled ×4 (trilinear) to the input size."""
        b = emb.shape[0] if points is None else points[0].shape[0]
        sparse, dense = self.prompt_encoder(points, None, batch_size=b)
        block = self.memory_block
        if block is not None:
            previous, block.write = block.write, write_memory
        try:
            masks, _, logits = self.mask_decoder(emb, self.prompt_encoder.get_dense_pe(), sparse, dense, False, True)
        finally:
            if block is not None:
                block.write = previous
        size = (self.cfg.img_size,) * 3
        up = lambda t: F.interpolate(t, size=size, mode="trilinear", align_corners=False)  # noqa: E731
        return up(masks), up(logits)

    def semantic(self, volumes: torch.Tensor) -> torch.Tensor:
        """Prompt-free class logits (B, C+1, S, S, S) — what sliding-window inference calls."""
        return self.decode(self.image_encoder(volumes))[1]

    def prompted(self, volumes: torch.Tensor, coords: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Point-prompted binary mask logits (B, 1, S, S, S); coords (B, N, 3) voxel indices, labels (B, N)."""
        return self.decode(self.image_encoder(volumes), (coords, labels))[0]
