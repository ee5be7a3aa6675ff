"""Privacy of synthetic tabular data (sepsis-synth card).

``dcr(synthetic, real)``: distance to closest record, the mean over synthetic rows (N, F) of the Euclidean distance
to the nearest real row (M, F) (DCR_RS; the card's default direction, as in TabDDPM). ``dcr(real, real=None)`` with
``leave_one_out=True`` gives DCR_RR, each real row's distance to its nearest *other* real row. Scale the features
first (the card: standardised space). ``return_all=True`` returns the per-row distances for histograms.
Computed with scikit-learn's ``NearestNeighbors``.
"""

from __future__ import annotations

import numpy as np

from ._arrays import to_numpy


def dcr(synthetic, real=None, leave_one_out: bool = False, return_all: bool = False):
    from sklearn.neighbors import NearestNeighbors

    x = to_numpy(synthetic).astype(np.float64)
    if leave_one_out:
        ref = x if real is None else to_numpy(real).astype(np.float64)
        if len(ref) < 2:
            raise ValueError("leave-one-out DCR needs at least two rows")
        dist, _ = NearestNeighbors(n_neighbors=2).fit(ref).kneighbors(x)
        d = dist[:, 1]  # the nearest neighbour of a row within its own set is itself
    else:
        if real is None:
            raise ValueError("give the real rows, or leave_one_out=True for DCR_RR")
        dist, _ = NearestNeighbors(n_neighbors=1).fit(to_numpy(real).astype(np.float64)).kneighbors(x)
        d = dist[:, 0]
    return d if return_all else float(d.mean())
