"""models.lrp_unet: the card's U-Nets at full size, Captum LRP against a pure-torch LRP-ε, the residual fix,
object selection and the log transform."""

import numpy as np
import pytest
import torch
from torch import nn

from medrun.models import lrp_unet as L


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    """Two torch threads on two shared cores spin against each other; one is enough for these small nets."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def n_params(m):
    return sum(p.numel() for p in m.parameters())


# MONAI 1.6 nets at the card's widths, 1 input and 1 output channel (instance norm is MONAI's affine=False).
FULL_SIZE = {("unet", "batch"): 7_782_849, ("unet", "instance"): 7_776_961,
             ("resunet", "batch"): 6_499_565, ("resunet", "instance"): 6_494_699,
             ("unetpp", "batch"): 2_410_180, ("unetpp", "instance"): 2_406_212}


@pytest.mark.parametrize("arch,norm", list(FULL_SIZE))
def test_full_size_parameter_counts(arch, norm):
    assert n_params(L.Segmenter(arch, norm)) == FULL_SIZE[(arch, norm)]


def test_full_size_widths_and_shapes():
    unet = L.Segmenter("unet")
    assert unet.net.conv_0.conv_0.conv.out_channels == 32 and unet.net.down_4.convs.conv_0.conv.out_channels == 512
    assert L.Segmenter("unet", in_channels=3).net.conv_0.conv_0.conv.in_channels == 3  # Cityscapes
    x = torch.rand(1, 1, 32, 32)
    for arch in L.ARCHS:
        with torch.no_grad():
            assert L.Segmenter(arch).eval()(x).shape == (1, 1, 32, 32)


def _small(arch, norm="batch"):
    f = {"unet": (4, 8, 8, 8, 8, 4), "resunet": (4, 8, 8, 8, 8), "unetpp": (4, 4, 8, 8, 8, 4)}[arch]
    torch.manual_seed(0)
    return L.Segmenter(arch, norm, 1, 1, f).eval()


def test_captum_lrp_matches_pure_torch_reference():
    """The card's check: a 2-layer conv net (conv-ReLU-conv, summed), Captum LRP-ε against the explicit rule."""
    from captum.attr import LRP

    torch.manual_seed(0)
    layers = [nn.Conv2d(2, 5, 3, padding=1), nn.ReLU(), nn.Conv2d(5, 1, 3, padding=1)]

    class Sum(nn.Module):
        def forward(self, x):
            return x.sum(dim=(2, 3))

    model = nn.Sequential(*layers, Sum()).eval()
    x = torch.rand(3, 2, 8, 8)
    for eps in (1e-9, 1e-2):
        L.attach_rules(model, eps)
        got = LRP(model).attribute(x.clone().requires_grad_(True), target=0)
        want = L.lrp_epsilon_reference([*layers, Sum()], x, eps)
        assert torch.allclose(got, want, rtol=1e-4, atol=1e-6), (eps, (got - want).abs().max())
    # LRP-0 without biases conserves relevance exactly
    for conv in (layers[0], layers[2]):
        nn.init.zeros_(conv.bias)
    r = L.lrp_epsilon_reference([*layers, Sum()], x, 1e-12)
    assert torch.allclose(r.sum(dim=(1, 2, 3)), model(x)[:, 0], rtol=1e-4)


def test_masked_sum_starts_relevance_at_the_selected_object():
    net = _small("unet")
    x = torch.rand(1, 1, 32, 32)
    mask = torch.zeros(1, 1, 32, 32)
    mask[..., 8:16, 8:16] = 1
    with torch.no_grad():
        expected = (torch.sigmoid(net(x)) * mask).sum()
    _, start = L.relevance(net, x, mask)
    assert torch.allclose(start[0], expected)


@pytest.mark.parametrize("arch", L.ARCHS)
@pytest.mark.parametrize("norm", L.NORMS)
def test_lrp_runs_for_every_arch_and_norm(arch, norm):
    net = _small(arch, norm)
    x = torch.rand(2, 1, 32, 32)
    mask = torch.zeros(2, 1, 32, 32)
    mask[..., 4:20, 6:18] = 1
    before = {k: v.clone() for k, v in net.state_dict().items()}
    r, start = L.relevance(net, x, mask)
    assert r.shape == x.shape and torch.isfinite(r).all() and (start > 0).all()
    assert all(torch.equal(before[k], v) for k, v in net.state_dict().items())  # weights restored
    assert not any(hasattr(m, "rule") for m in net.modules())  # rules removed
    assert all(type(m).__name__ != "LRPResidualUnit" for m in net.modules())  # fix undone


def test_residual_fix_lowers_max_relevance_by_orders_of_magnitude():
    torch.manual_seed(1)
    net = L.Segmenter("resunet", "batch", 1, 1, (8, 16, 16, 16, 16)).eval()
    x = torch.rand(1, 1, 64, 64)
    mask = torch.zeros(1, 1, 64, 64)
    mask[..., 16:48, 16:48] = 1
    fixed, _ = L.relevance(net, x, mask, fix=True)
    plain, _ = L.relevance(net, x, mask, fix=False)
    assert plain.abs().max() / fixed.abs().max() > 100
    assert L.residual_fix(net, on=True) == 9 and L.residual_fix(net, on=False) == 9  # 4 down + bottom + 4 up units
    unet = _small("unet")
    assert L.residual_fix(unet) == 0  # nothing to fix: concatenation skips only


def test_addition_module_splits_relevance_proportionally():
    """The ε-rule on a + b: R_a = a/(a+b)·R."""
    from captum.attr import LRP
    from captum.attr._utils.custom_modules import Addition_Module

    class Two(nn.Module):
        def __init__(self, fixed: bool):
            super().__init__()
            self.a, self.b = nn.Conv2d(1, 1, 1, bias=False), nn.Conv2d(1, 1, 1, bias=False)
            self.add = Addition_Module() if fixed else None
            nn.init.constant_(self.a.weight, 2.0)
            nn.init.constant_(self.b.weight, 3.0)

        def forward(self, x):
            return self.add(self.a(x), self.b(x)) if self.add else self.a(x) + self.b(x)

    x = torch.rand(1, 1, 4, 4) + 0.5
    out = {}
    for fixed in (True, False):
        net = nn.Sequential(Two(fixed), L.MaskedSum(torch.ones(1, 1, 4, 4))).eval()
        L.attach_rules(net, 1e-9)
        out[fixed] = LRP(net).attribute(x.clone().requires_grad_(True), target=0)
    assert torch.allclose(out[True], 5 * x, rtol=1e-4)  # conserved: Σ R = output
    assert torch.allclose(out[False], 10 * x, rtol=1e-4)  # plain autograd hands R to both summands: doubled


def test_select_object():
    prob = np.zeros((20, 20))
    prob[1:4, 1:4] = 0.9  # 9 px, label 1
    prob[10:18, 10:18] = 0.8  # 64 px, label 2
    prob[5, 5] = 0.4  # below threshold
    assert L.select_object(prob).sum() == 64
    assert L.select_object(prob, 1).sum() == 9 and L.select_object(prob, "2").sum() == 64
    assert L.n_objects(prob) == 2
    assert not L.select_object(np.zeros((5, 5))).any()
    with pytest.raises(ValueError, match="has 2 objects"):
        L.select_object(prob, 3)
    diag = np.zeros((5, 5))
    diag[1, 1] = diag[2, 2] = 1  # 8-connectivity joins diagonal neighbours
    assert L.n_objects(diag) == 1


def test_log_scale_is_the_papers_eq2():
    t = 0.1
    r = np.array([-10.0, -0.1, -0.05, 0.0, 0.05, 0.1, 1.0, 10.0])
    want = np.array([-np.log(100), 0, 0, 0, 0, 0, np.log(10), np.log(100)])
    assert np.allclose(L.log_scale(r, t), want)
    assert torch.allclose(L.log_scale(torch.tensor(r), t), torch.tensor(want))


def test_relevance_stats():
    r = np.zeros((10, 10))
    r[2:4, 2:4] = 1.0  # inside the object
    r[8, 8] = 1.0  # outside
    r[0, 9] = -5.0
    obj = np.zeros((10, 10), bool)
    obj[2:4, 2:4] = True
    s = L.relevance_stats(r, obj, start=2.0, dilate_px=0)
    assert s["focus"] == pytest.approx(0.8) and s["area_share"] == pytest.approx(0.04)
    assert s["max_abs_r"] == 5.0 and s["conservation"] == pytest.approx(0.0) and s["object_px"] == 4
    assert L.relevance_stats(r, obj, 2.0, dilate_px=1)["area_share"] == pytest.approx(12 / 100)


def test_layer_relevance_at_a_named_layer():
    net = _small("unet")
    names = L.layer_names(net)
    assert "down_4.convs.conv_1.conv" in names and not any(n.endswith(".A") for n in names)  # activations pass through
    x = torch.rand(1, 1, 32, 32)
    mask = torch.ones(1, 1, 32, 32)
    r, start = L.layer_relevance(net, x, mask, "down_4.convs.conv_1.conv")
    assert r.shape == (1, 8, 2, 2) and torch.isfinite(r).all() and start > 0
    with pytest.raises(KeyError):
        L.layer_relevance(net, x, mask, "down_9")
