"""IDQCE building blocks (idqce card): a VQ-VAE (van den Oord et al. 2017) whose frozen encoder and codebook give
each image a quantized contextual code, a ResNet trunk with torchvision's parameter names (so a user's torchvision
ImageNet state dict loads as it is), BYOL's MLP heads, the IDQCE network (online/target branches plus the code
branch p_θ) and the loss, and LARS.

Shapes: images (B, C, H, W) in [0, 1]; the VQ latent (B, D, H/4, W/4); ResNet features (B, 512·e) after global
average pooling (2048 for ResNet-50).
"""

from __future__ import annotations

import copy
import math

import torch
import torch.nn.functional as F
from torch import nn


# -- VQ-VAE --------------------------------------------------------------------------------------------------------
class _Residual(nn.Module):
    def __init__(self, ch: int, hidden: int):
        super().__init__()
        self.block = nn.Sequential(nn.ReLU(), nn.Conv2d(ch, hidden, 3, padding=1), nn.ReLU(), nn.Conv2d(hidden, ch, 1))

    def forward(self, x):
        return x + self.block(x)


class VQEncoder(nn.Module):
    """f_ξ: conv4×4/2 → ReLU → conv4×4/2 → ReLU → conv3×3 → 2 residual blocks (the card's "shallow CNN")."""

    def __init__(self, in_ch: int = 1, ch: int = 256, dim: int = 256):
        super().__init__()
        self.net = nn.Sequential(nn.Conv2d(in_ch, ch, 4, 2, 1), nn.ReLU(), nn.Conv2d(ch, ch, 4, 2, 1), nn.ReLU(),
                                 nn.Conv2d(ch, ch, 3, padding=1), _Residual(ch, ch), _Residual(ch, ch), nn.ReLU(),
                                 nn.Conv2d(ch, dim, 1))

    def forward(self, x):
        return self.net(x)


class VQDecoder(nn.Module):
    """f'_ξ: the encoder mirrored, two 4×4 stride-2 transposed convolutions, sigmoid output."""

    def __init__(self, out_ch: int = 1, ch: int = 256, dim: int = 256):
        super().__init__()
        self.net = nn.Sequential(nn.Conv2d(dim, ch, 3, padding=1), _Residual(ch, ch), _Residual(ch, ch), nn.ReLU(),
                                 nn.ConvTranspose2d(ch, ch, 4, 2, 1), nn.ReLU(),
                                 nn.ConvTranspose2d(ch, out_ch, 4, 2, 1),
                                 nn.Sigmoid())

    def forward(self, z):
        return self.net(z)


class Codebook(nn.Module):
    """K vectors of size D. ``axis="spatial"``: each position's D-vector is quantized (standard); ``"channel"``: each
    channel's H·W map is a codeword (needs H·W = D)."""

    def __init__(self, k: int = 1024, dim: int = 256, axis: str = "spatial"):
        super().__init__()
        self.k, self.dim, self.axis = k, dim, axis
        self.embedding = nn.Embedding(k, dim)
        self.embedding.weight.data.uniform_(-1 / k, 1 / k)

    @torch.no_grad()
    def init_from(self, z: torch.Tensor) -> None:
        """Data-dependent start: the K codewords become randomly drawn latent vectors of ``z`` (fewer vectors than
        K: drawn with replacement, plus a little noise), so that no codeword starts out of reach of the data."""
        flat = self._flat(z)
        idx = torch.randint(len(flat), (self.k,), device=flat.device) if len(flat) < self.k else \
            torch.randperm(len(flat), device=flat.device)[:self.k]
        pick = flat[idx]
        self.embedding.weight.copy_(pick + 0.01 * pick.std() * torch.randn_like(pick))

    def _flat(self, z):  # (B, C, H, W) → (N, D) rows to quantize
        if self.axis == "channel":
            b, c, h, w = z.shape
            if h * w != self.dim:
                raise ValueError(f"--vq-axis channel needs H·W = D = {self.dim}, got a {h}×{w} latent")
            return z.reshape(b * c, h * w)
        return z.permute(0, 2, 3, 1).reshape(-1, z.shape[1])

    def _unflat(self, q, shape):
        b, c, h, w = shape
        if self.axis == "channel":
            return q.reshape(b, c, h, w)
        return q.reshape(b, h, w, c).permute(0, 3, 1, 2)

    def indices(self, z) -> torch.Tensor:
        flat = self._flat(z)
        e = self.embedding.weight
        d = flat.pow(2).sum(1, keepdim=True) - 2 * flat @ e.t() + e.pow(2).sum(1)[None]
        return d.argmin(1)

    def forward(self, z):
        """(z_q with straight-through gradients, codebook loss, commitment term, indices)."""
        idx = self.indices(z)
        q = self._unflat(self.embedding(idx), z.shape)
        codebook = F.mse_loss(q, z.detach())  # ‖sg[z_e] − e‖²
        commit = F.mse_loss(z, q.detach())  # ‖z_e − sg[e]‖²
        return z + (q - z).detach(), codebook, commit, idx


class VQVAE(nn.Module):
    def __init__(self, in_ch: int = 1, ch: int = 256, dim: int = 256, k: int = 1024, axis: str = "spatial"):
        super().__init__()
        self.encoder = VQEncoder(in_ch, ch, dim)
        self.codebook = Codebook(k, dim, axis)
        self.decoder = VQDecoder(in_ch, ch, dim)

    def forward(self, x):
        z = self.encoder(x)
        q, codebook, commit, idx = self.codebook(z)
        return self.decoder(q), codebook, commit, idx

    @torch.no_grad()
    def quantize(self, x) -> torch.Tensor:
        """z_q of ``x`` (B, D, h, w) (channel axis: (B, C, h, w)), no gradients."""
        return self.codebook(self.encoder(x))[0]


def perplexity(idx: torch.Tensor, k: int) -> float:
    """exp(entropy) of codeword usage: 1 when one code is used, K when all are used equally."""
    p = torch.bincount(idx.flatten(), minlength=k).float()
    p = p / p.sum().clamp_min(1)
    return float(torch.exp(-(p * (p + 1e-10).log()).sum()))


# -- ResNet (torchvision parameter names) ----------------------------------------------------------------------------
class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, cin, planes, stride=1, downsample=None):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x):
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + (x if self.downsample is None else self.downsample(x)))


class Bottleneck(nn.Module):
    expansion = 4

    def __init__(self, cin, planes, stride=1, downsample=None):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, planes * 4, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * 4)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x):
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + (x if self.downsample is None else self.downsample(x)))


RESNETS = {"resnet18": (BasicBlock, (2, 2, 2, 2)), "resnet50": (Bottleneck, (3, 4, 6, 3))}


class ResNetTrunk(nn.Module):
    """torchvision's ResNet up to global average pooling (no ``fc``): f_θ / f_φ. ``out_dim`` 512 or 2048."""

    def __init__(self, arch: str = "resnet50", in_ch: int = 3):
        super().__init__()
        block, layers = RESNETS[arch]
        self.conv1 = nn.Conv2d(in_ch, 64, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        cin = 64
        for i, (planes, n) in enumerate(zip((64, 128, 256, 512), layers, strict=True)):
            stride = 1 if i == 0 else 2
            down = None
            if stride != 1 or cin != planes * block.expansion:
                down = nn.Sequential(nn.Conv2d(cin, planes * block.expansion, 1, stride, bias=False),
                                     nn.BatchNorm2d(planes * block.expansion))
            blocks = [block(cin, planes, stride, down)]
            cin = planes * block.expansion
            blocks += [block(cin, planes) for _ in range(n - 1)]
            setattr(self, f"layer{i + 1}", nn.Sequential(*blocks))
        self.out_dim = cin
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x):
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return torch.flatten(F.adaptive_avg_pool2d(x, 1), 1)


def mlp(din: int, hidden: int = 4096, out: int = 256) -> nn.Sequential:
    """BYOL's projector / predictor: Linear → BN → ReLU → Linear."""
    return nn.Sequential(nn.Linear(din, hidden), nn.BatchNorm1d(hidden), nn.ReLU(inplace=True), nn.Linear(hidden, out))


def byol_loss(p: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    """2 − 2·cos(p, z) per sample (the BYOL form of the card's cosine terms)."""
    return 2 - 2 * F.cosine_similarity(p, z, dim=-1)


class IDQCE(nn.Module):
    """Online f_θ → g_θ → q_θ, target f_φ → g_φ (EMA, no gradients), and p_θ on GAP(z_q) of the frozen VQ encoder.
    ``code_weight`` 0 is plain BYOL (the card's ablation: the same code with the second loss off)."""

    def __init__(self, arch: str = "resnet50", in_ch: int = 3, hidden: int = 4096, out: int = 256,
                 code_dim: int = 256, code_weight: float = 1.0):
        super().__init__()
        self.encoder = ResNetTrunk(arch, in_ch)
        self.projector = mlp(self.encoder.out_dim, hidden, out)
        self.predictor = mlp(out, hidden, out)
        self.code_head = mlp(code_dim, hidden, out)  # p_θ
        self.target_encoder = copy.deepcopy(self.encoder)
        self.target_projector = copy.deepcopy(self.projector)
        for p in (*self.target_encoder.parameters(), *self.target_projector.parameters()):
            p.requires_grad_(False)
        self.code_weight = code_weight

    def online(self, x):
        return self.predictor(self.projector(self.encoder(x)))

    @torch.no_grad()
    def target(self, x):
        return self.target_projector(self.target_encoder(x))

    def code_target(self, zq: torch.Tensor) -> torch.Tensor:
        """z'_θ = p_θ(GAP(z_q)) for a (B, D, h, w) latent (channel axis: GAP over the map)."""
        return self.code_head(zq.flatten(2).mean(-1))

    def loss(self, x1, x2, zq1, zq2=None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Symmetric loss (mean over the batch): Σ over (x1→x2, x2→x1) of
        (2 − 2cos(z_θ, z_φ)) + w·(2 − 2cos(z_θ, z'_θ)).
        ``zq1``/``zq2``: the code of the image each online view is compared against (the same x by default)."""
        zq2 = zq1 if zq2 is None else zq2
        p1, p2 = self.online(x1), self.online(x2)
        t1, t2 = self.target(x1), self.target(x2)
        l_byol = byol_loss(p1, t2) + byol_loss(p2, t1)
        if self.code_weight:
            l_code = byol_loss(p1, self.code_target(zq1)) + byol_loss(p2, self.code_target(zq2))
        else:
            l_code = torch.zeros_like(l_byol)
        return (l_byol + self.code_weight * l_code).mean(), l_byol.mean(), l_code.mean()

    @torch.no_grad()
    def update_target(self, mu: float) -> None:
        """φ ← μφ + (1 − μ)θ; BatchNorm buffers copied."""
        for online, target in ((self.encoder, self.target_encoder), (self.projector, self.target_projector)):
            for po, pt in zip(online.parameters(), target.parameters(), strict=True):
                pt.mul_(mu).add_(po.detach(), alpha=1 - mu)
            for bo, bt in zip(online.buffers(), target.buffers(), strict=True):
                bt.copy_(bo)


def ema_momentum(base: float, step: int, total: int) -> float:
    """BYOL's schedule: μ = 1 − (1 − μ_base)·(cos(π k/K) + 1)/2, rising to 1."""
    return 1 - (1 - base) * (math.cos(math.pi * min(step, total) / max(total, 1)) + 1) / 2


class LinearProbe(nn.Module):
    """A frozen trunk and one linear layer: the linear-evaluation classifier (also what Grad-CAM explains)."""

    def __init__(self, arch: str = "resnet50", num_labels: int = 14, in_ch: int = 3):
        super().__init__()
        self.encoder = ResNetTrunk(arch, in_ch)
        self.head = nn.Linear(self.encoder.out_dim, num_labels)

    def forward(self, x):
        return self.head(self.encoder(x))


# -- LARS -----------------------------------------------------------------------------------------------------------
class LARS(torch.optim.Optimizer):
    """SGD with momentum and layer-wise trust ratio η‖w‖/‖∇ + wd·w‖ (You et al. 2017, BYOL's settings); parameter
    groups with ``lars=False`` (biases, BatchNorm) get neither adaptation nor weight decay."""

    def __init__(self, params, lr: float, momentum: float = 0.9, weight_decay: float = 1.5e-6, eta: float = 1e-3):
        super().__init__(params, dict(lr=lr, momentum=momentum, weight_decay=weight_decay, eta=eta, lars=True))

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for g in self.param_groups:
            for p in g["params"]:
                if p.grad is None:
                    continue
                d = p.grad
                if g["lars"]:
                    d = d.add(p, alpha=g["weight_decay"])
                    wn, gn = torch.norm(p), torch.norm(d)
                    trust = torch.where((wn > 0) & (gn > 0), g["eta"] * wn / gn, torch.ones_like(wn))
                    d = d.mul(trust)
                buf = self.state[p].setdefault("mu", torch.zeros_like(p))
                buf.mul_(g["momentum"]).add_(d)
                p.add_(buf, alpha=-g["lr"])
        return loss


def lars_groups(module: nn.Module) -> list[dict]:
    """Weights of conv/linear layers adapted and decayed; biases and BatchNorm parameters excluded."""
    adapt, plain = [], []
    for p in module.parameters():
        if not p.requires_grad:
            continue
        (plain if p.ndim == 1 else adapt).append(p)
    return [{"params": adapt}, {"params": plain, "lars": False, "weight_decay": 0.0}]
