"""FBNETGEN (Kan et al., MIDL 2022): a brain network generated from the fMRI time series, then a GNN; a baseline
of the asd-transformer card (Table 1).

Input: (B, N, N + T) — each ROI's FC row (node features, N) followed by its z-scored time series (T points), one
tensor so that the pipeline's loaders stay those of the other models; ``n_rois`` tells where to split.

1. Temporal feature encoder (BNT's ABIDE setting: GRU): each ROI's series cut into T/w windows of w = 4 points, a
   4-layer bidirectional GRU (hidden w), the last step's 2w outputs → Dropout 0.5 → Linear(2w → w) → LeakyReLU(0.2)
   → Linear(w → 8), softmax over the 8 features.
2. Graph generator ("product"): A = H Hᵀ (B, N, N), learnable through the encoder.
3. GNN predictor, three graph convolutions X ← A X W with the FC rows as node features: Linear(N → N), LeakyReLU,
   Linear(N → N), BatchNorm; Linear(N → N), LeakyReLU, BatchNorm; Linear(N → 64), LeakyReLU, Linear(64 → 8),
   LeakyReLU, BatchNorm over the N nodes; flatten 8N → 256 → 32 → 2. BNT's code writes the propagation as
   ``einsum('ijk,ijp->ijp')`` (each node's features times its row sum of A); this module uses the product A·X
   of the paper's GNN equation.
4. Loss (``training_loss``): cross-entropy + the paper's graph regularisers on A: group loss, the within-class
   variance of A plus 2·(1 − mean squared difference of the class means), and sparsity 1e-4·‖A‖₁. BNT sums the
   cross-entropy over the batch; here it is the mean and the regularisers are divided by the batch size, the same
   objective scaled by 1/B (Adam is insensitive to the scale).

At N = 200: 554,654 parameters, independent of T: the GRU encoder 1,324 (a 4-layer bidirectional GRU of width 4,
1,248, and its head 76) and the GNN 553,330 (three Linear(200, 200) 120,600, Linear(200, 64) 12,864, Linear(64, 8)
520, batch norms 1,200, the MLP 409,856 + 8,224 + 66). T must be a multiple of the window.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class GruEncoder(nn.Module):
    def __init__(self, window: int = 4, layers: int = 4, out: int = 8, dropout: float = 0.5):
        super().__init__()
        self.window = window
        self.gru = nn.GRU(window, window, layers, bidirectional=True, batch_first=True)
        self.head = nn.Sequential(nn.Dropout(dropout), nn.Linear(2 * window, window), nn.LeakyReLU(0.2),
                                  nn.Linear(window, out))

    def forward(self, ts: torch.Tensor) -> torch.Tensor:
        b, n, t = ts.shape
        if t % self.window:
            raise ValueError(f"{t} time points are not a multiple of the window {self.window}")
        h, _ = self.gru(ts.reshape(b * n, t // self.window, self.window))
        return self.head(h[:, -1]).view(b, n, -1)


class GNNPredictor(nn.Module):
    def __init__(self, n_rois: int, num_classes: int = 2):
        super().__init__()
        n, act = n_rois, (lambda: nn.LeakyReLU(0.2))
        self.gcn = nn.ModuleList([nn.Sequential(nn.Linear(n, n), act(), nn.Linear(n, n)),
                                  nn.Sequential(nn.Linear(n, n), act()),
                                  nn.Sequential(nn.Linear(n, 64), act(), nn.Linear(64, 8), act())])
        self.bn = nn.ModuleList([nn.BatchNorm1d(n), nn.BatchNorm1d(n), nn.BatchNorm1d(n)])
        self.fc = nn.Sequential(nn.Linear(8 * n, 256), act(), nn.Linear(256, 32), act(), nn.Linear(32, num_classes))

    def forward(self, a: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        for i, (gcn, bn) in enumerate(zip(self.gcn, self.bn, strict=True)):
            x = gcn(a @ x)
            # the first two normalise each feature over nodes and batch; the last each node over batch and features
            x = bn(x.transpose(1, 2)).transpose(1, 2) if i < 2 else bn(x)
        return self.fc(x.flatten(1))


class FBNETGEN(nn.Module):
    def __init__(self, n_rois: int, window: int = 4, gru_layers: int = 4, embed: int = 8,
                 dropout: float = 0.5, group_weight: float = 1.0, sparsity_weight: float = 1e-4,
                 num_classes: int = 2):
        super().__init__()
        self.n_rois = n_rois
        self.group_weight, self.sparsity_weight = group_weight, sparsity_weight
        self.extract = GruEncoder(window, gru_layers, embed, dropout)
        self.predictor = GNNPredictor(n_rois, num_classes)

    def graph(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.softmax(self.extract(x[..., self.n_rois:]), dim=-1)
        return h @ h.transpose(1, 2)

    def forward_with_graph(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        a = self.graph(x)
        return self.predictor(a, x[..., :self.n_rois]), a

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_with_graph(x)[0]

    def training_loss(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        logits, a = self.forward_with_graph(x)
        return F.cross_entropy(logits, y) + (self.group_weight * group_loss(a, y)
                                             + self.sparsity_weight * a.abs().sum()) / len(y)


def group_loss(a: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """FBNETGEN's group loss: graphs of one class alike (within-class variance), the class means apart."""
    loss = a.new_zeros(())
    means = []
    for c in (0, 1):
        g = a[y == c]
        if len(g) > 1:
            loss = loss + g.var(0).mean()
        if len(g):
            means.append(g.mean(0))
    if len(means) == 2:
        loss = loss + 2 * (1 - ((means[0] - means[1]) ** 2).mean())
    return loss
