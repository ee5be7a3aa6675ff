"""MinimalRNN (Chen 2017) as Nguyen et al. (NeuroImage 2020) applied it to ADNI progression, a biomarker-only baseline
of ADxPro's Table 1, on the interface of ``models.adxpro.ADxPro`` (through ``models.grud.TabularForecaster``).

The cell, as published: z_t = tanh(W_x v_t + b_x), u_t = σ(U_h h_{t−1} + U_z z_t + b_u),
h_t = u_t ⊙ h_{t−1} + (1 − u_t) ⊙ z_t. Nguyen et al.'s "model filling": a missing input takes the model's own
forecast of it from the step before (the training mean at t = 1), v_t = m ⊙ x_t + (1 − m) ⊙ x̂_t; the forecasts are
x̂_{t+1} = x̂_t + W_v h_t (they predict the change) and DX_{t+1} = softmax(W_y h_t). No mask input and no time decay
(the visit grid is yearly). Loss and initialisation as ``models.grud``.
"""

from __future__ import annotations

import torch
import torch.nn as nn

from .grud import TabularForecaster


class MinimalRNN(TabularForecaster):
    def __init__(self, n_bio: int = 6, n_dg: int = 7, n_classes: int = 3, hidden: int = 128):
        super().__init__(n_bio, n_dg, n_classes, hidden)
        self.embed = nn.Linear(self.d_in, hidden)  # Φ: W_x, b_x
        self.update = nn.Linear(2 * hidden, hidden)  # U_h, U_z, b_u
        self.reset_parameters()

    def step(self, obs, m, delta, prev, h, fill):
        v = m * obs + (1 - m) * prev
        z = torch.tanh(self.embed(v))
        u = torch.sigmoid(self.update(torch.cat([h, z], -1)))
        return u * h + (1 - u) * z, v, prev

    def next_prev(self, prev, x_hat, y_logit, v, m):
        """Model filling: the next step's missing entries are this step's forecasts."""
        return torch.cat([x_hat, torch.softmax(y_logit, -1)], -1)
