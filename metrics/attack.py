"""Adversarial attack success rate (cycleadvgan card).

``attack_success_rate(y_true, clean_pred, adv_pred)`` with labels (N,): over the samples the model classifies
correctly when clean, the fraction whose adversarial prediction differs from the true label. Returns
``{"asr", "clean_accuracy", "n_clean_correct", "n"}``; ``asr`` is NaN when no sample is clean-correct. For transfer
ASR pass the *target* model's clean and adversarial predictions (the denominator is what the target gets right).
"""

from __future__ import annotations

import numpy as np

from ._arrays import to_numpy


def attack_success_rate(y_true, clean_pred, adv_pred) -> dict:
    y, c, a = (to_numpy(v).ravel() for v in (y_true, clean_pred, adv_pred))
    if not (y.shape == c.shape == a.shape):
        raise ValueError(f"labels and predictions must have one length, got {y.shape}, {c.shape}, {a.shape}")
    correct = c == y
    n_ok = int(correct.sum())
    return {
        "asr": float(np.mean(a[correct] != y[correct])) if n_ok else float("nan"),
        "clean_accuracy": float(correct.mean()) if y.size else float("nan"),
        "n_clean_correct": n_ok,
        "n": int(y.size),
    }
