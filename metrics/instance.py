"""Instance segmentation metrics on integer instance-label maps.

Inputs: ``pred`` and ``gt`` integer maps of one shape (2D or 3D), 0 = background, every other value one instance
(labels need not be consecutive). Cards: hybrid-seg (bPQ, mPQ per class, AJI, AP50 and AP@[.5:.95]).

- ``panoptic_quality`` (Kirillov et al. 2019): a predicted and a true instance match when IoU > 0.5 (such matches are
  unique); for a lower ``iou_threshold`` the matching is the IoU-maximising one-to-one assignment among pairs above it.
  RQ (= the card's DQ) = TP/(TP + ½FP + ½FN), SQ = mean IoU of the matches (0 without matches), PQ = SQ·RQ. Both maps
  empty → NaN (nothing to score; skipped in a mean over images or classes); one empty → 0 (hybrid-seg: "an empty
  prediction scores 0").
- ``multiclass_panoptic_quality``: PanNuke-style (C, H, W) instance maps, one channel per class; PQ per class and
  their mean over the classes present in ``gt`` (hybrid-seg's mPQ for one image; average it over images).
- ``aji`` (Kumar et al. 2017): each true instance takes the predicted instance of highest IoU with it (none if no
  overlap); C = Σ|G ∩ S|, U = Σ|G ∪ S| + areas of predicted instances never taken; AJI = C/U. Both empty → NaN.
- ``average_precision``: COCO-style per image. Predictions in descending ``scores`` (default: all 1, ties in label
  order) are matched greedily to the unmatched true instance of highest IoU ≥ t; AP at t is the 101-point
  interpolated area under the precision–recall curve; ``ap50`` at t = 0.5, ``ap`` the mean over t = 0.50:0.05:0.95.
  No true instance → NaN; no prediction (with true instances) → 0.
"""

from __future__ import annotations

import numpy as np

from ._arrays import to_numpy


def _maps(pred, gt) -> tuple[np.ndarray, np.ndarray]:
    pred, gt = to_numpy(pred), to_numpy(gt)
    if pred.shape != gt.shape:
        raise ValueError(f"pred and gt must have one shape, got {pred.shape} and {gt.shape}")
    return pred.astype(np.int64).ravel(), gt.astype(np.int64).ravel()


def iou_matrix(pred, gt) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Pairwise tables for the instances: ``(iou, inter, pred_ids, gt_ids)``; ``iou``/``inter`` are (P, G)."""
    p, g = _maps(pred, gt)
    pred_ids, p_idx = np.unique(p, return_inverse=True)
    gt_ids, g_idx = np.unique(g, return_inverse=True)
    joint = np.zeros((len(pred_ids), len(gt_ids)), dtype=np.int64)
    np.add.at(joint, (p_idx, g_idx), 1)
    pk, gk = pred_ids != 0, gt_ids != 0
    area_p, area_g = joint.sum(1)[pk], joint.sum(0)[gk]
    inter = joint[np.ix_(pk, gk)]
    union = area_p[:, None] + area_g[None, :] - inter
    iou = np.divide(inter, union, out=np.zeros(inter.shape, float), where=union > 0)
    return iou, inter, pred_ids[pk], gt_ids[gk]


def _areas(pred, gt) -> tuple[np.ndarray, np.ndarray]:
    p, g = _maps(pred, gt)
    return np.unique(p[p != 0], return_counts=True)[1], np.unique(g[g != 0], return_counts=True)[1]


def panoptic_quality(pred, gt, iou_threshold: float = 0.5) -> dict:
    """``{"pq", "sq", "rq", "tp", "fp", "fn"}`` of two instance maps."""
    iou, _, pred_ids, gt_ids = iou_matrix(pred, gt)
    n_p, n_g = len(pred_ids), len(gt_ids)
    if n_p == 0 and n_g == 0:
        return {"pq": float("nan"), "sq": float("nan"), "rq": float("nan"), "tp": 0, "fp": 0, "fn": 0}
    if iou_threshold >= 0.5:
        matched = iou[iou > iou_threshold]
    else:
        from scipy.optimize import linear_sum_assignment

        candidate = np.where(iou > iou_threshold, iou, 0.0)
        rows, cols = linear_sum_assignment(candidate, maximize=True)
        matched = candidate[rows, cols]
        matched = matched[matched > iou_threshold]
    tp = int(matched.size)
    fp, fn = n_p - tp, n_g - tp
    rq = tp / (tp + 0.5 * fp + 0.5 * fn)
    sq = float(matched.mean()) if tp else 0.0
    return {"pq": sq * rq, "sq": sq, "rq": rq, "tp": tp, "fp": fp, "fn": fn}


def multiclass_panoptic_quality(pred, gt, iou_threshold: float = 0.5) -> dict:
    """``{"per_class": {c: pq or NaN}, "mpq": mean over classes with an instance in gt}`` for (C, ...) maps."""
    pred, gt = to_numpy(pred), to_numpy(gt)
    if pred.shape != gt.shape:
        raise ValueError(f"pred and gt must have one shape, got {pred.shape} and {gt.shape}")
    per_class = {}
    for c in range(gt.shape[0]):
        per_class[c] = panoptic_quality(pred[c], gt[c], iou_threshold)["pq"] if gt[c].any() else float("nan")
    present = [v for v in per_class.values() if not np.isnan(v)]
    return {"per_class": per_class, "mpq": float(np.mean(present)) if present else float("nan")}


def aji(pred, gt) -> float:
    """Aggregated Jaccard Index."""
    iou, inter, pred_ids, gt_ids = iou_matrix(pred, gt)
    area_p, area_g = _areas(pred, gt)
    if len(pred_ids) == 0 and len(gt_ids) == 0:
        return float("nan")
    c = u = 0
    used = np.zeros(len(pred_ids), bool)
    for j in range(len(gt_ids)):
        if len(pred_ids) == 0 or iou[:, j].max() == 0:
            u += area_g[j]
            continue
        i = int(np.argmax(iou[:, j]))
        c += inter[i, j]
        u += area_p[i] + area_g[j] - inter[i, j]
        used[i] = True
    u += area_p[~used].sum()
    return float(c / u)


def _ap_at(iou: np.ndarray, order: np.ndarray, n_gt: int, t: float) -> float:
    taken = np.zeros(n_gt, bool)
    hits = np.zeros(len(order), bool)
    for rank, i in enumerate(order):
        cand = np.where(~taken & (iou[i] >= t), iou[i], -1.0)
        j = int(np.argmax(cand)) if n_gt else -1
        if j >= 0 and cand[j] >= 0:
            taken[j] = True
            hits[rank] = True
    tp = np.cumsum(hits)
    recall = tp / n_gt
    precision = tp / np.arange(1, len(order) + 1)
    # precision envelope, then sample at 101 recall points (COCO)
    envelope = np.maximum.accumulate(precision[::-1])[::-1]
    points = np.linspace(0, 1, 101)
    idx = np.searchsorted(recall, points, side="left")
    sampled = np.where(idx < len(envelope), envelope[np.minimum(idx, len(envelope) - 1)], 0.0)
    return float(sampled.mean())


def average_precision(pred, gt, scores=None, thresholds=None) -> dict:
    """``{"ap50", "ap", "per_threshold": {t: AP}}``; ``scores`` maps predicted label → confidence (dict or
    sequence aligned with the sorted non-zero predicted labels)."""
    iou, _, pred_ids, gt_ids = iou_matrix(pred, gt)
    thresholds = np.round(np.arange(0.5, 0.951, 0.05), 2) if thresholds is None else np.asarray(thresholds)
    if len(gt_ids) == 0:
        nan = float("nan")
        return {"ap50": nan, "ap": nan, "per_threshold": {float(t): nan for t in thresholds}}
    if scores is None:
        s = np.ones(len(pred_ids))
    elif isinstance(scores, dict):
        s = np.array([scores[int(i)] for i in pred_ids], float)
    else:
        s = to_numpy(scores).astype(float)
    order = np.argsort(-s, kind="stable")
    per = {float(t): (_ap_at(iou, order, len(gt_ids), t) if len(pred_ids) else 0.0) for t in thresholds}
    ap50 = _ap_at(iou, order, len(gt_ids), 0.5) if len(pred_ids) else 0.0
    return {"ap50": ap50, "ap": float(np.mean(list(per.values()))), "per_threshold": per}
