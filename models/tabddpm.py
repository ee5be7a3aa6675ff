"""TabDDPM's denoiser for numerical tables (Kotelnikov et al., ICML 2023), the sepsis-synth card's baseline.

``MLPDiffusion`` predicts the noise added to a row: the row is projected to ``dim_t``, the diffusion timestep's
sinusoidal embedding (diffusers' ``Timesteps``, cos first, no frequency shift, as TabDDPM) goes through diffusers'
``TimestepEmbedding`` (Linear–SiLU–Linear), the class label's embedding passes a SiLU and is added (TabDDPM's
``is_y_cond``), and an MLP (Linear–ReLU–Dropout blocks, then a linear head) maps the sum back to the row's width.
Pair it with a diffusers ``DDPMScheduler`` (cosine ``squaredcos_cap_v2`` betas, ``clip_sample=False``).

Shapes: ``x`` (B, d_in) float, ``t`` (B,) int timesteps, ``y`` (B,) int classes → (B, d_in).
"""

from __future__ import annotations

import torch
from torch import nn


class MLPDiffusion(nn.Module):
    def __init__(self, d_in: int, num_classes: int = 2, layers: tuple[int, ...] | list[int] = (256, 256, 256, 256),
                 dim_t: int = 128, dropout: float = 0.0):
        super().__init__()
        from diffusers.models.embeddings import TimestepEmbedding, Timesteps

        self.d_in, self.num_classes, self.dim_t = d_in, num_classes, dim_t
        self.proj = nn.Linear(d_in, dim_t)
        self.time_proj = Timesteps(dim_t, flip_sin_to_cos=True, downscale_freq_shift=0)
        self.time_embed = TimestepEmbedding(dim_t, dim_t)
        self.label_emb = nn.Embedding(num_classes, dim_t) if num_classes > 0 else None
        blocks, width = [], dim_t
        for w in layers:
            blocks += [nn.Linear(width, w), nn.ReLU(), nn.Dropout(dropout)]
            width = w
        self.mlp = nn.Sequential(*blocks)
        self.head = nn.Linear(width, d_in)

    def forward(self, x: torch.Tensor, t: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        emb = self.time_embed(self.time_proj(t.reshape(-1)).to(x.dtype))
        if self.label_emb is not None and y is not None:
            emb = emb + nn.functional.silu(self.label_emb(y.reshape(-1).long()))
        return self.head(self.mlp(self.proj(x) + emb))
