"""The cross-stitch multitask CNN at full size against the epilepsy-mtl card."""

import pytest
import torch

from medrun.models.crossstitch import ChannelStitch, CrossStitchNet, FullStitch, keras_param_count


def test_parameter_count_matches_card():
    net = CrossStitchNet("full", 2)
    assert keras_param_count(net) == 1_068_208  # the card: 1,064,960 stitch + 2 × 1,624 CNN (BN moving stats counted)
    assert sum(p.numel() for p in net.parameters()) == 1_068_112
    assert sum(p.numel() for p in net.stitches.parameters()) == 1024**2 + 128**2 == 1_064_960
    assert keras_param_count(net.hfo) == keras_param_count(net.ied) == 1_624
    assert keras_param_count(CrossStitchNet("full", 0)) == 3_248
    assert keras_param_count(CrossStitchNet("full", 1)) == 3_248 + 1024**2
    assert keras_param_count(CrossStitchNet("channel", 2)) == 3_248 + 4 * (8 + 16)


def test_shapes_at_the_stitch_points():
    net = CrossStitchNet().eval()
    xa, xb = torch.rand(3, 3, 28, 28), torch.rand(3, 3, 28, 28)
    assert net.hfo.block1(xa).shape == (3, 8, 8, 8)
    assert net.hfo.block2(net.hfo.block1(xa)).shape == (3, 16, 2, 2)
    la, lb = net(xa, xb)
    assert la.shape == lb.shape == (3, 2)


@pytest.mark.parametrize("unit", [FullStitch((8, 8, 8)), ChannelStitch(8)])
def test_stitch_is_identity_at_init(unit):
    a, b = torch.randn(4, 8, 8, 8), torch.randn(4, 8, 8, 8)
    ya, yb = unit(a, b)
    assert torch.equal(ya, a) and torch.equal(yb, b)


def test_stitch_mixes_as_eq1():
    unit = FullStitch((2, 1, 1))
    with torch.no_grad():
        unit.alpha.copy_(torch.arange(16.0).reshape(4, 4))
    a, b = torch.tensor([[1.0, 2.0]]).reshape(1, 2, 1, 1), torch.tensor([[3.0, 4.0]]).reshape(1, 2, 1, 1)
    ya, yb = unit(a, b)
    want = torch.arange(16.0).reshape(4, 4) @ torch.tensor([1.0, 2, 3, 4])
    assert torch.equal(torch.cat([ya.flatten(), yb.flatten()]), want)
    ch = ChannelStitch(2)
    with torch.no_grad():
        ch.alpha.copy_(torch.tensor([[[0.5, 0.5], [0.0, 1.0]], [[1.0, 0.0], [2.0, 3.0]]]))
    ya, yb = ch(a, b)
    assert ya.flatten().tolist() == [2.0, 2.0] and yb.flatten().tolist() == [3.0, 16.0]


def _cross_grad(net):
    """|∂ HFO logits / ∂ IED input| summed: the gradient that crosses from one stream to the other."""
    net.eval()
    xa, xb = torch.rand(2, 3, 28, 28), torch.rand(2, 3, 28, 28, requires_grad=True)
    with torch.no_grad():  # move the stitches off the identity, as training would
        for p in net.stitches.parameters():
            p.add_(0.01 * torch.randn_like(p))
    net(xa, xb)[0].sum().backward()
    return 0.0 if xb.grad is None else float(xb.grad.abs().sum())


def test_n_stitch_0_makes_streams_independent():
    torch.manual_seed(0)
    assert _cross_grad(CrossStitchNet("full", 0)) == 0.0
    assert _cross_grad(CrossStitchNet("full", 2)) > 0
    assert _cross_grad(CrossStitchNet("channel", 1)) > 0


def test_keras_initialisers():
    torch.manual_seed(0)
    net = CrossStitchNet()
    conv = net.hfo.block1[0]
    limit = (6 / (3 * 9 + 8 * 9)) ** 0.5  # Glorot uniform: sqrt(6 / (fan_in + fan_out))
    assert conv.weight.abs().max() <= limit and conv.weight.abs().max() > 0.8 * limit
    assert torch.count_nonzero(conv.bias) == 0
    bn = net.hfo.block1[2]
    assert bn.momentum == 0.01 and bn.eps == 1e-3
    assert len(net.conv_kernels()) == 4
    with pytest.raises(ValueError):
        CrossStitchNet("diagonal")
