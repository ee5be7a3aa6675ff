"""Per-sample event classification metrics for flow cytometry (MRD detection; mrd-flow card).

Inputs: ``y_true`` and ``y_pred``, 0/1 labels of one sample's events (N,), blast = 1 = positive. Scores are computed
per sample and then averaged over samples (the paper's "avg F1"; its "med F1" is the median).

Conventions (those of the reference code, ``flowNetworks/src/metrics/metric.py``, without its 1e-5 epsilon):
- precision = TP / (TP + FP), 0 when nothing is predicted positive; recall = TP / (TP + FN), 0 without blasts;
- F1 = 2TP / (2TP + FP + FN), and 1 when the sample has no blasts and none is predicted (sklearn's
  ``f1_score(zero_division=1.0)``);
- MRD = the fraction of events that are (predicted) blasts.
"""

from __future__ import annotations

import numpy as np

from ._arrays import to_numpy


def counts(y_true, y_pred) -> dict:
    """{tp, fp, fn, tn} of one sample."""
    t, p = to_numpy(y_true).ravel().astype(bool), to_numpy(y_pred).ravel().astype(bool)
    if t.shape != p.shape:
        raise ValueError(f"labels {t.shape} and predictions {p.shape} differ in length")
    tp = int(np.count_nonzero(t & p))
    fp = int(np.count_nonzero(~t & p))
    fn = int(np.count_nonzero(t & ~p))
    return {"tp": tp, "fp": fp, "fn": fn, "tn": int(t.size - tp - fp - fn)}


def scores_from_counts(tp: int, fp: int, fn: int, tn: int) -> dict:
    n = tp + fp + fn + tn
    return {"precision": tp / (tp + fp) if tp + fp else 0.0,
            "recall": tp / (tp + fn) if tp + fn else 0.0,
            "f1": 2 * tp / (2 * tp + fp + fn) if tp + fp + fn else 1.0,
            "mrd_true": (tp + fn) / n if n else float("nan"),
            "mrd_pred": (tp + fp) / n if n else float("nan")}


def sample_scores(y_true, y_pred) -> dict:
    """precision, recall, F1, true and predicted MRD of one sample, plus its counts."""
    c = counts(y_true, y_pred)
    return {**scores_from_counts(**c), **c}


def all_positive_f1(y_true) -> float:
    """F1 of calling every event a blast (the chance level MRD detection is read against): 2·MRD / (1 + MRD), and
    0 for a sample without blasts."""
    return sample_scores(y_true, np.ones_like(to_numpy(y_true)))["f1"]


def summarise(rows: list[dict], keys=("precision", "recall", "f1")) -> dict:
    """Mean over samples of each key, and ``f1_median``."""
    out = {k: float(np.mean([r[k] for r in rows])) if rows else float("nan") for k in keys}
    out["f1_median"] = float(np.median([r["f1"] for r in rows])) if rows else float("nan")
    return out
