"""Input coercion shared by the metric modules."""

from __future__ import annotations

import numpy as np


def to_numpy(x) -> np.ndarray:
    """Accept numpy arrays, torch tensors (any device, with or without grad) and sequences."""
    if hasattr(x, "detach"):
        x = x.detach().cpu().numpy()
    return np.asarray(x)
