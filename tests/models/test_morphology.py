"""Learnable morphology and C-SMA (ma-dtnet.md): scikit-image references, shapes, gate range, parameter count."""

import numpy as np
import pytest
import torch
from skimage import morphology

from medrun.models.morphology import CSMA, MorphologicalOp, SpatialMorphologicalAttention


def _footprint(rate: int) -> np.ndarray:
    """Flat 3x3 footprint with its taps spread ``rate`` pixels apart."""
    fp = np.zeros((2 * rate + 1, 2 * rate + 1), dtype=bool)
    fp[::rate, ::rate] = True
    return fp


@pytest.mark.parametrize("rate", [1, 2, 3])
@pytest.mark.parametrize(
    ("operation", "reference"), [("erosion", morphology.erosion), ("dilation", morphology.dilation)]
)
@pytest.mark.parametrize(("border", "mode"), [("ignore", "ignore"), ("zeros", "constant")])
def test_zero_structuring_element_equals_skimage(rate, operation, reference, border, mode):
    rng = np.random.default_rng(rate)
    image = rng.normal(size=(2, 11, 13)).astype(np.float32)
    op = MorphologicalOp(2, operation, dilation=rate, border=border)
    with torch.no_grad():
        out = op(torch.from_numpy(image)[None]).numpy()[0]
    for c in range(2):
        expected = reference(image[c], _footprint(rate), mode=mode, cval=0.0)
        np.testing.assert_allclose(out[c], expected, atol=1e-6)


def test_structuring_element_shifts_the_result_and_learns():
    op = MorphologicalOp(1, "dilation")
    x = torch.zeros(1, 1, 5, 5)
    x[0, 0, 2, 2] = 1.0
    with torch.no_grad():
        op.se.fill_(-0.5)
        op.se[0, 1, 1] = 0.25  # centre tap
    out = op(x)
    assert out[0, 0, 2, 2].item() == pytest.approx(1.25)  # the peak plus the centre weight
    assert out[0, 0, 2, 3].item() == pytest.approx(0.5)  # the peak seen through an off-centre tap
    assert out[0, 0, 0, 0].item() == pytest.approx(0.25)  # flat zero plus the best tap (the centre)
    out.sum().backward()
    assert op.se.grad is not None and op.se.grad.abs().sum() > 0


def test_erosion_subtracts_the_structuring_element():
    op = MorphologicalOp(1, "erosion")
    with torch.no_grad():
        op.se.fill_(0.3)
    out = op(torch.ones(1, 1, 4, 4))
    assert torch.allclose(out, torch.full_like(out, 0.7))


def test_sma_gate_and_shapes():
    sma = SpatialMorphologicalAttention(8)
    x = torch.randn(2, 8, 16, 16)
    w = sma.weights(x)
    assert w.shape == (2, 1, 16, 16)
    assert torch.all((w > 0) & (w < 1))
    assert sma(x).shape == x.shape


def test_sma_parameter_count():
    # 6 structuring elements (9C each) + 6 BN(C) + two 1x1 convs 3C -> 1 + three BN(1) + a 3x3 conv 2 -> 1.
    channels = 16
    expected = 6 * 9 * channels + 6 * 2 * channels + 2 * 3 * channels + 3 * 2 + 18
    assert sum(p.numel() for p in SpatialMorphologicalAttention(channels).parameters()) == expected


@pytest.mark.parametrize("channels", [8, 64])
def test_csma_shape_and_backward(channels):
    block = CSMA(channels)
    x = torch.rand(2, channels, 8, 8)
    y = block(x)
    assert y.shape == x.shape
    y.sum().backward()
    assert all(p.grad is not None for p in block.parameters())


def test_csma_ablation_switches():
    x = torch.randn(1, 16, 6, 6)
    assert torch.equal(CSMA(16, channel_attention=False, spatial_attention=False)(x), x)
    ca_only = CSMA(16, spatial_attention=False)
    assert not any(isinstance(m, SpatialMorphologicalAttention) for m in ca_only.modules())
