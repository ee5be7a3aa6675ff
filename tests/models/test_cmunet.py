"""CMU-Net at full size against the card's layer list; ablation variants; deep-supervision weights; the vectorised
selective scan against the sequential reference."""

import math

import pytest
import torch

from medrun.models.attention import CBAM
from medrun.models.cmunet import CMUNet, deep_supervision_weights
from medrun.models.selective_scan import MambaLayer, selective_scan_sequential, selective_scan_ssd


def n_params(m):
    return sum(p.numel() for p in m.parameters())


def card_count(channels=(32, 64, 128, 256, 512), mamba=True, cbam=True, n_state=16, expand=2, classes=2, cin=1):
    """Parameters written out from the card's "Method" section."""

    def conv_block(a, b):  # 2 x [3x3 conv (bias) + InstanceNorm(affine)]
        return (a * b * 9 + b + 2 * b) + (b * b * 9 + b + 2 * b)

    def mamba_layer(c):
        e, r = expand * c, math.ceil(c / 16)
        return (2 * c  # LayerNorm
                + c * 2 * e  # in_proj, no bias
                + e * 4 + e  # depthwise conv1d k=4 with bias
                + e * (r + 2 * n_state)  # x_proj, no bias
                + r * e + e  # dt_proj with bias
                + e * n_state + e  # A_log, D
                + e * c)  # out_proj, no bias

    def cbam_params(c):
        return 2 * c * max(c // 16, 1) + 2 * 49  # shared MLP (no bias) + 7x7 spatial conv (2 -> 1, no bias)

    total, prev = 0, cin
    for c in channels:
        total += conv_block(prev, c) + (mamba_layer(c) if mamba else 0) + (cbam_params(c) if cbam else 0)
        prev = c
    for k in range(len(channels) - 1):
        total += channels[k + 1] * channels[k] * 4 + channels[k]  # 2x2 transposed conv with bias
        total += conv_block(2 * channels[k], channels[k])
        total += channels[k] * classes + classes  # deep-supervision head
    return total


@pytest.mark.parametrize("variant,mamba,cbam", [("cmunet", True, True), ("unet", False, False),
                                                ("umamba", True, False), ("unet-cbam", False, True)])
def test_full_size_parameter_counts_follow_the_card(variant, mamba, cbam):
    net = CMUNet(variant=variant)
    assert n_params(net) == card_count(mamba=mamba, cbam=cbam)
    assert sum(isinstance(m, MambaLayer) for m in net.modules()) == (5 if mamba else 0)
    assert sum(isinstance(m, CBAM) for m in net.modules()) == (5 if cbam else 0)


def test_full_size_counts_pinned():
    assert n_params(CMUNet()) == 10_103_986
    assert n_params(CMUNet(variant="unet")) == 7_766_344


def test_full_size_shapes_and_deep_supervision():
    net = CMUNet(scan="ssd", chunk_size=64).train()
    x = torch.randn(1, 1, 64, 64)
    outs = net(x)
    assert [tuple(o.shape) for o in outs] == [(1, 2, 64, 64), (1, 2, 32, 32), (1, 2, 16, 16), (1, 2, 8, 8)]
    net.eval()
    with torch.no_grad():
        assert net(x).shape == (1, 2, 64, 64)
    with pytest.raises(ValueError, match="divisible by 16"):
        net(torch.randn(1, 1, 40, 40))


def test_skip_is_the_cbam_output():
    net = CMUNet(channels=(4, 8), d_state=2, scan="ssd").eval()
    seen = {}
    net.encoder[0].cbam.register_forward_hook(lambda m, i, o: seen.setdefault("cbam", o))
    net.encoder[1].register_forward_pre_hook(lambda m, i: seen.setdefault("next", i[0]))
    with torch.no_grad():
        net(torch.randn(1, 1, 8, 8))
    assert torch.equal(torch.nn.functional.max_pool2d(seen["cbam"], 2), seen["next"])


def test_deep_supervision_weights_are_nnunets():
    w = deep_supervision_weights(4)
    assert w == pytest.approx([1 / 1.75, 0.5 / 1.75, 0.25 / 1.75, 0.0])
    assert deep_supervision_weights(1) == [1.0]


def _scan_inputs(L, scale=1.0, dtype=torch.float32, seed=0):
    g = torch.Generator().manual_seed(seed)
    b, e, n = 2, 6, 4
    t = {
        "u": torch.randn(b, e, L, generator=g),
        "delta": torch.randn(b, e, L, generator=g) * 0.5 - 1,
        "A": -torch.rand(e, n, generator=g) * 4 * scale - 0.1,
        "B": torch.randn(b, n, L, generator=g),
        "C": torch.randn(b, n, L, generator=g),
        "D": torch.randn(e, generator=g),
        "z": torch.randn(b, e, L, generator=g),
        "delta_bias": torch.randn(e, generator=g) * 0.1,
    }
    return {k: v.to(dtype).requires_grad_() for k, v in t.items()}


@pytest.mark.parametrize("L,chunk,scale", [(300, 64, 1.0), (257, 16, 1.0), (200, 32, 40.0)])
def test_ssd_scan_matches_sequential(L, chunk, scale):
    """Values, last state and gradients; scale 40 forces the segment-sum fallback (strong decay)."""
    ins = _scan_inputs(L, scale)
    outs = []
    for fn, kw in ((selective_scan_sequential, {}), (selective_scan_ssd, {"chunk_size": chunk, "max_elements": 4000})):
        y, last = fn(**ins, delta_softplus=True, return_last_state=True, **kw)
        grads = torch.autograd.grad((y * y.cos()).sum() + last.sum(), list(ins.values()))
        outs.append((y, last, grads))
    (y0, s0, g0), (y1, s1, g1) = outs
    torch.testing.assert_close(y1, y0, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(s1, s0, atol=1e-4, rtol=1e-4)
    for a, b in zip(g1, g0, strict=True):
        torch.testing.assert_close(a, b, atol=2e-3, rtol=1e-3)
