"""Binding-pocket detection success rates (DeepPocket protocol, drivpocket card).

Per site i: a predicted pocket centre c_i (3,) in Å, the ligand's atom coordinates L_i (M_i, 3) in Å, and for DVO
the predicted and true pocket voxel sets (boolean grids of one shape per site). Each function returns a success
rate in percent over sites (a site with no prediction — centre ``None`` — fails).
- ``dcc``: ‖c_i − centroid(L_i)‖ ≤ threshold (4 Å; the paper's "4τ").
- ``dca``: min_atom ‖c_i − a‖ ≤ threshold. The card's top-n / top-(n+2) candidate selection is the caller's job; with
  several candidates per site pass, per site, the (K, 3) array of candidate centres: success if any succeeds.
- ``dvo``: mean over sites of IoU(predicted voxels, true voxels) when DCC succeeds, else 0, in percent.
"""

from __future__ import annotations

import numpy as np

from ._arrays import to_numpy


def _centres(c) -> np.ndarray | None:
    if c is None:
        return None
    c = to_numpy(c).astype(np.float64)
    return c.reshape(-1, 3)


def _atoms(a) -> np.ndarray:
    return to_numpy(a).astype(np.float64).reshape(-1, 3)


def dcc_distances(pred_centres, ligands) -> np.ndarray:
    """Per site, the smallest distance from a candidate centre to the ligand centroid (inf without a centre)."""
    out = []
    for c, lig in zip(pred_centres, ligands, strict=True):
        c = _centres(c)
        out.append(
            np.inf if c is None or not len(c) else float(np.min(np.linalg.norm(c - _atoms(lig).mean(0), axis=1)))
        )
    return np.array(out)


def dca_distances(pred_centres, ligands) -> np.ndarray:
    """Per site, the smallest distance from a candidate centre to any ligand atom (inf without a centre)."""
    out = []
    for c, lig in zip(pred_centres, ligands, strict=True):
        c = _centres(c)
        if c is None or not len(c):
            out.append(np.inf)
            continue
        d = np.linalg.norm(c[:, None, :] - _atoms(lig)[None, :, :], axis=-1)
        out.append(float(d.min()))
    return np.array(out)


def dcc(pred_centres, ligands, threshold: float = 4.0) -> float:
    """DCC success rate in percent."""
    d = dcc_distances(pred_centres, ligands)
    return float(100.0 * np.mean(d <= threshold)) if d.size else float("nan")


def dca(pred_centres, ligands, threshold: float = 4.0) -> float:
    """DCA success rate in percent."""
    d = dca_distances(pred_centres, ligands)
    return float(100.0 * np.mean(d <= threshold)) if d.size else float("nan")


def dvo(pred_voxels, true_voxels, pred_centres, ligands, threshold: float = 4.0) -> float:
    """Mean discretised volume overlap in percent: IoU of the voxel sets where DCC succeeds, else 0."""
    d = dcc_distances(pred_centres, ligands)
    values = []
    for ok, p, t in zip(d <= threshold, pred_voxels, true_voxels, strict=True):
        if not ok:
            values.append(0.0)
            continue
        p, t = to_numpy(p).astype(bool), to_numpy(t).astype(bool)
        union = np.count_nonzero(p | t)
        values.append(np.count_nonzero(p & t) / union if union else 0.0)
    return float(100.0 * np.mean(values)) if values else float("nan")
