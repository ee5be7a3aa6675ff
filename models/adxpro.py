"""ADxPro: an attention-based multimodal 3D VAE (AMVAE, masked product of experts) feeding a masked, time-decayed
LSTM that imputes missing inputs and forecasts next-visit diagnosis and biomarkers (card: ad-progression.md).

Sizes the paper does not give are the card's: encoder 4 × [Conv3d k3 s2 → InstanceNorm3d → LeakyReLU(0.2)] with
16-32-64-128 channels, a CBAM block (channel MLP r = 8 on avg+max pool, 7×7×7 spatial gate), global average pool,
linear μ/logvar heads (latent 64); decoder linear → 128 × (D/16, H/16, W/16) → 4 × [ConvTranspose3d k4 s2 →
InstanceNorm3d → ReLU] with 64-32-16-8 channels, final Conv3d k3 → 1 and a sigmoid; hidden size 128.

Choices of this implementation (the card leaves them open):

- decoder channels 128→64→32→16→8 then Conv3d(8, 1, k3) (8, not 16, at full resolution: half the cost of the
  most expensive layer); InstanceNorm3d without affine (torch's default); the
  decoder starts at ceil(size/16) per axis and the output is centre-cropped to the input size, so volumes that are
  not multiples of 16 (the fixture's 16×20×16) work; at 128×160×128 it is exact;
- the three LSTM gates are one Linear over [v_t ‖ ĥ_t ‖ m_t] (the same parameters as W_v·, W_h·, W_m· and one bias
  per gate);
- recon loss: BCE per voxel, mean over the volume; KL: mean over latent dimensions; both averaged over the
  visits/modalities where they apply (the Kendall weights absorb the scale);
- at evaluation z_t = μ_t (no sampling).

Parameter count at the card's full size (128×160×128, latent 64, hidden 128, 6 biomarkers, 7 demographic inputs):
``tests/models/test_adxpro.py`` pins it. The card states no count, so the test pins this implementation's number,
not the paper's.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F


class CBAM3d(nn.Module):
    """Channel attention (shared MLP over avg- and max-pooled features, reduction r) then a 7×7×7 spatial gate."""

    def __init__(self, channels: int, reduction: int = 8, kernel: int = 7):
        super().__init__()
        self.mlp = nn.Sequential(nn.Linear(channels, channels // reduction), nn.ReLU(inplace=True),
                                 nn.Linear(channels // reduction, channels))
        self.spatial = nn.Conv3d(2, 1, kernel, padding=kernel // 2)

    def forward(self, x):
        ch = torch.sigmoid(self.mlp(x.mean((2, 3, 4))) + self.mlp(x.amax((2, 3, 4))))
        x = x * ch[:, :, None, None, None]
        sp = torch.sigmoid(self.spatial(torch.cat([x.mean(1, keepdim=True), x.amax(1, keepdim=True)], 1)))
        return x * sp


class Encoder3d(nn.Module):
    def __init__(self, latent: int = 64, channels=(16, 32, 64, 128)):
        super().__init__()
        layers, c_in = [], 1
        for c in channels:
            layers += [nn.Conv3d(c_in, c, 3, stride=2, padding=1), nn.InstanceNorm3d(c), nn.LeakyReLU(0.2)]
            c_in = c
        self.conv = nn.Sequential(*layers)
        self.attention = CBAM3d(c_in)
        self.mu = nn.Linear(c_in, latent)
        self.logvar = nn.Linear(c_in, latent)

    def forward(self, x):
        h = self.attention(self.conv(x)).mean((2, 3, 4))
        return self.mu(h), self.logvar(h)


class Decoder3d(nn.Module):
    def __init__(self, shape: tuple[int, int, int], latent: int = 64, channels=(128, 64, 32, 16, 8)):
        super().__init__()
        self.shape = tuple(shape)
        self.start = tuple(math.ceil(s / 16) for s in shape)
        self.c0 = channels[0]
        self.fc = nn.Linear(latent, channels[0] * math.prod(self.start))
        layers = []
        for a, b in zip(channels, channels[1:], strict=False):
            layers += [nn.ConvTranspose3d(a, b, 4, stride=2, padding=1), nn.InstanceNorm3d(b), nn.ReLU(inplace=True)]
        self.up = nn.Sequential(*layers)
        self.out = nn.Conv3d(channels[-1], 1, 3, padding=1)

    def forward(self, z):
        x = self.fc(z).view(-1, self.c0, *self.start)
        x = self.out(self.up(x))
        d, h, w = (x.shape[2 + i] - self.shape[i] for i in range(3))
        x = x[:, :, d // 2: d // 2 + self.shape[0], h // 2: h // 2 + self.shape[1], w // 2: w // 2 + self.shape[2]]
        return torch.sigmoid(x)


def product_of_experts(mu: torch.Tensor, logvar: torch.Tensor, mask: torch.Tensor):
    """Masked PoE with an always-on N(0, I) prior expert (card Eqs. 5–7).

    mu, logvar: (..., M, L); mask: (..., M) of 0/1. Returns fused (μ, V) of shape (..., L):
    μ = Σ μ_i T_i m_i / (1 + Σ T_i m_i), V = 1 / (1 + Σ T_i m_i), T_i = exp(−logvar_i)."""
    prec = torch.exp(-logvar) * mask[..., None]
    total = 1.0 + prec.sum(-2)
    return (mu * prec).sum(-2) / total, 1.0 / total


def elapsed(times: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Δ_t per element (card Eq. 2): Δ_1 = 0; Δ_t = s_t − s_{t−1} (+ Δ_{t−1} if the element was missing at t−1).

    times: (B, T) in years; mask: (B, T, D). Returns (B, T, D)."""
    out = [torch.zeros_like(mask[:, 0])]
    for t in range(1, mask.shape[1]):
        gap = (times[:, t] - times[:, t - 1])[:, None]
        out.append(gap + (1 - mask[:, t - 1]) * out[-1])
    return torch.stack(out, 1)


class DecayLSTMCell(nn.Module):
    """Masked, time-decayed LSTM step (card Eqs. 13–19, typos corrected): γ = exp(−max(0, W_γ Δ + b)), ĥ = γ ⊙ h,
    f/c̃/o from [v ‖ ĥ ‖ m], c = f ⊙ c + (1 − f) ⊙ c̃ (coupled input gate), h = o ⊙ tanh(c)."""

    def __init__(self, d_in: int, hidden: int):
        super().__init__()
        self.hidden = hidden
        self.decay = nn.Linear(d_in, hidden)
        self.gates = nn.Linear(2 * d_in + hidden, 3 * hidden)

    def forward(self, v, m, delta, h, c):
        h = torch.exp(-F.relu(self.decay(delta))) * h
        f, g, o = self.gates(torch.cat([v, h, m], -1)).chunk(3, -1)
        f = torch.sigmoid(f)
        c = f * c + (1 - f) * torch.tanh(g)
        return torch.sigmoid(o) * torch.tanh(c), c


def _bucket(mask: torch.Tensor, bucket: int) -> tuple[torch.Tensor, int]:
    """Indices of the 1s in ``mask`` (n of them), padded by repeating the first up to a multiple of ``bucket``
    (padded rows are computed and dropped). On CPU, oneDNN builds new convolution kernels for every new batch shape;
    bucketing bounds the number of shapes. Measured on the fixture (benchmarks/bench_ad_progression.py, idle 2-core
    machine, two runs) the difference was noise (0.112 / 0.075 s per step padded vs 0.085 / 0.086 s exact), so
    ``ADxPro.BUCKET`` is 1 (exact batches of the present volumes, no wasted compute)."""
    idx = mask.nonzero().flatten()
    n = len(idx)
    if n == 0 or bucket <= 1:
        return idx, n
    pad = (-n) % bucket
    return torch.cat([idx, idx[:1].expand(pad)]) if pad else idx, n


class ADxPro(nn.Module):
    """The whole model. ``forward`` takes one batch of subjects over T visits:

    images (B, T, M, D, H, W) in [0, 1] (any values where missing), img_mask (B, T, M),
    x (B, T, n_bio + n_dg) normalised tabular inputs, x_mask (same), dx (B, T) class index (−1 missing),
    dx_in (B, T) 0/1: where the diagnosis is an *input* (all 0 in the paper's "without Dx" setting),
    times (B, T) years since baseline, fill (n_bio + n_dg + n_classes) values for missing entries at t = 1.

    Returns a dict: ``dx_logits`` (B, T, C), the forecast of visit t made from visits < t (row 0 unused);
    ``x_hat`` (B, T, n_bio + n_dg), the same for the tabular inputs; ``v`` (B, T, L + n_bio + n_dg + C), the
    imputed inputs the LSTM saw; ``mu``, ``var`` (B, T, L) the fused posterior; ``mu_i``, ``logvar_i``
    (B, T, M, L) per modality."""

    BUCKET = 1  # encoder/decoder batch sizes padded to multiples of this (see ``_bucket``); 1: no padding

    def __init__(self, shape=(128, 160, 128), n_bio: int = 6, n_dg: int = 7, n_classes: int = 3, latent: int = 64,
                 hidden: int = 128, modalities: int = 2, use_images: bool = True):
        super().__init__()
        self.shape, self.latent, self.hidden = tuple(shape), latent, hidden
        self.n_x, self.n_classes, self.n_mod, self.use_images = n_bio + n_dg, n_classes, modalities, use_images
        self.encoders = nn.ModuleList([Encoder3d(latent) for _ in range(modalities)])
        self.decoders = nn.ModuleList([Decoder3d(shape, latent) for _ in range(modalities)])
        d_in = latent + self.n_x + n_classes
        self.cell = DecayLSTMCell(d_in, hidden)
        self.forecast_x = nn.Linear(hidden, latent + self.n_x)
        self.forecast_y = nn.Linear(hidden, n_classes)
        self.log_vars = nn.Parameter(torch.zeros(3))  # Kendall s_k for dx, impute, ELBO
        self.reset_parameters()

    def reset_parameters(self):
        for mod in self.modules():
            if isinstance(mod, (nn.Linear, nn.Conv3d, nn.ConvTranspose3d)):
                nn.init.xavier_uniform_(mod.weight)
                if mod.bias is not None:
                    nn.init.zeros_(mod.bias)

    # -- AMVAE --------------------------------------------------------------------------------------------------
    def encode(self, images, img_mask):
        """Per-modality (μ_i, logvar_i) of shape (B, T, M, L); zeros where the modality is missing. Only present
        volumes are encoded (their number optionally padded to a multiple of ``BUCKET``, see ``_bucket``)."""
        B, T, M = img_mask.shape
        mu = images.new_zeros(B, T, M, self.latent)
        logvar = images.new_zeros(B, T, M, self.latent)
        if not self.use_images:
            return mu, logvar
        flat = images.reshape(B * T, M, *images.shape[3:])
        mus, lvs = mu.view(B * T, M, -1).unbind(1), logvar.view(B * T, M, -1).unbind(1)
        out_mu, out_lv = [], []
        for i, enc in enumerate(self.encoders):
            idx, n = _bucket(img_mask[:, :, i].reshape(-1), self.BUCKET)
            if n == 0:
                out_mu.append(mus[i])
                out_lv.append(lvs[i])
                continue
            m, lv = enc(flat[idx, i][:, None])
            out_mu.append(mus[i].index_put((idx[:n],), m[:n]))
            out_lv.append(lvs[i].index_put((idx[:n],), lv[:n].clamp(-10, 10)))
        return torch.stack(out_mu, 1).view(B, T, M, -1), torch.stack(out_lv, 1).view(B, T, M, -1)

    def decode(self, z, modality: int):
        """z (N, L) → volumes (N, D, H, W)."""
        return self.decoders[modality](z)[:, 0]

    # -- the whole sequence ---------------------------------------------------------------------------------
    def forward(self, images, img_mask, x, x_mask, dx, dx_in, times, fill, sample: bool = False):
        B, T = dx.shape
        mask_img = img_mask if self.use_images else torch.zeros_like(img_mask)
        mu_i, logvar_i = self.encode(images, mask_img)
        mu, var = product_of_experts(mu_i, logvar_i, mask_img)
        z = mu + var.sqrt() * torch.randn_like(mu) if sample else mu
        any_img = (mask_img.sum(-1) > 0).float()
        y = F.one_hot(dx.clamp(min=0), self.n_classes).float() * (dx >= 0)[..., None]
        v_obs = torch.cat([mu, x, y], -1)
        m_dx = (dx_in * (dx >= 0)).float()
        m = torch.cat(
            [any_img[..., None].expand(B, T, self.latent), x_mask, m_dx[..., None].expand(B, T, self.n_classes)], -1
        )
        delta = elapsed(times, m)
        h = x.new_zeros(B, self.hidden)
        c = x.new_zeros(B, self.hidden)
        prev = torch.cat([x.new_zeros(self.latent), fill]).expand(B, -1)  # t = 1: global means (image latent 0)
        vs, x_hats, logits = [], [x.new_zeros(B, self.latent + self.n_x)], [x.new_zeros(B, self.n_classes)]
        for t in range(T):
            v = m[:, t] * v_obs[:, t] + (1 - m[:, t]) * prev
            h, c = self.cell(v, m[:, t], delta[:, t], h, c)
            vs.append(v)
            x_hat = self.forecast_x(h) + v[:, : self.latent + self.n_x]  # residual on the X slice (Eq. 20)
            y_logit = self.forecast_y(h)
            if t + 1 < T:
                x_hats.append(x_hat)
                logits.append(y_logit)
            prev = torch.cat([x_hat, torch.softmax(y_logit, -1)], -1)
        x_hat = torch.stack(x_hats, 1)
        return {
            "dx_logits": torch.stack(logits, 1),
            "x_hat": x_hat[..., self.latent :],
            "z_hat": x_hat[..., : self.latent],
            "v": torch.stack(vs, 1),
            "mu": mu,
            "var": var,
            "z": z,
            "mu_i": mu_i,
            "logvar_i": logvar_i,
            "any_img": any_img,
        }

    # -- losses (card Eqs. 4, 22–24) ------------------------------------------------------------------------
    def elbo(self, out, images, img_mask, beta: float = 1.0):
        """Masked reconstruction (BCE, mean per volume) of every present modality from the fused z_t, plus β·KL of
        the fused posterior against N(0, I) at visits with any image. Mean over the terms that apply."""
        if not self.use_images:
            return out["mu"].new_zeros(())
        recon, n = out["mu"].new_zeros(()), img_mask.sum()
        z = out["z"].reshape(-1, self.latent)
        for i in range(self.n_mod):
            idx, k = _bucket(img_mask[:, :, i].reshape(-1), self.BUCKET)
            if k == 0:
                continue
            pred = self.decode(z[idx], i)[:k]
            target = images[:, :, i].reshape(-1, *pred.shape[1:])[idx[:k]]
            recon = recon + F.binary_cross_entropy(pred, target, reduction="none").mean((1, 2, 3)).sum()
        sel = out["any_img"] > 0
        if not sel.any():
            return recon / n.clamp(min=1)
        mu, var = out["mu"][sel], out["var"][sel]
        kl = 0.5 * (var + mu ** 2 - 1 - var.log()).mean(-1)
        return recon / n.clamp(min=1) + beta * kl.mean()

    def losses(self, out, batch, beta: float = 1.0, n_bio: int = 6) -> dict:
        dx, x, x_mask = batch["dx"], batch["x"], batch["x_mask"]
        lab = dx[:, 1:]
        obs = lab >= 0
        logits = out["dx_logits"][:, 1:]
        l_dx = F.cross_entropy(logits[obs], lab[obs]) if obs.any() else logits.sum() * 0
        bm = x_mask[:, 1:, :n_bio]
        err = (out["x_hat"][:, 1:, :n_bio] - x[:, 1:, :n_bio]).abs() * bm
        l_imp = err.sum() / bm.sum().clamp(min=1)
        l_elbo = self.elbo(out, batch["images"], batch["img_mask"], beta)
        parts = torch.stack([l_dx, l_imp, l_elbo])
        s = self.log_vars if self.use_images else self.log_vars[:2]  # no ELBO term without the image branch
        total = (torch.exp(-s) / 2 * parts[: len(s)] + s / 2).sum()
        return {"loss": total, "dx": l_dx, "impute": l_imp, "elbo": l_elbo}
