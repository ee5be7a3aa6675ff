"""Object Dice and object Hausdorff (GlaS challenge definitions) against a hand-computed example."""

import math

import numpy as np
import pytest

from medrun.metrics.objects import object_dice, object_hausdorff, objects


def _example():
    """4×8 maps. G1 = rows 0–1 × cols 0–1 (4 px), G2 = rows 0–1 × cols 5–6 (4 px); S1 = rows 0–1 × cols 0–2 (6 px,
    covers G1), S2 = the single pixel (3, 6), touching nothing."""
    g = np.zeros((4, 8), int)
    g[0:2, 0:2], g[0:2, 5:7] = 1, 2
    s = np.zeros((4, 8), bool)
    s[0:2, 0:3] = True
    s[3, 6] = True
    return s, g


def test_object_dice_by_hand():
    # G side: γ = ½, ½; Dice(G1, S1) = 2·4/(4+6) = 0.8, G2 overlaps nothing → 0.  → 0.4
    # S side: σ = 6/7, 1/7; Dice(G1, S1) = 0.8, S2 overlaps nothing → 0.          → 4.8/7
    # ½ (0.4 + 4.8/7) = 19/35
    s, g = _example()
    assert object_dice(s, g) == pytest.approx(19 / 35)


def test_object_hausdorff_by_hand():
    # H(G1, S1) = 1 (S1's third column is 1 px from G1). G2 overlaps nothing: its nearest object in Hausdorff
    # distance is S2 (√10: from (0, 5) to (3, 6)), not S1 (5). S2 overlaps nothing: nearest is G2 (√10).
    # ½ [½·1 + ½·√10 + 6/7·1 + 1/7·√10] = 19/28 + 9√10/28
    s, g = _example()
    assert object_hausdorff(s, g) == pytest.approx(19 / 28 + 9 * math.sqrt(10) / 28)


def test_perfect_empty_and_labelling():
    s, g = _example()
    assert object_dice(g, g) == 1.0 and object_hausdorff(g, g) == 0.0
    empty = np.zeros_like(g)
    assert object_dice(empty, empty) == 1.0 and object_hausdorff(empty, empty) == 0.0
    assert object_dice(empty, g) == 0.0 and object_hausdorff(empty, g) == math.inf
    # a boolean mask is split into 8-connected objects: two diagonal pixels are one object
    diag = np.eye(3, dtype=bool)
    assert objects(diag).max() == 1
    # two touching glands of one binary mask merge into one object and lower the score against the labelled truth
    merged = g > 0
    merged[0:2, 2:5] = True
    assert object_dice(merged, g) < 1.0
