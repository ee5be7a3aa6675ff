"""Networks for flow-cytometry samples as sets of events (mrd-flow card: Weijler et al., "On the importance of
local and global feature learning for automated MRD detection in flow cytometry data").

Every network maps a batch of samples ``x`` (B, N, F) — B samples of N events with F marker values — to one blast
logit per event (B, N). Graph networks also take ``edge_index`` (2, E): a kNN graph over the B·N events flattened
sample after sample (row 0 the neighbour j, row 1 the event i that aggregates it, as PyG's ``knn_graph``).
:class:`FlowNet` wraps a network with the kNN graph construction (on all markers, also those dropped from the
node features: Table 7) so that one call ``net(x_all)`` does everything on the device the input is on.

Families (4 network layers + a linear head, hidden 32, 4 heads, GELU unless stated):

- ``mlp`` and ``mlp-mean|max|pma``: 4 × [Linear → GELU → BatchNorm] → Linear; the global variants concatenate a
  pooled vector (mean, max, or a one-seed one-head PMA) to each event before the head.
- ``pointnet`` / ``pointnet-adapted``: segmentation PointNet without the input/feature T-nets (per-event 64 → 128,
  1024 before the max-pool; head 512-256-128); ``adapted`` concatenates the 1024-d per-event features instead of
  the 128-d ones to the 1024-d global vector.
- ``st`` (ISAB with ``inducing`` learned points), ``st-noatt`` (attention replaced by Q' + K' + V', two self
  blocks per layer as the reference code), ``reluformer`` (linear attention with φ = ReLU), ``st-fps`` (inducing
  points are the events farthest-point sampled from the input, :func:`fps`).
- ``gcn`` / ``gat`` / ``gin`` (PyTorch Geometric's GCNConv(improved) / GATConv(4 heads × 8) / GINConv(MLP
  in→32→32→32)), ``gat-asap`` / ``gin-asap`` (two blocks of two layers with ASAPooling to 100 then 50 nodes; the
  mean of the pooled nodes is broadcast to every event and concatenated before a 2-layer head).
- ``gat-st-fps`` / ``gin-st-fps`` (proposed): one GNN layer, its GELU output concatenated to the input (F + 32),
  then 3 FPS set-attention blocks and the head.

The multi-head attention block follows the reference code of the Set Transformer (not ``torch.nn.MultiheadAttention``
nor PyG's ``MultiheadAttentionBlock``, which differ): Q' = W_q Q, K' = W_k K, V' = W_v K split into heads;
O = LN0(Q' + softmax(Q'K'ᵀ/√d_V) V') with d_V the full width (the reference's scale); out = LN1(O + GELU(W_o O)).
Softmax attention runs through ``scaled_dot_product_attention`` so that N × m attention maps of full samples
(5·10⁵ events) are never held in memory.

Imports torch and PyTorch Geometric only (scipy for the kNN graph on the CPU).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

ARCHS = ("mlp", "mlp-mean", "mlp-max", "mlp-pma", "pointnet", "pointnet-adapted", "st", "st-noatt", "reluformer",
         "st-fps", "gcn", "gat", "gin", "gat-asap", "gin-asap", "gat-st-fps", "gin-st-fps")
GRAPH_ARCHS = {a for a in ARCHS if a.split("-")[0] in ("gcn", "gat", "gin")}


# -- sampling and graphs ------------------------------------------------------------------------------------------
def fps_count(n: int, ratio: float, minimum: int = 16) -> int:
    """How many points FPS keeps of ``n``: ⌈ratio·n⌉, at least ``minimum`` (and at most ``n``)."""
    return max(1, min(n, max(minimum, math.ceil(ratio * n))))


@torch.no_grad()
def fps(x: torch.Tensor, m: int, start: torch.Tensor | int = 0) -> torch.Tensor:
    """Farthest point sampling, batched: (B, N, F) → (B, m) indices. The first index is ``start`` (per sample or
    one for all); each next one is the event farthest (Euclidean) from those picked so far, the lowest index on
    ties. O(N·m) time, O(N) memory per sample."""
    b, n, _ = x.shape
    idx = torch.empty(b, m, dtype=torch.long, device=x.device)
    idx[:, 0] = torch.as_tensor(start, device=x.device).expand(b)
    dist = torch.full((b, n), float("inf"), device=x.device, dtype=x.dtype)
    rows = torch.arange(b, device=x.device)
    for i in range(1, m):
        last = x[rows, idx[:, i - 1]]  # (B, F)
        dist = torch.minimum(dist, ((x - last[:, None]) ** 2).sum(-1))
        idx[:, i] = dist.argmax(-1)
    return idx


@torch.no_grad()
def knn_neighbours(points: torch.Tensor, k: int) -> torch.Tensor:
    """(N, F) → (N, k) indices of each point's k nearest other points (Euclidean). CUDA: exact, chunked
    ``cdist`` + ``topk``; CPU: scipy's cKDTree on both cores."""
    n = points.shape[0]
    k = min(k, n - 1)
    if k <= 0:
        return torch.zeros(n, 0, dtype=torch.long, device=points.device)
    if points.is_cuda:
        out = []
        for i in range(0, n, 8192):
            d = torch.cdist(points[i:i + 8192].float(), points.float())
            rows = torch.arange(d.shape[0], device=d.device)
            d[rows, rows + i] = float("inf")
            out.append(d.topk(k, largest=False).indices)
        return torch.cat(out)
    from scipy.spatial import cKDTree

    pts = points.detach().float().numpy()
    _, nb = cKDTree(pts).query(pts, k=k + 1, workers=-1)
    nb = torch.from_numpy(nb.astype("int64"))
    own = nb == torch.arange(n)[:, None]
    # drop the point itself (usually the first column; for duplicates it may be elsewhere or absent: drop the last)
    keep = ~own
    keep[own.sum(1) == 0, -1] = False
    return nb[keep].view(n, k)


@torch.no_grad()
def knn_edges(x: torch.Tensor, k: int) -> torch.Tensor:
    """kNN graph of each sample of (B, N, F) over the flattened B·N events, without self loops: (2, B·N·k)."""
    b, n, _ = x.shape
    edges = []
    for s in range(b):
        nb = knn_neighbours(x[s], k)
        centre = torch.arange(n, device=x.device).repeat_interleave(nb.shape[1])
        edges.append(torch.stack([nb.reshape(-1).to(x.device), centre]) + s * n)
    return torch.cat(edges, 1)


# -- attention blocks ---------------------------------------------------------------------------------------------
class MAB(nn.Module):
    """Multi-head attention block of the Set Transformer reference code (see the module docstring).
    ``attention``: ``softmax``, ``none`` (O = Q' + K' + V': ST-No-Att, needs len(Q) = len(K)) or ``relu``
    (linear attention φ(Q')(φ(K')ᵀV') / (φ(Q')Σφ(K')) / √d_V, reluFormer, whose feed-forward uses ReLU)."""

    def __init__(self, dim_q: int, dim_k: int, dim_v: int, heads: int, ln: bool = True, attention: str = "softmax"):
        super().__init__()
        if dim_v % heads:
            raise ValueError(f"width {dim_v} is not divisible by {heads} heads")
        self.dim_v, self.heads, self.attention = dim_v, heads, attention
        self.fc_q, self.fc_k, self.fc_v = nn.Linear(dim_q, dim_v), nn.Linear(dim_k, dim_v), nn.Linear(dim_k, dim_v)
        self.fc_o = nn.Linear(dim_v, dim_v)
        self.ln0 = nn.LayerNorm(dim_v) if ln else nn.Identity()
        self.ln1 = nn.LayerNorm(dim_v) if ln else nn.Identity()

    def _heads(self, t: torch.Tensor) -> torch.Tensor:  # (B, N, D) → (B, h, N, D/h)
        return t.view(t.shape[0], t.shape[1], self.heads, -1).transpose(1, 2)

    def forward(self, q: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
        qh, kh, vh = self._heads(self.fc_q(q)), self._heads(self.fc_k(k)), self._heads(self.fc_v(k))
        if self.attention == "softmax":
            att = F.scaled_dot_product_attention(qh, kh, vh, scale=1.0 / math.sqrt(self.dim_v))
        elif self.attention == "none":
            att = kh + vh
        else:  # relu: linear attention
            qp, kp = F.relu(qh), F.relu(kh)
            num = qp @ (kp.transpose(-1, -2) @ vh) / math.sqrt(self.dim_v)
            att = num / (qp @ kp.sum(-2, keepdim=True).transpose(-1, -2) + 1e-5)
        o = self.ln0((qh + att).transpose(1, 2).reshape(q.shape[0], q.shape[1], self.dim_v))
        act = F.relu if self.attention == "relu" else F.gelu
        return self.ln1(o + act(self.fc_o(o)))


class ISAB(nn.Module):
    """MAB(X, MAB(I, X)) with ``m`` learned inducing points I."""

    def __init__(self, dim_in: int, dim_out: int, heads: int, m: int, ln: bool = True):
        super().__init__()
        self.inducing = nn.Parameter(torch.empty(1, m, dim_out))
        nn.init.xavier_uniform_(self.inducing)
        self.mab0 = MAB(dim_out, dim_in, dim_out, heads, ln)
        self.mab1 = MAB(dim_in, dim_out, dim_out, heads, ln)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.mab1(x, self.mab0(self.inducing.expand(x.shape[0], -1, -1), x))


class FPSSAB(nn.Module):
    """ISAB whose inducing points are the layer's own input at the FPS indices: H = MAB(X[idx], X), MAB(X, H)."""

    def __init__(self, dim_in: int, dim_out: int, heads: int, ln: bool = True):
        super().__init__()
        self.mab0 = MAB(dim_in, dim_in, dim_out, heads, ln)
        self.mab1 = MAB(dim_in, dim_out, dim_out, heads, ln)

    def forward(self, x: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
        ind = torch.gather(x, 1, idx[..., None].expand(-1, -1, x.shape[-1]))
        return self.mab1(x, self.mab0(ind, x))


class PMA(nn.Module):
    """Pooling by multi-head attention: ``seeds`` learned queries attend to the set → (B, seeds, dim)."""

    def __init__(self, dim: int, heads: int = 1, seeds: int = 1):
        super().__init__()
        self.seeds = nn.Parameter(torch.empty(1, seeds, dim))
        nn.init.xavier_uniform_(self.seeds)
        self.mab = MAB(dim, dim, dim, heads)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.mab(self.seeds.expand(x.shape[0], -1, -1), x)


# -- the networks -------------------------------------------------------------------------------------------------
def _linear_bn(dims) -> nn.Sequential:
    layers = []
    for a, b in zip(dims[:-1], dims[1:], strict=True):
        layers += [nn.Linear(a, b), nn.BatchNorm1d(b), nn.GELU()]
    return nn.Sequential(*layers)


class EventMLP(nn.Module):
    """No context (``agg=None``) or a global vector (mean / max / PMA) concatenated before the head."""

    graph = False

    def __init__(self, in_dim: int, hidden: int = 32, layers: int = 4, agg: str | None = None):
        super().__init__()
        body, d = [], in_dim
        for _ in range(layers):
            body += [nn.Linear(d, hidden), nn.GELU(), nn.BatchNorm1d(hidden)]
            d = hidden
        self.body, self.agg = nn.Sequential(*body), agg
        self.pma = PMA(hidden) if agg == "pma" else None
        self.head = nn.Linear(hidden * (2 if agg else 1), 1)

    def forward(self, x: torch.Tensor, edge_index=None) -> torch.Tensor:
        b, n, _ = x.shape
        h = self.body(x.reshape(b * n, -1)).view(b, n, -1)
        if self.agg:
            g = {"mean": lambda: h.mean(1, keepdim=True), "max": lambda: h.amax(1, keepdim=True),
                 "pma": lambda: self.pma(h)}[self.agg]()
            h = torch.cat([h, g.expand(-1, n, -1)], -1)
        return self.head(h).squeeze(-1)


class PointNetSeg(nn.Module):
    graph = False

    def __init__(self, in_dim: int, adapted: bool = False):
        super().__init__()
        self.adapted = adapted
        self.point = _linear_bn([in_dim, 64, 128])
        self.lift = nn.Sequential(nn.Linear(128, 1024), nn.BatchNorm1d(1024))
        self.head = nn.Sequential(_linear_bn([(1024 if adapted else 128) + 1024, 512, 256, 128]), nn.Linear(128, 1))

    def forward(self, x: torch.Tensor, edge_index=None) -> torch.Tensor:
        b, n, _ = x.shape
        p = self.point(x.reshape(b * n, -1))
        wide = self.lift(p)
        g = wide.view(b, n, -1).amax(1, keepdim=True).expand(-1, n, -1).reshape(b * n, -1)
        return self.head(torch.cat([wide if self.adapted else p, g], -1)).view(b, n)


class SetTransformer(nn.Module):
    """``st`` (ISAB), ``st-noatt`` (two Q'+K'+V' self blocks per layer), ``reluformer`` (linear self-attention)."""

    graph = False

    def __init__(self, in_dim: int, hidden: int = 32, heads: int = 4, layers: int = 4, inducing: int = 16,
                 kind: str = "st"):
        super().__init__()
        blocks, d = [], in_dim
        for _ in range(layers):
            if kind == "st":
                blocks.append(ISAB(d, hidden, heads, inducing))
            elif kind == "st-noatt":
                blocks += [_Self(MAB(d, d, hidden, heads, attention="none")),
                           _Self(MAB(hidden, hidden, hidden, heads, attention="none"))]
            else:
                blocks.append(_Self(MAB(d, d, hidden, heads, attention="relu")))
            d = hidden
        self.blocks, self.head = nn.Sequential(*blocks), nn.Linear(hidden, 1)

    def forward(self, x: torch.Tensor, edge_index=None) -> torch.Tensor:
        return self.head(self.blocks(x)).squeeze(-1)


class _Self(nn.Module):
    def __init__(self, mab: MAB):
        super().__init__()
        self.mab = mab

    def forward(self, x):
        return self.mab(x, x)


class _FPSMixin:
    fps_ratio: float
    fps_min: int

    def fps_index(self, x: torch.Tensor) -> torch.Tensor:
        """FPS on the raw input events, once per forward: a random first event in training, event 0 otherwise."""
        b, n, _ = x.shape
        m = fps_count(n, self.fps_ratio, self.fps_min)
        start = torch.randint(n, (b,)).to(x.device) if self.training else 0
        return fps(x.detach(), m, start)


class STFPS(nn.Module, _FPSMixin):
    graph = False

    def __init__(self, in_dim: int, hidden: int = 32, heads: int = 4, layers: int = 4, fps_ratio: float = 5e-4,
                 fps_min: int = 16):
        super().__init__()
        self.fps_ratio, self.fps_min = fps_ratio, fps_min
        self.blocks = nn.ModuleList(FPSSAB(in_dim if i == 0 else hidden, hidden, heads) for i in range(layers))
        self.head = nn.Linear(hidden, 1)

    def forward(self, x: torch.Tensor, edge_index=None) -> torch.Tensor:
        idx = self.fps_index(x)
        for blk in self.blocks:
            x = blk(x, idx)
        return self.head(x).squeeze(-1)


def gnn_layer(kind: str, d_in: int, hidden: int, heads: int = 4, dropout: float = 0.0) -> nn.Module:
    from torch_geometric.nn import GATConv, GCNConv, GINConv

    if kind == "gin":
        return GINConv(nn.Sequential(nn.Linear(d_in, hidden), nn.GELU(), nn.Linear(hidden, hidden), nn.GELU(),
                                     nn.Linear(hidden, hidden)))
    if kind == "gat":
        return GATConv(d_in, hidden // heads, heads, dropout=dropout)
    return GCNConv(d_in, hidden, improved=True)


class GNN(nn.Module):
    graph = True

    def __init__(self, in_dim: int, hidden: int = 32, layers: int = 4, kind: str = "gin", heads: int = 4,
                 dropout: float = 0.0):
        super().__init__()
        self.convs = nn.ModuleList(gnn_layer(kind, in_dim if i == 0 else hidden, hidden, heads, dropout)
                                   for i in range(layers))
        self.head = nn.Linear(hidden, 1)

    def forward(self, x: torch.Tensor, edge_index: torch.Tensor) -> torch.Tensor:
        b, n, _ = x.shape
        h = x.reshape(b * n, -1)
        for conv in self.convs:
            h = F.gelu(conv(h, edge_index))
        return self.head(h).view(b, n)


class GNNASAP(nn.Module):
    """Two blocks of two GNN layers; ASAPooling to ``nodes[0]`` after block 1 and ``nodes[1]`` after block 2 on
    the pooled graph; the mean of the last pooled nodes is broadcast to every event."""

    graph = True

    def __init__(self, in_dim: int, hidden: int = 32, kind: str = "gin", heads: int = 4, dropout: float = 0.0,
                 nodes: tuple[int, int] = (100, 50)):
        super().__init__()
        from torch_geometric.nn import ASAPooling

        self.block1 = nn.ModuleList([gnn_layer(kind, in_dim, hidden, heads, dropout),
                                     gnn_layer(kind, hidden, hidden, heads, dropout)])
        self.block2 = nn.ModuleList([gnn_layer(kind, hidden, hidden, heads, dropout),
                                     gnn_layer(kind, hidden, hidden, heads, dropout)])
        self.pool1, self.pool2 = ASAPooling(hidden, ratio=nodes[0]), ASAPooling(hidden, ratio=nodes[1])
        self.head = nn.Sequential(nn.Linear(2 * hidden, hidden), nn.GELU(), nn.Linear(hidden, 1))

    @staticmethod
    def _block(block, h, edge_index):
        return block[1](F.gelu(block[0](h, edge_index)), edge_index)

    def forward(self, x: torch.Tensor, edge_index: torch.Tensor) -> torch.Tensor:
        from torch_geometric.nn import global_mean_pool

        b, n, _ = x.shape
        batch = torch.arange(b, device=x.device).repeat_interleave(n)
        z1 = self._block(self.block1, x.reshape(b * n, -1), edge_index)
        p1, e1, _, b1, _ = self.pool1(z1, edge_index, batch=batch)
        z2 = self._block(self.block2, F.gelu(z1), edge_index)
        p2, _, _, b2, _ = self.pool2(self._block(self.block2, F.gelu(p1), e1), e1, batch=b1)
        g = global_mean_pool(p2, b2, size=b)  # (B, hidden)
        return self.head(torch.cat([z2, g.repeat_interleave(n, 0)], -1)).view(b, n)


class GNNSTFPS(nn.Module, _FPSMixin):
    """x1 = GELU(GNN(x)); z = [x, x1]; ``layers − 1`` FPS set-attention blocks; linear head."""

    graph = True

    def __init__(self, in_dim: int, hidden: int = 32, heads: int = 4, layers: int = 4, kind: str = "gin",
                 fps_ratio: float = 5e-4, fps_min: int = 16, dropout: float = 0.0):
        super().__init__()
        self.fps_ratio, self.fps_min = fps_ratio, fps_min
        self.gnn = gnn_layer(kind, in_dim, hidden, heads, dropout)
        self.blocks = nn.ModuleList(FPSSAB(in_dim + hidden if i == 0 else hidden, hidden, heads)
                                    for i in range(layers - 1))
        self.head = nn.Linear(hidden, 1)

    def forward(self, x: torch.Tensor, edge_index: torch.Tensor) -> torch.Tensor:
        b, n, f = x.shape
        idx = self.fps_index(x)
        x1 = F.gelu(self.gnn(x.reshape(b * n, f), edge_index)).view(b, n, -1)
        z = torch.cat([x, x1], -1)
        for blk in self.blocks:
            z = blk(z, idx)
        return self.head(z).squeeze(-1)


def build(arch: str = "gin-st-fps", in_dim: int = 11, hidden: int = 32, heads: int = 4, layers: int = 4,
          inducing: int = 16, fps_ratio: float = 5e-4, fps_min: int = 16, dropout: float = 0.0,
          asap_nodes: tuple[int, int] = (100, 50)) -> nn.Module:
    """One network of the zoo by name (``ARCHS``); ``.graph`` says whether it takes a kNN graph."""
    if arch not in ARCHS:
        raise ValueError(f"unknown flow network '{arch}' (one of {', '.join(ARCHS)})")
    family, _, rest = arch.partition("-")
    if family == "mlp":
        return EventMLP(in_dim, hidden, layers, agg=rest or None)
    if family == "pointnet":
        return PointNetSeg(in_dim, adapted=rest == "adapted")
    if arch in ("st", "st-noatt", "reluformer"):
        return SetTransformer(in_dim, hidden, heads, layers, inducing, kind=arch)
    if arch == "st-fps":
        return STFPS(in_dim, hidden, heads, layers, fps_ratio, fps_min)
    if rest == "asap":
        return GNNASAP(in_dim, hidden, family, heads, dropout, tuple(asap_nodes))
    if rest == "st-fps":
        return GNNSTFPS(in_dim, hidden, heads, layers, family, fps_ratio, fps_min, dropout)
    return GNN(in_dim, hidden, layers, family, heads, dropout)


class FlowNet(nn.Module):
    """A zoo network with its inputs prepared: ``net(x_all)`` (B, N, F_all) → logits (B, N). Graph networks get
    the kNN graph (``k``) built on all F_all markers; the network sees only the markers at ``keep``."""

    def __init__(self, arch: str = "gin-st-fps", markers: int = 11, keep: list[int] | None = None, k: int = 10,
                 **kw):
        super().__init__()
        self.keep = list(range(markers)) if keep is None else list(keep)
        self.k, self.arch = k, arch
        self.core = build(arch, len(self.keep), **kw)

    @property
    def graph(self) -> bool:
        return self.core.graph

    def forward(self, x_all: torch.Tensor) -> torch.Tensor:
        x = x_all if len(self.keep) == x_all.shape[-1] else x_all[..., self.keep]
        edges = knn_edges(x_all, self.k) if self.core.graph else None
        return self.core(x, edges)
