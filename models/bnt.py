"""Brain Network Transformer (BNT; Kan et al., NeurIPS 2022), a baseline of the asd-transformer card (Table 1).

Input: (B, N, N) FC matrices; each ROI's row is a token (d_model = N, no positional encoding, as BNT's ABIDE
setting). Two post-norm ``nn.TransformerEncoderLayer`` (4 heads, FFN 1024, dropout 0.1, ReLU), then the
orthonormal-cluster readout (OCRead):

- K cluster centres E (K × N; BNT uses K = 100 on ABIDE), Xavier-uniform then orthonormalised (QR, i.e.
  Gram–Schmidt) and frozen (a buffer, so K ≤ N);
- a small encoder MLP over the flattened node embeddings (N·N → 32 → 32 → N·N, LeakyReLU), as BNT's code
  ("project_assignment"), on which the assignment is computed: P_ik = softmax_k(⟨enc(Z)_i, E_k⟩² / ‖E_k‖);
- Z_G = Pᵀ Z (K × N), Linear(N → 8) + LeakyReLU per cluster, flatten, MLP 8K → 256 → 32 → 2 (LeakyReLU).

At N = 200, K = 100: 3,960,890 trainable parameters (two encoder layers of 572,424, the assignment encoder
2,601,088, the head 1,608 + 205,056 + 8,224 + 66), which matches BNT's reported size on ABIDE (about 4.0 M).
BNT's DEC-style readout also allows learnable or non-orthogonal centres; this module keeps its ABIDE defaults only.
"""

from __future__ import annotations

import torch
from torch import nn


class OCReadDEC(nn.Module):
    """BNT's orthonormal-cluster readout with its assignment encoder (squared projections on frozen centres)."""

    def __init__(self, n_nodes: int, d: int, clusters: int = 100, hidden: int = 32):
        super().__init__()
        if clusters > d:
            raise ValueError(f"{clusters} orthonormal centres need d_model ≥ {clusters} (got {d})")
        e = torch.empty(clusters, d)
        nn.init.xavier_uniform_(e)
        q, _ = torch.linalg.qr(e.T)
        self.register_buffer("centres", q.T.contiguous())
        self.encoder = nn.Sequential(nn.Linear(n_nodes * d, hidden), nn.LeakyReLU(), nn.Linear(hidden, hidden),
                                     nn.LeakyReLU(), nn.Linear(hidden, n_nodes * d))

    def assignment(self, z: torch.Tensor) -> torch.Tensor:
        enc = self.encoder(z.flatten(1)).view_as(z)
        proj = (enc @ self.centres.T) ** 2 / self.centres.norm(dim=-1)
        return torch.softmax(proj, dim=-1)  # (B, N, K)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.assignment(z).transpose(1, 2) @ z  # (B, K, d)


class BNT(nn.Module):
    def __init__(self, n_rois: int, clusters: int = 100, nhead: int = 4, dim_feedforward: int = 1024,
                 dropout: float = 0.1, num_classes: int = 2):
        super().__init__()
        if n_rois % nhead:
            raise ValueError(f"{nhead} heads do not divide d_model = {n_rois} ROIs")
        self.layers = nn.ModuleList(
            nn.TransformerEncoderLayer(n_rois, nhead, dim_feedforward, dropout, batch_first=True) for _ in range(2))
        self.readout = OCReadDEC(n_rois, n_rois, clusters)
        self.dim_reduction = nn.Sequential(nn.Linear(n_rois, 8), nn.LeakyReLU())
        self.fc = nn.Sequential(nn.Linear(8 * clusters, 256), nn.LeakyReLU(), nn.Linear(256, 32), nn.LeakyReLU(),
                                nn.Linear(32, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for layer in self.layers:
            x = layer(x)
        return self.fc(self.dim_reduction(self.readout(x)).flatten(1))
