"""Classification metrics against scikit-learn and small cases worked by hand."""

from __future__ import annotations

import numpy as np
import pytest
import sklearn.metrics as skm
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from medrun.metrics import classification as C

# Hand & Till worked example: 3 classes, two samples each, rows sum to 1.
Y3 = np.array([0, 0, 1, 1, 2, 2])
P3 = np.array(
    [
        [0.6, 0.3, 0.1],
        [0.4, 0.4, 0.2],
        [0.3, 0.5, 0.2],
        [0.5, 0.2, 0.3],
        [0.2, 0.3, 0.5],
        [0.1, 0.6, 0.3],
    ]
)


def test_hand_till_worked_by_hand():
    # pair (0,1): A(0|1)=3/4, A(1|0)=2/4 -> 0.625; pair (0,2): 1 and 1 -> 1;
    # pair (1,2): A(1|2)=1/4, A(2|1)=3.5/4 (one tie) -> 0.5625.  M = (0.625 + 1 + 0.5625) / 3
    expected = (0.625 + 1.0 + 0.5625) / 3
    assert C.auroc(Y3, P3, average="ovo") == pytest.approx(expected)
    assert C.auroc(Y3, P3, average="ovo") == pytest.approx(skm.roc_auc_score(Y3, P3, multi_class="ovo"))


def test_macro_ovr_and_micro_by_hand():
    # OvR class 0: positives {.6,.4} vs negatives {.3,.5,.2,.1}: 7/8; class 1: {.5,.2} vs {.3,.4,.3,.6}: 3/8;
    # class 2: {.5,.3} vs {.1,.2,.2,.3}: 7.5/8
    assert C.auroc(Y3, P3, average="macro") == pytest.approx((7 + 3 + 7.5) / 24)
    onehot = np.eye(3)[Y3]
    assert C.auroc(Y3, P3, average="micro") == pytest.approx(skm.roc_auc_score(onehot.ravel(), P3.ravel()))
    with pytest.raises(ValueError):
        C.auroc(Y3, P3, average="bogus")


def test_binary_auroc_shapes_and_degenerate():
    y = np.array([0, 0, 1, 1])
    s = np.array([0.1, 0.4, 0.35, 0.8])
    assert C.auroc(y, s) == pytest.approx(0.75)
    assert C.auroc(y, np.stack([1 - s, s], 1)) == pytest.approx(0.75)
    assert C.auroc(torch.tensor(y), torch.tensor(s)) == pytest.approx(0.75)
    assert np.isnan(C.auroc(np.ones(4, int), s))


def test_multilabel_auroc_skips_single_class_labels():
    y = np.array([[1, 0, 1], [0, 0, 1], [1, 0, 1], [0, 0, 1]])  # labels 1 and 2 have one class only
    p = np.array([[0.9, 0.1, 0.5], [0.2, 0.3, 0.5], [0.6, 0.2, 0.5], [0.7, 0.9, 0.5]])
    # label 0: positives {.9,.6} vs negatives {.2,.7}: 3/4
    assert C.auroc(y, p) == pytest.approx(0.75)
    assert C.multilabel_auroc(y, p) == pytest.approx(0.75)
    assert np.isnan(C.multilabel_auroc(np.ones((3, 2)), np.random.rand(3, 2)))


@settings(max_examples=20, deadline=None)
@given(st.integers(0, 10_000), st.integers(8, 60), st.integers(2, 5))
def test_multilabel_auroc_matches_sklearn(seed, n, labels):
    rng = np.random.default_rng(seed)
    y = (rng.random((n, labels)) < 0.4).astype(int)
    p = rng.random((n, labels))
    valid = [j for j in range(labels) if 0 < y[:, j].sum() < n]
    if not valid:
        assert np.isnan(C.multilabel_auroc(y, p))
        return
    ref = skm.roc_auc_score(y[:, valid], p[:, valid], average="macro")
    assert C.multilabel_auroc(y, p) == pytest.approx(ref)
    if 0 < y.sum() < y.size:
        assert C.multilabel_auroc(y, p, average="micro") == pytest.approx(skm.roc_auc_score(y, p, average="micro"))


@settings(max_examples=20, deadline=None)
@given(st.integers(0, 10_000), st.integers(10, 80), st.integers(3, 6))
def test_multiclass_auroc_matches_sklearn(seed, n, k):
    rng = np.random.default_rng(seed)
    y = np.concatenate([np.arange(k), rng.integers(0, k, n - k)])
    logits = rng.normal(size=(n, k)) + np.eye(k)[y]
    p = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    assert C.auroc(y, p, "ovo") == pytest.approx(skm.roc_auc_score(y, p, multi_class="ovo"))
    assert C.auroc(y, p, "macro") == pytest.approx(skm.roc_auc_score(y, p, multi_class="ovr", average="macro"))
    onehot = np.eye(k)[y]
    assert C.auroc(y, p, "micro") == pytest.approx(skm.roc_auc_score(onehot, p, average="micro"))


@settings(max_examples=20, deadline=None)
@given(st.integers(0, 10_000), st.integers(5, 80), st.integers(2, 5))
def test_label_metrics_match_sklearn(seed, n, k):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, k, n)
    yp = np.where(rng.random(n) < 0.6, y, rng.integers(0, k, n))
    assert C.accuracy(y, yp) == pytest.approx(skm.accuracy_score(y, yp))
    np.testing.assert_array_equal(C.confusion_matrix(y, yp, k), skm.confusion_matrix(y, yp, labels=range(k)))
    prf = C.precision_recall_f1(y, yp, k)
    present = np.unique(y)
    ref = skm.precision_recall_fscore_support(y, yp, labels=present, average="macro", zero_division=0)
    assert prf["precision_macro"] == pytest.approx(ref[0])
    assert prf["recall_macro"] == pytest.approx(ref[1])
    assert prf["f1_macro"] == pytest.approx(ref[2])
    refw = skm.precision_recall_fscore_support(y, yp, labels=range(k), average="weighted", zero_division=0)
    assert prf["f1_weighted"] == pytest.approx(refw[2])
    if len(present) > 1 or len(np.unique(yp)) > 1:
        assert C.quadratic_kappa(y, yp) == pytest.approx(skm.cohen_kappa_score(y, yp, weights="quadratic"))
    yb, ypb = (y == 1).astype(int), (yp == 1).astype(int)
    if yb.any():
        assert C.sensitivity(yb, ypb) == pytest.approx(skm.recall_score(yb, ypb))
    if (yb == 0).any():
        assert C.specificity(yb, ypb) == pytest.approx(skm.recall_score(1 - yb, 1 - ypb))


def test_label_metrics_by_hand():
    y = np.array([1, 1, 1, 0, 0])
    yp = np.array([1, 0, 1, 1, 0])
    assert C.accuracy(y, yp) == pytest.approx(0.6)
    assert C.sensitivity(y, yp) == pytest.approx(2 / 3)
    assert C.specificity(y, yp) == pytest.approx(0.5)
    assert C.balanced_accuracy(y, yp) == pytest.approx((2 / 3 + 0.5) / 2)
    np.testing.assert_array_equal(C.confusion_matrix(y, yp), [[1, 1], [1, 2]])
    prf = C.precision_recall_f1(y, yp)
    assert prf["per_class"]["precision"] == pytest.approx([0.5, 2 / 3])
    assert np.isnan(C.accuracy([], []))
    assert np.isnan(C.sensitivity([0, 0], [0, 1]))


def test_auroc_metric_accumulates_like_one_batch():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 3, 90)
    p = rng.dirichlet(np.ones(3), 90)
    m = C.AUROCMetric(average="ovo")
    for i in range(0, 90, 25):
        m.update(torch.tensor(p[i : i + 25]), torch.tensor(y[i : i + 25]))
    assert float(m.compute()) == pytest.approx(C.auroc(y, p, "ovo"))
    m.reset()
    yl = (rng.random((40, 4)) < 0.5).astype(int)
    pl = rng.random((40, 4))
    ml = C.AUROCMetric()
    ml.update(pl[:20], yl[:20])
    ml.update(pl[20:], yl[20:])
    assert float(ml.compute()) == pytest.approx(C.multilabel_auroc(yl, pl))
