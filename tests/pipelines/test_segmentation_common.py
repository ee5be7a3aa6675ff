"""Shared segmentation helpers: per-case metrics agree with metrics.segmentation, summaries skip non-finite cases."""

import math

import numpy as np

from medrun.metrics import segmentation as seg
from medrun.pipelines.tasks import segmentation as common


def _disc(r, size=32, c=16):
    yy, xx = np.mgrid[:size, :size]
    return (yy - c) ** 2 + (xx - c) ** 2 <= r * r


def test_case_metrics_and_summary(tmp_path):
    a, b = _disc(8), _disc(6)
    row = common.case_metrics(a, b, ("dice", "iou", "hd95", "assd"))
    assert row["dice"] == seg.dice(a, b) and row["hd95"] == seg.hausdorff95(a, b)
    empty = common.case_metrics(np.zeros_like(a), b, ("dice", "hd95"))
    assert empty["dice"] == 0 and math.isinf(empty["hd95"])
    s = common.summarise([row, empty], ("dice", "hd95"))
    assert s["n_cases"] == 2 and math.isclose(s["dice"], row["dice"] / 2)
    assert s["hd95"] == row["hd95"] and s["hd95_nonfinite_cases"] == 1
