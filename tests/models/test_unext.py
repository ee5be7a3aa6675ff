"""UNeXt / SC-UNeXt: shapes, the exact parameter counts of sc-unext.md, FLOPs at 256², the shift."""

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from medrun.models.unext import count_parameters, sc_unext, shift_groups, unext_paper, unext_small

UNEXT_SMALL = 253_561


def test_unext_small_has_exactly_253561_parameters():
    assert count_parameters(unext_small()) == UNEXT_SMALL


@pytest.mark.parametrize(
    ("flags", "delta"),
    [
        ({"cbam": True}, 3_112),
        ({"sc_skip": True}, 1_440),
        ({"pfm": True}, 3_704),
        ({"cbam": True, "sc_skip": True}, 3_112 + 1_440),
        ({"cbam": True, "pfm": True}, 3_112 + 3_704),
        ({"sc_skip": True, "pfm": True}, 1_440 + 3_704),
    ],
)
def test_each_sc_unext_flag_adds_the_cards_parameter_count(flags, delta):
    assert count_parameters(unext_small(**flags)) - UNEXT_SMALL == delta


def test_sc_unext_total_is_261817():
    assert count_parameters(sc_unext()) == 261_817


def test_dense_sc_f_adds_about_49k():
    extra = count_parameters(sc_unext(sc_f="full")) - count_parameters(sc_unext())
    assert 47_000 < extra < 50_000


def test_paper_variant_is_about_1_47m():
    assert round(count_parameters(unext_paper()) / 1e6, 2) == 1.47


@pytest.mark.parametrize("factory", [unext_small, sc_unext])
def test_shape_and_backward(factory):
    model = factory(in_channels=3, out_channels=2)
    x = torch.randn(2, 3, 64, 96)
    y = model(x)
    assert y.shape == (2, 2, 64, 96)
    y.mean().backward()
    assert all(p.grad is not None for p in model.parameters())


def test_unext_small_macs_at_256():
    model = unext_small().eval()
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model(torch.randn(1, 3, 256, 256))
    gmac = counter.get_total_flops() / 2e9
    assert gmac == pytest.approx(0.099, abs=0.002)


def test_input_not_divisible_by_32_is_refused():
    with pytest.raises(ValueError, match="divisible by 32"):
        unext_small()(torch.randn(1, 3, 48, 64))


def test_shift_moves_groups_with_zero_fill():
    x = torch.arange(5 * 4, dtype=torch.float32).reshape(1, 5, 4, 1)
    out = shift_groups(x, 5, dim=2)
    # group g (one channel each) moves down by g - 2 rows
    assert torch.equal(out[0, 2], x[0, 2])
    assert torch.equal(out[0, 3, :, 0], torch.tensor([0.0, 12, 13, 14]))
    assert torch.equal(out[0, 0, :, 0], torch.tensor([2.0, 3, 0, 0]))
    assert torch.equal(out[0, 4, :, 0], torch.tensor([0.0, 0, 16, 17]))
