"""DRIVPocket (drivpocket card): a 3D U-Net on a 14-channel atom-density grid whose blocks carry DRIA (dual
attention: a spatial ProbSparse or EPA branch and a channel branch sharing Q and K, with queries gated by voxelised
point features), and a rotation-invariant point network on the atoms (RIConv++-style RID down / RIU up levels on LRA
and IRIF features) that labels binding atoms and feeds the DRIA queries.

Shapes: grid (B, 14, n, n, n) with n − 1 divisible by 16 (65: the paper; 33: the smoke run); points (B, N, 3) centred
on the box and scaled to the unit sphere; point features (B, N, 14); ``vox`` (B, N, 3) each atom's voxel index on the
n-grid. ``DRIVPocket(...)(grid, pts, feats, vox)`` → (voxel logits (B, 1, n, n, n), atom logits (B, N)).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from monai.networks.blocks import UnetResBlock
from torch import nn


def _groups(c: int) -> int:
    return math.gcd(c, 8)


class ConvGN(nn.Sequential):
    def __init__(self, cin: int, cout: int):
        super().__init__(nn.Conv3d(cin, cout, 3, padding=1), nn.GroupNorm(_groups(cout), cout), nn.ReLU(inplace=True))


def res_block(cin: int, cout: int) -> UnetResBlock:
    return UnetResBlock(3, cin, cout, 3, 1, norm_name=("group", {"num_groups": _groups(cout)}))


# -- DRIA --------------------------------------------------------------------------------------------------------
def probsparse(q, k, v, c: float, generator=None):
    """Informer's ProbSparse attention per head: q, k, v (B, h, L, d). Each query is scored on ⌈c·ln L⌉ sampled keys
    by max − mean of its scaled dot products; the top ⌈c·ln L⌉ queries get full softmax attention, the rest the
    mean of V."""
    b, h, n, d = q.shape
    u = min(n, max(1, math.ceil(c * math.log(max(n, 2)))))
    idx = torch.randint(n, (n, u), generator=generator).to(q.device)
    ks = k[:, :, idx, :]  # (B, h, L, u, d)
    qk = (q.unsqueeze(-2) @ ks.transpose(-2, -1)).squeeze(-2) / math.sqrt(d)  # (B, h, L, u)
    m = qk.max(-1).values - qk.mean(-1)
    top = m.topk(u, dim=-1).indices  # (B, h, u)
    out = v.mean(-2, keepdim=True).expand(b, h, n, d).clone()
    qt = torch.gather(q, 2, top.unsqueeze(-1).expand(b, h, u, d))
    att = torch.softmax(qt @ k.transpose(-2, -1) / math.sqrt(d), -1) @ v  # (B, h, u, d)
    return out.scatter(2, top.unsqueeze(-1).expand(b, h, u, d), att.to(out.dtype))


class DRIA(nn.Module):
    """Shared Q/K; Q̃ = Q ⊙ F_RI (or Q ⊙ (1 + F_RI), ``ri_gate="residual"``); spatial branch (ProbSparse, or EPA's
    projected keys and values) plus channel branch (L2-normalised Q̃, K over L with a learned temperature, a C×C map
    per head); X + γ·(X̂_s + X̂_c), then a residual conv block."""

    def __init__(self, channels: int, heads: int = 4, ri_channels: int = 0, spatial: str = "probsparse",
                 c: float = 5.0, ri_gate: str = "multiply", tokens: int | None = None, proj: int = 64):
        super().__init__()
        if channels % heads:
            raise ValueError(f"channels {channels} not divisible by heads {heads}")
        self.heads, self.spatial, self.c, self.ri_gate = heads, spatial, c, ri_gate
        self.norm = nn.LayerNorm(channels)
        self.qk = nn.Linear(channels, 2 * channels, bias=False)
        self.v = nn.Linear(channels, 2 * channels, bias=False)  # V_s, V_c
        self.ri = nn.Linear(ri_channels, channels) if ri_channels else None
        self.temperature = nn.Parameter(torch.ones(heads, 1, 1))
        if spatial == "epa":
            if tokens is None:
                raise ValueError("EPA needs the number of voxels of its stage")
            self.e = nn.Linear(tokens, proj)
            self.f = nn.Linear(tokens, proj)
        self.gamma = nn.Parameter(1e-6 * torch.ones(channels))
        self.conv = res_block(channels, channels)

    def forward(self, x, ri=None):
        b, c, *sp = x.shape
        t = x.flatten(2).transpose(1, 2)  # (B, L, C)
        y = self.norm(t)
        q, k = self.qk(y).chunk(2, -1)
        vs, vc = self.v(y).chunk(2, -1)
        if self.ri is not None and ri is not None:
            f = self.ri(ri.flatten(2).transpose(1, 2))
            q = q * (1 + f if self.ri_gate == "residual" else f)
        h, d = self.heads, c // self.heads
        q, k, vs, vc = (z.reshape(b, -1, h, d).transpose(1, 2) for z in (q, k, vs, vc))  # (B, h, L, d)
        if self.spatial == "epa":
            kp = self.e(k.transpose(-2, -1))  # (B, h, d, p)
            vp = self.f(vs.transpose(-2, -1))
            xs = torch.softmax(q @ kp / math.sqrt(d), -1) @ vp.transpose(-2, -1)
        else:
            gen = None if self.training else torch.Generator().manual_seed(0)
            xs = probsparse(q, k, vs, self.c, gen)
        qn, kn = F.normalize(q.transpose(-2, -1), dim=-1), F.normalize(k.transpose(-2, -1), dim=-1)  # (B, h, d, L)
        xc = torch.softmax(qn @ kn.transpose(-2, -1) * self.temperature, -1) @ vc.transpose(-2, -1)  # (B, h, d, L)
        out = xs.transpose(-2, -1) + xc  # (B, h, d, L)
        out = out.reshape(b, c, -1).transpose(1, 2)
        t = t + self.gamma * out
        return self.conv(t.transpose(1, 2).reshape(b, c, *sp))


# -- the point stream -----------------------------------------------------------------------------------------------
def fps(x: torch.Tensor, m: int) -> torch.Tensor:
    """Farthest point sampling (B, N, 3) → (B, m) indices, starting at point 0."""
    b, n, _ = x.shape
    idx = torch.zeros(b, m, dtype=torch.long, device=x.device)
    dist = torch.full((b, n), float("inf"), device=x.device, dtype=x.dtype)
    cur = torch.zeros(b, dtype=torch.long, device=x.device)
    ar = torch.arange(b, device=x.device)
    for i in range(m):
        idx[:, i] = cur
        dist = torch.minimum(dist, ((x - x[ar, cur].unsqueeze(1)) ** 2).sum(-1))
        cur = dist.argmax(-1)
    return idx


def gather(x: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """x (B, N, C), idx (B, ...) → (B, ..., C)."""
    b = x.shape[0]
    flat = idx.reshape(b, -1)
    out = torch.gather(x, 1, flat.unsqueeze(-1).expand(-1, -1, x.shape[-1]))
    return out.reshape(*idx.shape, x.shape[-1])


def ball_query(centres, points, radius: float, k: int) -> torch.Tensor:
    """The k nearest points within ``radius`` of each centre, nearest first, padded with the nearest (B, S, k)."""
    d = torch.cdist(centres, points)
    kk = min(k, points.shape[1])
    dist, idx = d.topk(kk, dim=-1, largest=False)
    idx = torch.where(dist <= radius, idx, idx[..., :1])
    if kk < k:
        idx = torch.cat([idx, idx[..., :1].expand(*idx.shape[:-1], k - kk)], -1)
    return idx


def lra(points, radius: float, k: int) -> torch.Tensor:
    """Local reference axis (B, N, 3): the smallest-eigenvalue eigenvector of the distance-weighted covariance of
    the k nearest points (at least 6; not cut at ``radius``, since padded repeats would make the covariance
    degenerate and its eigenvector arbitrary), signed to point away from the neighbours' centroid."""
    p = points.double()
    kk = min(max(k, 6), p.shape[1])
    nb = gather(p, torch.cdist(p, p).topk(kk, dim=-1, largest=False).indices)  # (B, N, k, 3)
    v = nb - p.unsqueeze(2)
    dist = v.norm(dim=-1)
    w = dist.max(-1, keepdim=True).values - dist
    w = w / w.sum(-1, keepdim=True).clamp_min(1e-12)
    cov = torch.einsum("bnk,bnki,bnkj->bnij", w, v, v)
    axis = torch.linalg.eigh(cov)[1][..., 0]
    sign = torch.sign((axis * (p - nb.mean(2))).sum(-1, keepdim=True))
    return axis * torch.where(sign == 0, torch.ones_like(sign), sign)


def _safe(y, x, scale, fill: float = 0.0):
    """atan2 that gives ``fill`` where a vector is (numerically) zero: padded or self neighbours have no direction,
    and atan2(±0, −tiny) would otherwise give ±π depending on rounding."""
    return torch.where(scale > 1e-9, torch.atan2(y, x), torch.full_like(y, fill))


def _angle(a, b):
    return _safe(torch.linalg.cross(a, b).norm(dim=-1), (a * b).sum(-1), a.norm(dim=-1) * b.norm(dim=-1))


def irif(x, nb, lra_x, lra_nb) -> torch.Tensor:
    """8 rotation-invariant features per (centre, neighbour): distance, signed azimuth to the next neighbour
    (neighbours ordered by azimuth around LRA_x from the farthest neighbour's direction) and six angles. x (B, S, 3),
    nb (B, S, k, 3), lra_x (B, S, 3), lra_nb (B, S, k, 3) → (B, S, k, 8), neighbours in azimuth order."""
    x, nb, lra_x, lra_nb = x.double(), nb.double(), lra_x.double(), lra_nb.double()
    n = lra_x.unsqueeze(2)
    v = nb - x.unsqueeze(2)
    d = v.norm(dim=-1)
    proj = v - (v * n).sum(-1, keepdim=True) * n
    ref = torch.gather(proj, 2, d.argmax(-1)[..., None, None].expand(-1, -1, 1, 3))
    scale = ref.norm(dim=-1) * proj.norm(dim=-1)
    az = _safe((torch.linalg.cross(ref.expand_as(proj), proj) * n).sum(-1), (ref * proj).sum(-1), scale, -4.0)
    order = torch.sort(az, dim=-1, stable=True).indices
    take = order.unsqueeze(-1).expand(-1, -1, -1, 3)
    v, proj, lra_nb, nb = (torch.gather(t, 2, take) for t in (v, proj, lra_nb, nb))
    d = v.norm(dim=-1)
    nxt = lambda t: torch.roll(t, -1, dims=2)  # noqa: E731
    phi = _safe((torch.linalg.cross(proj, nxt(proj)) * n).sum(-1), (proj * nxt(proj)).sum(-1),
                proj.norm(dim=-1) * nxt(proj).norm(dim=-1))
    e = nxt(nb) - nb
    nn_ = n.expand_as(v)
    feats = [d, phi, _angle(nn_, v), _angle(lra_nb, v), _angle(nn_, lra_nb), _angle(lra_nb, e),
             _angle(nxt(lra_nb), e), _angle(lra_nb, nxt(lra_nb))]
    return torch.stack(feats, -1).float(), order


def mlp(*widths) -> nn.Sequential:
    layers = []
    for a, b in zip(widths[:-1], widths[1:], strict=True):
        layers += [nn.Linear(a, b), nn.ReLU(inplace=True)]
    return nn.Sequential(*layers)


class RID(nn.Module):
    """FPS → ball query → shared MLP on [IRIF, neighbour features] → max-pool; F̃ = Linear(W ⊙ concat(F, F_prev))."""

    def __init__(self, cin: int, cout: int, npoint: int, radius: float, k: int):
        super().__init__()
        self.npoint, self.radius, self.k = npoint, radius, k
        self.mlp = mlp(8 + cin, cout, cout)
        self.w = nn.Parameter(torch.ones(cout + cin))
        self.fuse = nn.Linear(cout + cin, cout)

    def forward(self, xyz, feats):
        with torch.no_grad():
            axes = lra(xyz, self.radius, self.k)
            idx = fps(xyz, min(self.npoint, xyz.shape[1]))
            centres = gather(xyz, idx)
            nb_idx = ball_query(centres, xyz, self.radius, self.k)
            f_geo, order = irif(centres, gather(xyz, nb_idx), gather(axes, idx), gather(axes, nb_idx))
            nb_idx = torch.gather(nb_idx, 2, order)
        h = self.mlp(torch.cat([f_geo, gather(feats, nb_idx)], -1)).max(2).values
        return idx, centres, self.fuse(self.w * torch.cat([h, gather(feats, idx)], -1))


class RIU(nn.Module):
    """3-NN inverse-distance interpolation onto the denser level, concat its features, MLP."""

    def __init__(self, cin: int, cskip: int, cout: int):
        super().__init__()
        self.mlp = mlp(cin + cskip, cout, cout)

    def forward(self, xyz_dense, xyz_coarse, f_coarse, f_skip):
        d = torch.cdist(xyz_dense, xyz_coarse)
        k = min(3, xyz_coarse.shape[1])
        dist, idx = d.topk(k, dim=-1, largest=False)
        w = 1.0 / dist.clamp_min(1e-8)
        w = w / w.sum(-1, keepdim=True)
        up = (gather(f_coarse, idx) * w.unsqueeze(-1)).sum(2)
        return self.mlp(torch.cat([up, f_skip], -1))


class PointStream(nn.Module):
    def __init__(self, cin: int = 14, npoints=(128, 64, 32, 16), radii=(0.2, 0.4, 0.6, 0.9), ks=(4, 8, 16, 32),
                 widths=(64, 128, 256, 512), dropout: float = 0.4):
        super().__init__()
        ins = (cin, *widths[:-1])
        self.down = nn.ModuleList(RID(a, b, n, r, k) for a, b, n, r, k in zip(ins, widths, npoints, radii, ks,
                                                                                  strict=True))
        ups = (widths[2], widths[1], widths[0], widths[0])
        self.up = nn.ModuleList([RIU(widths[3], widths[2], ups[0]), RIU(ups[0], widths[1], ups[1]),
                                 RIU(ups[1], widths[0], ups[2]), RIU(ups[2], cin, ups[3])])
        self.head = nn.Sequential(nn.Conv1d(ups[3], 32, 1), nn.BatchNorm1d(32), nn.ReLU(inplace=True),
                                  nn.Dropout(dropout), nn.Conv1d(32, 1, 1))
        self.down_widths, self.up_widths = tuple(widths), ups[:3]

    def forward(self, xyz, feats):
        """→ atom logits (B, N), RID levels [(index into the input atoms (B, n_i), features)], RIU levels (coarse to
        fine: at RID levels 3, 2, 1)."""
        levels, x, f, b = [], xyz, feats, xyz.shape[0]
        root = torch.arange(xyz.shape[1], device=xyz.device).expand(b, -1)
        for rid in self.down:
            idx, x_new, f = rid(x, f)
            root = torch.gather(root, 1, idx)
            levels.append((root, x_new, f))
            x = x_new
        ups, f = [], levels[3][2]
        for i, riu in enumerate(self.up[:3]):
            dense = levels[2 - i]
            f = riu(dense[1], levels[3 - i][1], f, dense[2])
            ups.append((dense[0], f))
        f = self.up[3](xyz, levels[0][1], f, feats)
        logits = self.head(f.transpose(1, 2)).squeeze(1)
        return logits, [(r, g) for r, _, g in levels], ups


def voxel_mean(feats, vox, res: int, n: int):
    """Average point features (B, P, C) per voxel of a res³ stage grid; vox (B, P, 3) indices on the n-grid."""
    b, p, c = feats.shape
    scale = 2 ** round(math.log2((n - 1) / res))  # the stage's downsampling factor
    iv = (vox // scale).clamp(0, res - 1)
    lin = (torch.arange(b, device=feats.device)[:, None] * res + iv[..., 0]) * res * res + iv[..., 1] * res + iv[..., 2]
    s = feats.new_zeros(b * res ** 3, c).index_add_(0, lin.reshape(-1), feats.reshape(-1, c))
    cnt = feats.new_zeros(b * res ** 3).index_add_(0, lin.reshape(-1), feats.new_ones(b * p))
    out = s / cnt.clamp_min(1).unsqueeze(-1)
    return out.reshape(b, res, res, res, c).permute(0, 4, 1, 2, 3)


# -- the whole network ------------------------------------------------------------------------------------------------
class DRIVPocket(nn.Module):
    """Voxel U-Net with DRIA (``attention="dria"``; ``"none"``: the plain 3D U-Net ablation) + the point stream."""

    def __init__(self, in_channels: int = 14, grid: int = 65, channels=(64, 128, 256, 512), heads: int = 4,
                 spatial: str = "probsparse", c: float = 5.0, ri_gate: str = "multiply", attention: str = "dria",
                 npoints=(128, 64, 32, 16), radii=(0.2, 0.4, 0.6, 0.9), ks=(4, 8, 16, 32), point_widths=None,
                 epa_proj: int = 64, dropout: float = 0.4):
        super().__init__()
        if (grid - 1) % 16:
            raise ValueError(f"grid {grid}: n − 1 must be divisible by 16 (65, 33, …)")
        self.grid, self.attention = grid, attention
        stem = channels[0] // 2
        pw = tuple(point_widths or channels)
        self.points = PointStream(in_channels, npoints, radii, ks, pw, dropout)
        self.stem = nn.Sequential(ConvGN(in_channels, stem), ConvGN(stem, stem))
        res = [(grid - 1) // 2 ** (i + 1) for i in range(4)]
        self.res = res
        ins = (stem, *channels[:-1])
        self.down = nn.ModuleList(nn.Conv3d(a, b, 2, stride=2) for a, b in zip(ins, channels, strict=True))
        self.enc = nn.ModuleList(ConvGN(b, b) for b in channels)
        dria = attention == "dria"
        kw = dict(heads=heads, spatial=spatial, c=c, ri_gate=ri_gate, proj=epa_proj)
        self.enc_att = nn.ModuleList(
            DRIA(ch, ri_channels=w, tokens=r ** 3, **kw) if dria else nn.Identity()
            for ch, w, r in zip(channels, pw, res, strict=True))
        dec = channels[::-1]  # 512, 256, 128, 64
        self.upconv = nn.ModuleList(nn.ConvTranspose3d(a, b, 2, stride=2) for a, b in zip(dec[:-1], dec[1:],
                                                                                            strict=True))
        self.dec = nn.ModuleList(ConvGN(2 * b, b) for b in dec[1:])
        self.dec_att = nn.ModuleList(
            DRIA(ch, ri_channels=w, tokens=r ** 3, **kw) if dria else nn.Identity()
            for ch, w, r in zip(dec[1:], self.points.up_widths, res[2::-1], strict=True))
        self.last_up = nn.ConvTranspose3d(channels[0], stem, 3, stride=2)
        self.last = res_block(2 * stem, stem)
        self.head = nn.Conv3d(stem, 1, 1)

    def forward(self, grid, pts, feats, vox):
        atom_logits, rid, riu = self.points(pts, feats)
        n, vox = self.grid, vox.long()

        def ri(root, f, r):
            return voxel_mean(f, torch.gather(vox, 1, root.unsqueeze(-1).expand(-1, -1, 3)), r, n)

        x0 = self.stem(grid)
        skips, x = [x0], x0
        for i in range(4):
            x = self.enc[i](self.down[i](x))
            x = self.enc_att[i](x, ri(*rid[i], self.res[i])) if self.attention == "dria" else x
            skips.append(x)
        for i in range(3):
            x = self.upconv[i](x)
            x = self.dec[i](torch.cat([x, skips[3 - i]], 1))
            if self.attention == "dria":
                x = self.dec_att[i](x, ri(*riu[i], self.res[2 - i]))
        x = self.last(torch.cat([self.last_up(x), x0], 1))
        return self.head(x), atom_logits
