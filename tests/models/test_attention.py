"""CBAM in 2D and 3D: shapes, attention ranges, parameter counts of the sc-unext and cmu-net settings."""

import pytest
import torch

from medrun.models.attention import CBAM, ChannelAttention, SpatialAttention


@pytest.mark.parametrize("spatial_dims", [2, 3])
def test_cbam_keeps_shape(spatial_dims):
    shape = (2, 32) + (8,) * spatial_dims
    x = torch.randn(shape)
    block = CBAM(32, spatial_dims=spatial_dims)
    y = block(x)
    assert y.shape == x.shape
    y.sum().backward()
    assert all(p.grad is not None for p in block.parameters())


@pytest.mark.parametrize("spatial_dims", [2, 3])
def test_attention_maps_are_gates(spatial_dims):
    x = torch.randn((2, 16) + (6,) * spatial_dims)
    mc = ChannelAttention(16, spatial_dims=spatial_dims).weights(x)
    ms = SpatialAttention(spatial_dims=spatial_dims).weights(x)
    assert mc.shape == (2, 16) + (1,) * spatial_dims
    assert ms.shape == (2, 1) + (6,) * spatial_dims
    for m in (mc, ms):
        assert torch.all((m > 0) & (m < 1))


def test_cbam_equals_channel_then_spatial_gates():
    torch.manual_seed(0)
    block = CBAM(8, reduction=4, min_hidden=2)
    x = torch.randn(1, 8, 5, 5)
    x1 = x * block.channel.weights(x)
    expected = x1 * block.spatial.weights(x1)
    assert torch.allclose(block(x), expected)


def test_sc_unext_cbam_budget_is_3112():
    # sc-unext.md: hidden max(C/4, 2) on the skips 8, 16, 32, 64 -> 3,112 parameters.
    total = sum(sum(p.numel() for p in CBAM(c, reduction=4, min_hidden=2).parameters()) for c in (8, 16, 32, 64))
    assert total == 3_112


def test_hidden_width_never_zero():
    # cmu-net.md: r = 16 with hidden width at least 1, so C = 8 still works.
    block = CBAM(8)
    assert block.channel.mlp[0].out_channels == 1
    assert sum(p.numel() for p in block.parameters()) == 8 + 8 + 98
