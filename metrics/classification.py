"""Classification metrics.

Inputs: ``y_true`` integer labels of shape (N,), ``y_pred`` integer labels (N,), ``probs`` class scores
(N, C) (rows need not sum to 1 for AUROC). Used by ad-lite (Table 1: accuracy and weighted P/R/F1; Table 3:
Keras ``AUC()`` on one-hot labels, i.e. micro-averaged ROC-AUC), ad-progression (mAUC = Hand & Till, ``"ovo"``),
idqce (multilabel linear-probe macro AUC), ma-dtnet (malignant = positive: accuracy, F1, AUROC) and every
classification card.

Built on scikit-learn; conventions:
- precision/recall/F1 of a class with no predicted (or no true) samples are 0, as in sklearn's
  ``classification_report(zero_division=0)``.
- ``auroc(average="micro")`` flattens one-hot labels against scores (Keras ``AUC()``); ``"macro"`` is the
  one-vs-rest mean over classes present in ``y_true``; ``"ovo"`` is Hand & Till's one-vs-one mean.
- Multilabel AUROC: ``y_true`` is a 0/1 matrix (N, L) of the same shape as ``probs``; ``"macro"`` is the mean
  of the per-label AUCs over labels that have both classes in ``y_true`` (a label with one class has no
  AUC and is skipped, not counted as 0 or 0.5); ``"micro"`` flattens labels and scores.
- AUROC of a single class present, or of no valid label, is NaN.
- ``AUROCMetric`` is the accumulating torchmetrics version (scores and labels are concatenated over
  batches and gathered over DDP ranks, then ``auroc`` runs once on the whole test set).
"""

from __future__ import annotations

import numpy as np
from torchmetrics import Metric

from ._arrays import to_numpy


def accuracy(y_true, y_pred) -> float:
    y_true, y_pred = to_numpy(y_true).ravel(), to_numpy(y_pred).ravel()
    return float(np.mean(y_true == y_pred)) if y_true.size else float("nan")


def balanced_accuracy(y_true, y_pred) -> float:
    from sklearn.metrics import balanced_accuracy_score

    return float(balanced_accuracy_score(to_numpy(y_true), to_numpy(y_pred)))


def confusion_matrix(y_true, y_pred, num_classes: int | None = None) -> np.ndarray:
    """Rows are true classes, columns predicted classes."""
    y_true, y_pred = to_numpy(y_true).ravel().astype(int), to_numpy(y_pred).ravel().astype(int)
    n = num_classes or int(max(y_true.max(initial=-1), y_pred.max(initial=-1)) + 1)
    cm = np.zeros((n, n), dtype=np.int64)
    np.add.at(cm, (y_true, y_pred), 1)
    return cm


def precision_recall_f1(y_true, y_pred, num_classes: int | None = None) -> dict:
    """Per-class, macro and weighted precision, recall and F1 (sklearn ``classification_report`` semantics).

    Returns ``{"per_class": {"precision": [...], "recall": [...], "f1": [...], "support": [...]},
    "precision_macro", "recall_macro", "f1_macro", "precision_weighted", "recall_weighted", "f1_weighted"}``.
    """
    from sklearn.metrics import precision_recall_fscore_support

    y_true, y_pred = to_numpy(y_true).ravel(), to_numpy(y_pred).ravel()
    n = num_classes or int(max(y_true.max(initial=-1), y_pred.max(initial=-1)) + 1)
    labels = list(range(n))
    p, r, f, s = precision_recall_fscore_support(y_true, y_pred, labels=labels, zero_division=0)
    out = {"per_class": {"precision": p.tolist(), "recall": r.tolist(), "f1": f.tolist(), "support": s.tolist()}}
    present = s > 0
    for name, v in (("precision", p), ("recall", r), ("f1", f)):
        out[f"{name}_macro"] = float(v[present].mean()) if present.any() else float("nan")
        out[f"{name}_weighted"] = float((v * s).sum() / s.sum()) if s.sum() else float("nan")
    return out


def sensitivity(y_true, y_pred, positive: int = 1) -> float:
    y_true, y_pred = to_numpy(y_true).ravel(), to_numpy(y_pred).ravel()
    pos = y_true == positive
    return float(np.mean(y_pred[pos] == positive)) if pos.any() else float("nan")


def specificity(y_true, y_pred, positive: int = 1) -> float:
    y_true, y_pred = to_numpy(y_true).ravel(), to_numpy(y_pred).ravel()
    neg = y_true != positive
    return float(np.mean(y_pred[neg] != positive)) if neg.any() else float("nan")


def auroc(y_true, probs, average: str = "macro") -> float:
    """ROC-AUC. Binary: ``probs`` (N,) or (N, 2). Multiclass: ``average`` in ``micro | macro | ovo``.

    Multilabel: ``y_true`` (N, L) of 0/1 with ``probs`` (N, L); ``average`` in ``macro | micro``.
    """
    from sklearn.metrics import roc_auc_score

    y_true, probs = to_numpy(y_true), to_numpy(probs).astype(float)
    if y_true.ndim == 2 and probs.ndim == 2 and y_true.shape == probs.shape and y_true.shape[1] > 1:
        return multilabel_auroc(y_true, probs, average=average)
    y_true = y_true.ravel().astype(int)
    if probs.ndim == 2 and probs.shape[1] == 2:
        probs = probs[:, 1]
    if probs.ndim == 1:
        return float(roc_auc_score(y_true, probs)) if len(np.unique(y_true)) == 2 else float("nan")
    n = probs.shape[1]
    onehot = np.eye(n, dtype=int)[y_true]
    if average == "micro":
        return float(roc_auc_score(onehot.ravel(), probs.ravel()))
    present = [c for c in range(n) if 0 < onehot[:, c].sum() < len(y_true)]
    if not present:
        return float("nan")
    if average == "macro":
        return float(np.mean([roc_auc_score(onehot[:, c], probs[:, c]) for c in present]))
    if average == "ovo":
        return _hand_till(y_true, probs)
    raise ValueError(f"average must be micro, macro or ovo, not {average!r}")


def _hand_till(y_true: np.ndarray, probs: np.ndarray) -> float:
    """Hand & Till (2001) M: mean over class pairs of the two directed pairwise AUCs."""
    from sklearn.metrics import roc_auc_score

    classes = np.unique(y_true)
    vals = []
    for i, a in enumerate(classes):
        for b in classes[i + 1 :]:
            m = (y_true == a) | (y_true == b)
            a_ab = roc_auc_score(y_true[m] == a, probs[m, a])
            a_ba = roc_auc_score(y_true[m] == b, probs[m, b])
            vals.append((a_ab + a_ba) / 2)
    return float(np.mean(vals)) if vals else float("nan")


def quadratic_kappa(y_true, y_pred) -> float:
    from sklearn.metrics import cohen_kappa_score

    return float(cohen_kappa_score(to_numpy(y_true).ravel(), to_numpy(y_pred).ravel(), weights="quadratic"))


def coverage(y_true, y_pred, alpha: float = 0) -> float:
    """Ordinal scores: the fraction of cases whose prediction is within ``alpha`` of the truth,
    |y_pred − y_true| ≤ alpha (covid-severity's Coverage(α) on CT severity scores 0–25). NaN for no cases."""
    t, p = to_numpy(y_true).ravel().astype(float), to_numpy(y_pred).ravel().astype(float)
    return float(np.mean(np.abs(p - t) <= alpha)) if t.size else float("nan")


def multilabel_auroc(y_true, probs, average: str = "macro") -> float:
    """Multilabel ROC-AUC: ``y_true`` (N, L) of 0/1, ``probs`` (N, L).

    ``"macro"``: mean over labels of the per-label AUC, skipping labels whose ``y_true`` column holds a single
    class. ``"micro"``: one AUC on the flattened matrices. NaN when no label can be scored.
    """
    from sklearn.metrics import roc_auc_score

    y_true, probs = to_numpy(y_true).astype(int), to_numpy(probs).astype(float)
    if y_true.shape != probs.shape or y_true.ndim != 2:
        raise ValueError(
            f"multilabel AUROC needs y_true and probs of one (N, L) shape, got {y_true.shape}, {probs.shape}"
        )
    if average == "micro":
        flat = y_true.ravel()
        return float(roc_auc_score(flat, probs.ravel())) if 0 < flat.sum() < flat.size else float("nan")
    if average != "macro":
        raise ValueError(f"multilabel average must be macro or micro, not {average!r}")
    n = y_true.shape[0]
    aucs = [roc_auc_score(y_true[:, j], probs[:, j]) for j in range(y_true.shape[1]) if 0 < y_true[:, j].sum() < n]
    return float(np.mean(aucs)) if aucs else float("nan")


class AUROCMetric(Metric):
    """Accumulating AUROC over batches and DDP ranks (torchmetrics ``Metric``).

    ``update(probs, y_true)`` with the shapes of :func:`auroc`; ``compute()`` returns ``auroc`` on everything
    seen (states are concatenated across ranks, so the result equals the single-process value).
    """

    full_state_update = False

    def __init__(self, average: str = "macro", **kwargs):
        super().__init__(**kwargs)
        self.average = average
        self.add_state("probs", default=[], dist_reduce_fx="cat")
        self.add_state("target", default=[], dist_reduce_fx="cat")

    def update(self, probs, y_true) -> None:
        import torch

        self.probs.append(torch.as_tensor(to_numpy(probs), dtype=torch.float64, device=self.device))
        self.target.append(torch.as_tensor(to_numpy(y_true), device=self.device).long())

    def compute(self):
        from torchmetrics.utilities import dim_zero_cat

        return auroc(dim_zero_cat(self.target), dim_zero_cat(self.probs), average=self.average)
