"""Instance metrics: hand-worked maps, MONAI's panoptic quality, pycocotools' COCOeval, and a loop AJI."""

from __future__ import annotations

import contextlib
import io
import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from monai.metrics import compute_panoptic_quality

from medrun.metrics import instance as I


def _two_by_six():
    gt = np.zeros((4, 6), int)
    gt[:2, :2] = 1  # 4 px
    gt[:2, 3:6] = 2  # 6 px
    gt[3, 0] = 3  # 1 px, missed
    pred = np.zeros((4, 6), int)
    pred[:2, :2] = 7  # exact match of gt 1
    pred[:2, 4:6] = 9  # 4 px inside gt 2: IoU 4/6
    pred[3, 4:6] = 5  # false positive
    return pred, gt


def test_panoptic_quality_by_hand():
    pred, gt = _two_by_six()
    out = I.panoptic_quality(pred, gt)
    assert (out["tp"], out["fp"], out["fn"]) == (2, 1, 1)
    assert out["rq"] == pytest.approx(2 / (2 + 0.5 + 0.5))
    assert out["sq"] == pytest.approx((1 + 4 / 6) / 2)
    assert out["pq"] == pytest.approx(out["rq"] * out["sq"])
    assert I.panoptic_quality(torch.tensor(pred), torch.tensor(gt))["pq"] == pytest.approx(out["pq"])
    z = np.zeros_like(gt)
    assert math.isnan(I.panoptic_quality(z, z)["pq"])
    assert I.panoptic_quality(z, gt)["pq"] == 0.0 and I.panoptic_quality(pred, z)["pq"] == 0.0


def test_multiclass_pq_skips_absent_classes():
    pred, gt = _two_by_six()
    z = np.zeros_like(gt)
    out = I.multiclass_panoptic_quality(np.stack([pred, z, pred]), np.stack([gt, z, z]))
    assert math.isnan(out["per_class"][1]) and math.isnan(out["per_class"][2])
    assert out["mpq"] == pytest.approx(I.panoptic_quality(pred, gt)["pq"])
    both = I.multiclass_panoptic_quality(np.stack([pred, gt]), np.stack([gt, gt]))
    assert both["mpq"] == pytest.approx((I.panoptic_quality(pred, gt)["pq"] + 1.0) / 2)


def test_aji_by_hand():
    pred, gt = _two_by_six()
    # gt1<->7: C 4, U 4; gt2<->9: C 4, U 6; gt3: no overlap, U 1; unused pred 5: U 2
    assert I.aji(pred, gt) == pytest.approx(8 / 13)
    z = np.zeros_like(gt)
    assert math.isnan(I.aji(z, z)) and I.aji(z, gt) == 0.0 and I.aji(pred, z) == 0.0


def test_average_precision_by_hand():
    pred, gt = _two_by_six()
    scores = {7: 0.9, 9: 0.8, 5: 0.7}
    out = I.average_precision(pred, gt, scores)
    # t=0.5: hits at ranks 1, 2, miss at 3; recall 1/3, 2/3; precision 1 up to recall 2/3, 0 after
    assert out["ap50"] == pytest.approx(67 / 101)
    # t >= 0.7: only the exact match counts -> precision 1 up to recall 1/3 (34 of 101 points)
    assert out["per_threshold"][0.7] == pytest.approx(34 / 101)
    assert out["per_threshold"][0.65] == pytest.approx(67 / 101)
    assert out["ap"] == pytest.approx((4 * 67 + 6 * 34) / 101 / 10)
    assert math.isnan(I.average_precision(pred, np.zeros_like(gt))["ap"])
    assert I.average_precision(np.zeros_like(gt), gt)["ap50"] == 0.0


def _random_instances(rng, shape, n):
    lab = np.zeros(shape, int)
    for k in range(1, n + 1):
        c = rng.integers(0, shape[0]), rng.integers(0, shape[1])
        r = rng.integers(2, 6)
        yy, xx = np.ogrid[: shape[0], : shape[1]]
        lab[(yy - c[0]) ** 2 + (xx - c[1]) ** 2 <= r * r] = k * 3 + 1
    return lab


def _perturb(rng, lab):
    out = np.roll(lab, (int(rng.integers(-2, 3)), int(rng.integers(-2, 3))), axis=(0, 1))
    out[rng.random(lab.shape) < 0.05] = 0
    return out


def _aji_loop(pred, gt):
    gts = [g for g in np.unique(gt) if g]
    preds = [p for p in np.unique(pred) if p]
    c = u = 0
    used = set()
    for g in gts:
        G = gt == g
        best, best_iou = None, 0.0
        for p in preds:
            P = pred == p
            v = (G & P).sum() / (G | P).sum()
            if v > best_iou:
                best, best_iou = p, v
        if best is None:
            u += G.sum()
            continue
        P = pred == best
        c += (G & P).sum()
        u += (G | P).sum()
        used.add(best)
    u += sum((pred == p).sum() for p in preds if p not in used)
    return c / u


@settings(max_examples=40, deadline=None)
@given(st.integers(0, 10_000), st.integers(1, 8))
def test_pq_and_aji_match_references(seed, n):
    rng = np.random.default_rng(seed)
    gt = _random_instances(rng, (32, 32), n)
    pred = _perturb(rng, gt)
    if not pred.any():
        return
    ours = I.panoptic_quality(pred, gt)
    for name in ("pq", "sq", "rq"):
        ref = float(compute_panoptic_quality(torch.tensor(pred), torch.tensor(gt), metric_name=name))
        assert ours[name] == pytest.approx(ref, abs=1e-5)
    assert I.aji(pred, gt) == pytest.approx(_aji_loop(pred, gt))


def _coco(pred, gt, scores):
    from pycocotools import mask as mask_utils
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    def rle(m):
        r = mask_utils.encode(np.asfortranarray(m.astype(np.uint8)))
        r["counts"] = r["counts"].decode()
        return r

    h, w = gt.shape
    anns = []
    for k, g in enumerate(v for v in np.unique(gt) if v):
        m = gt == g
        anns.append({"id": k + 1, "image_id": 1, "category_id": 1, "segmentation": rle(m), "area": float(m.sum()),
                     "bbox": [0, 0, w, h], "iscrowd": 0})
    coco_gt = COCO()
    coco_gt.dataset = {"images": [{"id": 1, "height": h, "width": w}], "categories": [{"id": 1}], "annotations": anns}
    with contextlib.redirect_stdout(io.StringIO()):
        coco_gt.createIndex()
        dets = [{"image_id": 1, "category_id": 1, "segmentation": rle(pred == p), "score": scores[p]}
                for p in np.unique(pred) if p]
        coco_dt = coco_gt.loadRes(dets)
        ev = COCOeval(coco_gt, coco_dt, "segm")
        ev.params.areaRng = [[0, 1e10]]
        ev.params.areaRngLbl = ["all"]
        ev.params.maxDets = [100]
        ev.evaluate()
        ev.accumulate()
    precision = ev.eval["precision"][:, :, 0, 0, 0]  # (T, R)
    return float(np.mean(precision[0])), float(np.mean(precision))


@settings(max_examples=25, deadline=None)
@given(st.integers(0, 10_000), st.integers(1, 8))
def test_average_precision_matches_cocoeval(seed, n):
    rng = np.random.default_rng(seed)
    gt = _random_instances(rng, (32, 32), n)
    pred = _perturb(rng, gt)
    extra = _random_instances(rng, (32, 32), 2)
    pred = np.where((pred == 0) & (extra > 0), extra + 1000, pred)
    if not pred.any():
        return
    ids = [int(p) for p in np.unique(pred) if p]
    scores = dict(zip(ids, rng.permutation(len(ids)) / len(ids) + 0.01, strict=True))
    ours = I.average_precision(pred, gt, scores)
    ap50, ap = _coco(pred, gt, scores)
    assert ours["ap50"] == pytest.approx(ap50, abs=1e-9)
    assert ours["ap"] == pytest.approx(ap, abs=1e-9)
