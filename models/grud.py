"""GRU-D (Che et al., Sci. Rep. 2018), the biomarker-only baseline of ADxPro's Table 1, with the forecasting heads and
the call signature of ``models.adxpro.ADxPro`` so that ad-progression trains, scores and imputes it unchanged.

GRU-D, as published: per input element, the last observation decays towards the empirical mean,
x̂ = m ⊙ x + (1 − m) ⊙ (γ_x ⊙ x_last + (1 − γ_x) ⊙ x̄) with γ_x = exp(−max(0, w_γx ⊙ Δ + b_γx)) (a diagonal decay);
the hidden state decays, ĥ = γ_h ⊙ h with γ_h = exp(−max(0, W_γh Δ + b_γh)); and a GRU step takes [x̂ ‖ ĥ ‖ m]:
z = σ(W_z x̂ + U_z ĥ + V_z m + b_z), r likewise, h̃ = tanh(W x̂ + U (r ⊙ ĥ) + V m + b), h = (1 − z) ⊙ ĥ + z ⊙ h̃.

Choices of this implementation (GRU-D classifies; ADxPro's comparison needs forecasts):

- the input is ADxPro's tabular part [bio ‖ dg ‖ dx] (dx masked out unless ``dx_input`` feeds it), Δ is ADxPro's
  elapsed-time vector (card Eq. 2), x̄ is the fold's training mean (the ``fill`` vector ADxPro uses at t = 1);
- the forecasts are ADxPro's heads (card Eqs. 20–21): x̂_{t+1} = W_v h_t + x̂_t (residual on the X slice) and
  DX_{t+1} = softmax(W_y h_t), so that Table 1 and Table 2 compare recurrent cores, not heads;
- loss: Kendall uncertainty weighting of CE(DX) and the masked L1 of the biomarkers, ADxPro's loss without the ELBO;
- Xavier-uniform initialisation like ADxPro.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from .adxpro import elapsed


class TabularForecaster(nn.Module):
    """What GRU-D and MinimalRNN share: ADxPro's interface (``forward(images, img_mask, x, x_mask, dx, dx_in, times,
    fill)`` → ``dx_logits``, ``x_hat``, ``v``), its forecast heads and its loss without the image terms.
    Subclasses define ``step(obs, m, delta, prev, h, fill) -> (h, v, prev)`` (``v``: the input used, missing
    entries filled) and ``next_prev(prev, x_hat, y_logit, v, m)`` (what the next step fills from)."""

    latent, use_images = 0, False  # no image latent: ``v`` is [x ‖ dx], as ADxPro's ``v`` without μ

    def __init__(self, n_bio: int, n_dg: int, n_classes: int, hidden: int):
        super().__init__()
        self.n_x, self.n_classes, self.hidden = n_bio + n_dg, n_classes, hidden
        self.d_in = self.n_x + n_classes
        self.forecast_x = nn.Linear(hidden, self.n_x)
        self.forecast_y = nn.Linear(hidden, n_classes)
        self.log_vars = nn.Parameter(torch.zeros(2))  # Kendall s_k for dx, impute

    def reset_parameters(self):
        for mod in self.modules():
            if isinstance(mod, nn.Linear):
                nn.init.xavier_uniform_(mod.weight)
                if mod.bias is not None:
                    nn.init.zeros_(mod.bias)

    def forward(self, images, img_mask, x, x_mask, dx, dx_in, times, fill, sample: bool = False):
        B, T = dx.shape
        y = F.one_hot(dx.clamp(min=0), self.n_classes).float() * (dx >= 0)[..., None]
        obs, m = torch.cat([x, y], -1), torch.cat([x_mask, (dx_in * (dx >= 0)).float()[..., None]
                                                   .expand(B, T, self.n_classes)], -1)
        delta = elapsed(times, m)
        h = x.new_zeros(B, self.hidden)
        prev = fill.expand(B, -1)  # t = 1: the training means
        vs, x_hats, logits = [], [x.new_zeros(B, self.n_x)], [x.new_zeros(B, self.n_classes)]
        for t in range(T):
            h, v, prev = self.step(obs[:, t], m[:, t], delta[:, t], prev, h, fill)
            vs.append(v)
            x_hat = self.forecast_x(h) + v[:, : self.n_x]
            y_logit = self.forecast_y(h)
            if t + 1 < T:
                x_hats.append(x_hat)
                logits.append(y_logit)
            prev = self.next_prev(prev, x_hat, y_logit, v, m[:, t])
        return {"dx_logits": torch.stack(logits, 1), "x_hat": torch.stack(x_hats, 1), "v": torch.stack(vs, 1)}

    def losses(self, out, batch, beta: float = 1.0, n_bio: int = 6) -> dict:
        dx, x, x_mask = batch["dx"], batch["x"], batch["x_mask"]
        lab, logits = dx[:, 1:], out["dx_logits"][:, 1:]
        obs = lab >= 0
        l_dx = F.cross_entropy(logits[obs], lab[obs]) if obs.any() else logits.sum() * 0
        bm = x_mask[:, 1:, :n_bio]
        l_imp = ((out["x_hat"][:, 1:, :n_bio] - x[:, 1:, :n_bio]).abs() * bm).sum() / bm.sum().clamp(min=1)
        s = self.log_vars
        total = (torch.exp(-s) / 2 * torch.stack([l_dx, l_imp]) + s / 2).sum()
        return {"loss": total, "dx": l_dx, "impute": l_imp, "elbo": l_dx.new_zeros(())}


class GRUD(TabularForecaster):
    """GRU-D over ADxPro's tabular inputs (module docstring). ``prev`` carries the last observation of each
    element (the training mean until one is seen)."""

    def __init__(self, n_bio: int = 6, n_dg: int = 7, n_classes: int = 3, hidden: int = 128):
        super().__init__(n_bio, n_dg, n_classes, hidden)
        d = self.d_in
        self.decay_x = nn.Parameter(torch.zeros(d))  # diagonal W_γx
        self.decay_x_bias = nn.Parameter(torch.zeros(d))
        self.decay_h = nn.Linear(d, hidden)
        self.gates = nn.Linear(2 * d + hidden, 2 * hidden)  # z, r from [x̂ ‖ ĥ ‖ m]
        self.cand_x = nn.Linear(2 * d, hidden)  # W x̂ + V m + b
        self.cand_h = nn.Linear(hidden, hidden, bias=False)  # U (r ⊙ ĥ)
        self.reset_parameters()

    def step(self, obs, m, delta, last, h, mean):
        gx = torch.exp(-F.relu(self.decay_x * delta + self.decay_x_bias))
        v = m * obs + (1 - m) * (gx * last + (1 - gx) * mean)
        h = torch.exp(-F.relu(self.decay_h(delta))) * h
        z, r = torch.sigmoid(self.gates(torch.cat([v, h, m], -1))).chunk(2, -1)
        cand = torch.tanh(self.cand_x(torch.cat([v, m], -1)) + self.cand_h(r * h))
        return (1 - z) * h + z * cand, v, last

    def next_prev(self, last, x_hat, y_logit, v, m):
        """GRU-D's x_last: the latest observation of each element (its forecasts are not fed back)."""
        return m * v + (1 - m) * last
