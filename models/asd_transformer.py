"""The ASD attention transformer (ICPR 2024): Com-TF's local–global transformer over community blocks of the FC
matrix, with an interaction module between the layers, and BNT's orthogonal-cluster readout (OCRead).

Input: (B, N, N) node features (FC rows, already ComBat-harmonised and scaled by local efficiency), rows and
columns ordered so that each community's ROIs are contiguous (``blocks`` gives the block sizes). d_model = N.

1. Local encoder, shared by all communities: for each block k, ``[p_k; X_k] → [p'_k; H_k]`` (a learnable prompt
   token p_k per community, Xavier-normal init).
2. Community score a_k: the local layer's attention paid to the prompt token (its column of the head-averaged
   attention map of block k, averaged over query rows), detached.
3. Interaction (``interaction``):
   - ``add`` (default, the card's resolution): rank communities by a_k descending (π); block π(r) gets prompt
     p'_π(K+1−r) added to every node embedding (high-attention blocks meet low-attention prompts); the node stream
     is H_π(1..K) and the prompt stream p'_π(K..1).
   - ``concat``: the paper's literal form, reordering only (H_π(1..K), p'_π(K..1)); a post-norm transformer without
     positional encodings is permutation-equivariant and OCRead is permutation-invariant, so this predicts exactly
     what ``none`` does (tested).
   - ``none``: Com-TF, the global layer sees [p'_1..K; H_1..K] in community order.
4. Global encoder (own weights) over the K + N tokens; the N node outputs go to OCRead.
5. OCRead: K_c frozen orthonormal centres E (Xavier-uniform then Gram–Schmidt, a buffer); P = softmax_k(⟨Z_i, E_k⟩);
   Z_G = Pᵀ Z; per-cluster Linear(d→8) + LeakyReLU, flatten, MLP 8·K_c → 256 → 32 → 2 with LeakyReLU.

At the paper's size (N = 200, 8 heads, FFN 1024, 8 communities, 8 clusters) this has 1,172,986 parameters.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

INTERACTIONS = ("add", "concat", "none")
CC200_BLOCKS = (41, 29, 21, 19, 20, 7, 21, 42)  # Com-TF's 8 communities of the Craddock-200 ROIs


class EncoderLayer(nn.Module):
    """``nn.TransformerEncoderLayer`` (post-norm, ReLU, batch_first) that also returns the head-averaged attention
    map; the same parameters and names as PyTorch's."""

    def __init__(self, d_model: int, nhead: int, dim_feedforward: int, dropout: float = 0.1):
        super().__init__()
        self.self_attn = nn.MultiheadAttention(d_model, nhead, dropout=dropout, batch_first=True)
        self.linear1 = nn.Linear(d_model, dim_feedforward)
        self.linear2 = nn.Linear(dim_feedforward, d_model)
        self.norm1, self.norm2 = nn.LayerNorm(d_model), nn.LayerNorm(d_model)
        self.dropout, self.dropout1, self.dropout2 = nn.Dropout(dropout), nn.Dropout(dropout), nn.Dropout(dropout)

    def forward(
        self, x: torch.Tensor, key_padding_mask: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``key_padding_mask`` (B, L), True = padding: padded tokens are not attended to, and the feed-forward part
        runs on the real tokens only (padded rows of the output are zeros)."""
        a, w = self.self_attn(x, x, x, key_padding_mask=key_padding_mask, need_weights=True, average_attn_weights=True)
        x = x + self.dropout1(a)
        if key_padding_mask is None:
            return self._ffn(x), w
        keep = ~key_padding_mask
        out = x.new_zeros(x.shape)
        out[keep] = self._ffn(x[keep])
        return out, w

    def _ffn(self, x: torch.Tensor) -> torch.Tensor:
        x = self.norm1(x)
        return self.norm2(x + self.dropout2(self.linear2(self.dropout(F.relu(self.linear1(x))))))


class OCRead(nn.Module):
    """BNT's orthogonal-cluster readout with frozen orthonormal centres and the Com-TF/BNT head."""

    def __init__(self, d_model: int, clusters: int = 8, reduced: int = 8, hidden=(256, 32), num_classes: int = 2):
        super().__init__()
        e = torch.empty(clusters, d_model)
        nn.init.xavier_uniform_(e)
        q, _ = torch.linalg.qr(e.T)  # Gram–Schmidt on the K centres (columns of eᵀ)
        self.register_buffer("centres", q.T.contiguous())
        self.dim_reduction = nn.Sequential(nn.Linear(d_model, reduced), nn.LeakyReLU())
        dims = (clusters * reduced, *hidden)
        layers: list[nn.Module] = []
        for a, b in zip(dims[:-1], dims[1:], strict=True):
            layers += [nn.Linear(a, b), nn.LeakyReLU()]
        self.fc = nn.Sequential(*layers, nn.Linear(dims[-1], num_classes))

    def assignment(self, z: torch.Tensor) -> torch.Tensor:
        return torch.softmax(z @ self.centres.T, dim=-1)  # (B, N, K)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        p = self.assignment(z)
        zg = p.transpose(1, 2) @ z  # (B, K, d)
        return self.fc(self.dim_reduction(zg).flatten(1))


class AsdTransformer(nn.Module):
    def __init__(self, blocks: tuple[int, ...] | list[int], nhead: int = 8, dim_feedforward: int = 1024,
                 dropout: float = 0.1, clusters: int = 8, interaction: str = "add", num_classes: int = 2):
        super().__init__()
        if interaction not in INTERACTIONS:
            raise ValueError(f"interaction must be one of {INTERACTIONS}")
        self.blocks = tuple(int(b) for b in blocks)
        d = sum(self.blocks)
        self.d_model, self.interaction = d, interaction
        self.prompts = nn.Parameter(torch.empty(len(self.blocks), d))
        nn.init.xavier_normal_(self.prompts)
        self.local = EncoderLayer(d, nhead, dim_feedforward, dropout)
        self.glob = EncoderLayer(d, nhead, dim_feedforward, dropout)
        self.readout = OCRead(d, clusters, num_classes=num_classes)
        self.last_attention: dict = {}

    def encode(self, x: torch.Tensor) -> dict:
        """Everything up to the readout: node outputs ``z`` (B, N, d), community scores, the order π, the global
        layer's attention map (B, K + N, K + N) and the node permutation it was computed in."""
        b, n, _ = x.shape
        kc, dev = len(self.blocks), x.device
        # the local layer on every community at once: (B·K, 1 + max block, d) with padded keys masked
        m = max(self.blocks)
        comm = torch.repeat_interleave(torch.arange(kc, device=dev), torch.tensor(self.blocks, device=dev))
        starts = torch.tensor([0, *self.blocks[:-1]], device=dev).cumsum(0)
        slot = torch.arange(n, device=dev) - starts[comm]  # position of each node inside its block
        tokens = x.new_zeros(b, kc, 1 + m, n)
        tokens[:, :, 0] = self.prompts
        tokens[:, comm, 1 + slot] = x
        pad = torch.ones(kc, 1 + m, dtype=torch.bool, device=dev)
        pad[:, 0] = False
        pad[comm, 1 + slot] = False
        out, w = self.local(tokens.reshape(b * kc, 1 + m, n), pad.repeat(b, 1))
        out, w = out.reshape(b, kc, 1 + m, n), w.reshape(b, kc, 1 + m, 1 + m)
        prompts = out[:, :, 0]  # (B, K, d)
        h = out[:, comm, 1 + slot]  # (B, N, d), community order
        real = (~pad).float()  # query rows that are tokens of the block
        score = ((w[..., 0] * real).sum(-1) / real.sum(-1)).detach()  # attention paid to the prompt, mean over queries
        if self.interaction == "none":
            order = torch.arange(kc, device=dev).expand(b, kc)
            node_perm = torch.arange(n, device=dev).expand(b, n)
            g_prompts, g_nodes = prompts, h
        else:
            order, rank, partner = pairing(score)
            if self.interaction == "add":
                h = h + prompts.gather(1, partner[:, comm, None].expand(b, n, n))
            # nodes of π(1), π(2), … (stable inside a block); prompts in the reverse order π(K), …, π(1)
            node_perm = torch.argsort(rank[:, comm] * n + torch.arange(n, device=dev), dim=1)
            g_nodes = h.gather(1, node_perm[:, :, None].expand(b, n, n))
            g_prompts = prompts.gather(1, order.flip(1)[:, :, None].expand(b, kc, n))
        out, w = self.glob(torch.cat([g_prompts, g_nodes], 1))
        z = out[:, kc:]
        return {"z": z, "score": score, "order": order, "global_attention": w, "node_perm": node_perm}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.readout(self.encode(x)["z"])


def pairing(score: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Community scores (B, K) → π (communities by score, descending; ties keep index order), the rank r(k) of each
    community, and the partner of each community: block π(r) is paired with prompt π(K+1−r), so the most attended
    block gets the least attended community's prompt."""
    kc = score.shape[1]
    order = torch.argsort(-score, dim=1, stable=True)
    rank = torch.argsort(order, dim=1)
    return order, rank, order.gather(1, kc - 1 - rank)


def paper_model(interaction: str = "add") -> AsdTransformer:
    """The paper's size: CC200 (200 ROIs in Com-TF's 8 communities), 8 heads, FFN 1024, 8 clusters."""
    return AsdTransformer(CC200_BLOCKS, 8, 1024, 0.1, 8, interaction)
