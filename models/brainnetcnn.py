"""BrainNetCNN (Kawahara et al., NeuroImage 2017): convolutions shaped to a connectivity matrix, a baseline of the
asd-transformer card (Table 1).

Input: (B, N, N) FC matrices. Layers, as the paper describes them (its Fig. 2 / Table of the "E2E-E2N-N2G"
network), with its leaky ReLU (slope 0.33) after every layer and dropout 0.5 after N2G and the hidden dense layers:

- edge-to-edge (E2E): for edge (i, j), a learned 1×N filter over row i plus an N×1 filter over column j (the
  "cross" filter), as two ``Conv2d`` whose outputs are broadcast back to N×N and summed; 1 → 32 → 32 channels;
- edge-to-node (E2N): a 1×N filter per row, 32 → 64 channels, one value per node;
- node-to-graph (N2G): an N×1 filter over the nodes, 64 → 256 features per graph;
- dense 256 → 128 → 30 → 2 (logits; no activation on the output).

At N = 200 this has 4,146,076 parameters: E2E 2·(32·200 + 32) = 12,864 and 2·(32·32·200 + 32) = 409,664, E2N
64·32·200 + 64 = 409,664, N2G 256·64·200 + 256 = 3,277,056, dense 32,896 + 3,870 + 62. The paper could not be
consulted offline here: the widths are its E2E-E2N-N2G network as remembered (32, 32, 64, 256, 128, 30). BNT's
re-implementation (Kan et al. 2022, whose repository the ASD paper's baseline numbers probably come from) uses E2E
(32, 64) and a one-channel E2N, 933,277 parameters at N = 200: ``BrainNetCNN(n, e2e=(32, 64), e2n=1)``.
"""

from __future__ import annotations

import torch
from torch import nn


class E2E(nn.Module):
    """Edge-to-edge: out[:, :, i, j] = (row filter · X[i, :]) + (column filter · X[:, j])."""

    def __init__(self, c_in: int, c_out: int, n: int):
        super().__init__()
        self.row = nn.Conv2d(c_in, c_out, (1, n))
        self.col = nn.Conv2d(c_in, c_out, (n, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.row(x) + self.col(x)  # (B, C, N, 1) + (B, C, 1, N) broadcasts to (B, C, N, N)


class BrainNetCNN(nn.Module):
    def __init__(self, n_rois: int, e2e=(32, 32), e2n: int = 64, n2g: int = 256, dense=(128, 30),
                 num_classes: int = 2, dropout: float = 0.5, slope: float = 0.33):
        super().__init__()
        chans = (1, *e2e)
        self.e2e = nn.ModuleList(E2E(a, b, n_rois) for a, b in zip(chans[:-1], chans[1:], strict=True))
        self.e2n = nn.Conv2d(chans[-1], e2n, (1, n_rois))
        self.n2g = nn.Conv2d(e2n, n2g, (n_rois, 1))
        dims = (n2g, *dense)
        self.dense = nn.ModuleList(nn.Linear(a, b) for a, b in zip(dims[:-1], dims[1:], strict=True))
        self.out = nn.Linear(dims[-1], num_classes)
        self.act, self.drop = nn.LeakyReLU(slope), nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = x.unsqueeze(1)
        for layer in self.e2e:
            h = self.act(layer(h))
        h = self.act(self.e2n(h))  # (B, e2n, N, 1)
        h = self.drop(self.act(self.n2g(h))).flatten(1)  # (B, n2g)
        for layer in self.dense:
            h = self.drop(self.act(layer(h)))
        return self.out(h)
