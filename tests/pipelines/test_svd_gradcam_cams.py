"""svd-gradcam's CAM methods against references on small networks (captum, hand-written loops, numpy)."""

import numpy as np
import pytest
import torch

from medrun.models.camnet import densenet169, tiny_cnn
from medrun.pipelines.svd_gradcam import cams


@pytest.fixture(scope="module")
def setup():
    torch.manual_seed(0)
    net = tiny_cnn(16).eval()
    for p in net.parameters():
        p.requires_grad_(False)
    x = torch.rand(3, 3, 32, 32) * 255
    sign = torch.tensor([1.0, -1.0, 1.0])
    return net, x, sign


def up(m, x):
    return cams.upsample(m, x.shape[-2:])


def test_gradcam_equals_captum(setup):
    from captum.attr import LayerGradCam

    net, x, sign = setup
    ref = LayerGradCam(lambda i: sign * net(i).reshape(-1), net.relu).attribute(x, relu_attributions=True)[:, 0]
    ours = cams.gradcam(net, net.relu, x, sign, gradient="map")
    assert ours.abs().max() > 0 and torch.allclose(ours, ref, atol=1e-7, rtol=1e-5)


def test_pre_relu_gradient_is_map_gradient_masked(setup):
    net, x, sign = setup
    a, g_map, _ = cams.activations_and_grads(net, net.relu, x, sign, "map")
    a2, g_pre, _ = cams.activations_and_grads(net, net.relu, x, sign, "pre_relu")
    assert torch.equal(a, a2) and torch.allclose(g_pre, g_map * (a > 0))
    # at the ReLU output of a GAP + linear head every ∂Y/∂M^k is constant (w_k / PQ): rank 1
    assert torch.allclose(g_map, g_map[..., :1, :1].expand_as(g_map))
    assert (up(cams.svd_gradcam(net, net.relu, x, sign, n=1, gradient="map"), x)
            - up(cams.gradcam(net, net.relu, x, sign, "map"), x)).abs().max() < 1e-6
    with pytest.raises(ValueError, match="gradient must be"):
        cams.gradcam(net, net.relu, x, sign, "post")


def test_full_rank_svd_gradcam_equals_gradcam(setup):
    net, x, sign = setup
    g = up(cams.gradcam(net, net.relu, x, sign), x)
    for n in (8, 100):  # 8 = min(P, Q) at 32² input
        assert (up(cams.svd_gradcam(net, net.relu, x, sign, n=n), x) - g).abs().max() < 1e-6
    assert (up(cams.svd_gradcam(net, net.relu, x, sign, n=1), x) - g).abs().max() > 1e-3  # n = 1 filters


def test_full_rank_equals_gradcam_on_densenet169():
    torch.manual_seed(0)
    net = densenet169().eval()
    x = torch.rand(1, 3, 128, 128) * 255
    s = torch.ones(1)
    g = up(cams.gradcam(net, net.relu, x, s), x)
    assert (up(cams.svd_gradcam(net, net.relu, x, s, n=4), x) - g).abs().max() < 1e-6


def test_svd_weights_match_numpy_and_sign_behaviour():
    torch.manual_seed(1)
    g = torch.randn(2, 5, 4, 6)
    u, s, vh = np.linalg.svd(g.double().numpy(), full_matrices=False)
    n = 2
    usv = (u[..., :n] * s[..., None, :n]) @ vh[..., :n, :]
    assert torch.allclose(cams.svd_weights(g, n, "usv"), torch.from_numpy(usv.mean((-2, -1))).float(), atol=1e-6)
    uv = u[..., :n] @ vh[..., :n, :]
    assert torch.allclose(cams.svd_weights(g, n, "uv"), torch.from_numpy(uv.mean((-2, -1))).float(), atol=1e-6)
    assert torch.allclose(cams.svd_weights(g, n, "u"), torch.from_numpy(u[..., :n].mean((-2, -1))).float(), atol=1e-6)
    assert torch.allclose(cams.svd_weights(g, n, "v"), torch.from_numpy(vh[..., :n, :].mean((-2, -1))).float(),
                          atol=1e-6)
    # (c) and (d) do not depend on the SVD's sign choice: flipping U and V together leaves them unchanged
    flipped = ((-u[..., :n]) * s[..., None, :n]) @ (-vh[..., :n, :])
    assert np.allclose(flipped, usv)
    literal = usv[..., :, :n].sum((-2, -1)) / (n * 4)
    assert torch.allclose(cams.svd_weights(g, n, "usv", literal_eq=True), torch.from_numpy(literal).float(), atol=1e-6)
    assert torch.allclose(cams.svd_weights(g, 4, "usv"), g.mean((-2, -1)), atol=1e-6)  # full rank = Grad-CAM weights
    with pytest.raises(ValueError, match="variant"):
        cams.svd_weights(g, 1, "s")


def test_cam_equals_gradcam_for_gap_linear_head(setup):
    net, x, sign = setup
    cam, grad = up(cams.cam(net, net.relu, x, sign), x), up(cams.gradcam(net, net.relu, x, sign, "map"), x)
    assert (cam - grad).abs().max() < 1e-6
    with pytest.raises(ValueError, match="single Linear head"):
        cams.cam(tiny_cnn(16, "mlp").eval(), None, x, sign)


def test_ablation_cam_equals_hand_reference(setup):
    net, x, sign = setup
    with torch.no_grad():
        a = net.forward_features(x)
        y = sign * net.forward_head(a)[:, 0]
        w = torch.stack([(y - sign * net.forward_head(a * (torch.arange(16) != k).float().view(1, -1, 1, 1))[:, 0]) / y
                         for k in range(16)], 1)
        ref = torch.relu((w[:, :, None, None] * a).sum(1))
    assert torch.allclose(cams.ablation_cam(net, net.relu, x, sign, batch=5), ref, atol=1e-6)
    # captum's whole-net path (LayerFeatureAblation, used for any other layer) gives the same map
    plain = torch.nn.Sequential(net)  # no .relu / .forward_head of its own
    assert torch.allclose(cams.ablation_cam(plain, net.relu, x, sign, batch=5), ref, atol=1e-6)


def test_score_cam_equals_hand_reference(setup):
    net, x, sign = setup
    with torch.no_grad():
        a = net.forward_features(x)
        w = torch.zeros(3, 16)
        for i in range(3):
            for k in range(16):
                m = torch.nn.functional.interpolate(a[i:i + 1, k:k + 1], size=(32, 32), mode="bilinear",
                                                    align_corners=False)
                m = (m - m.min()) / (m.max() - m.min()) if m.max() > m.min() else torch.zeros_like(m)
                w[i, k] = torch.sigmoid(sign[i] * net(x[i:i + 1] * m)[0, 0])
        ref = torch.relu((w[:, :, None, None] * a).sum(1))
    assert torch.allclose(cams.score_cam(net, net.relu, x, sign, batch=7), ref, atol=1e-5)


def test_eigen_cam_is_first_principal_projection(setup):
    net, x, sign = setup
    with torch.no_grad():
        a = net.forward_features(x).double().numpy()
    out = cams.eigen_cam(net, net.relu, x, sign)
    for i in range(3):
        flat = a[i].reshape(16, -1).T
        proj = flat @ np.linalg.svd(flat, full_matrices=False)[2][0]
        proj = proj if proj.sum() >= 0 else -proj
        assert np.allclose(out[i].numpy().ravel(), np.maximum(proj, 0), atol=1e-5)
    assert torch.equal(out, cams.eigen_cam(net, net.relu, x, -sign))  # class-agnostic


def test_gradcampp_matches_numpy_formula(setup):
    net, x, sign = setup
    a, g, _ = cams.activations_and_grads(net, net.relu, x, sign)
    a, g = a.double().numpy(), g.double().numpy()
    den = 2 * g**2 + a.sum((2, 3), keepdims=True) * g**3
    alpha = np.where(g != 0, g**2 / np.where(den != 0, den, 1), 0)
    w = (alpha * np.maximum(g, 0)).sum((2, 3))
    ref = np.maximum((w[:, :, None, None] * a).sum(1), 0)
    assert np.allclose(cams.gradcampp(net, net.relu, x, sign).numpy(), ref, atol=1e-6)


def test_smooth_gradcam_averages_noisy_gradcams(setup):
    net, x, sign = setup
    one = cams.smooth_gradcam(net, net.relu, x, sign, n=1, sigma=1e-9)
    assert torch.allclose(one, cams.gradcam(net, net.relu, x, sign), atol=1e-6)
    g1, g2 = torch.Generator().manual_seed(3), torch.Generator().manual_seed(3)
    assert torch.equal(cams.smooth_gradcam(net, net.relu, x, sign, 4, 0.15, g1),
                       cams.smooth_gradcam(net, net.relu, x, sign, 4, 0.15, g2))


def test_upsample_normalises_and_compute_dispatch(setup):
    net, x, sign = setup
    for method in cams.METHODS:
        m = cams.upsample(cams.compute(method, net, net.relu, x, sign, smooth_n=2), (32, 32))
        assert m.shape == (3, 32, 32) and m.min() >= 0 and m.max() <= 1
    assert cams.upsample(torch.ones(1, 4, 4), (8, 8)).abs().max() == 0
    with pytest.raises(ValueError, match="unknown CAM method"):
        cams.compute("lime", net, net.relu, x, sign)


def test_focal_loss_is_the_binary_focal_formula():
    from monai.losses import FocalLoss

    torch.manual_seed(0)
    z, y = torch.randn(20, 1), torch.randint(0, 2, (20, 1)).float()
    p = torch.sigmoid(z)
    pt = p * y + (1 - p) * (1 - y)
    at = 0.25 * y + 0.75 * (1 - y)
    ref = (-at * (1 - pt) ** 2 * torch.log(pt)).mean()
    assert torch.allclose(FocalLoss(gamma=2.0, alpha=0.25, use_softmax=False)(z, y), ref, atol=1e-6)


def test_rank_one_weight_of_a_mask_depends_on_its_shape_not_its_rank():
    """Why SVD-Grad-CAM ≈ Grad-CAM on a GAP head (issue 22): there the pre-ReLU gradient of channel k is
    c_k · 1[M^k > 0], a non-negative map. Its top singular vectors are non-negative (Perron) and carry nearly all
    of its sum, so the rank-1 mean is close to the full mean for a region or a scattered map of rank > 1; it is
    far from it only when the mask has separate parts in separate rows and columns (then it keeps the larger)."""
    yy, xx = np.mgrid[0:16, 0:16]

    def ratio(mask):
        g = torch.tensor(mask, dtype=torch.float64)[None, None] * 0.3
        return float(cams.svd_weights(g, 1) / g.mean((2, 3)))

    assert ratio((yy < 9) & (xx > 4)) == pytest.approx(1.0)  # a rectangle: rank 1
    disc = (yy - 8) ** 2 + (xx - 8) ** 2 <= 9
    holes = np.random.default_rng(0).random((16, 16)) < 0.7
    assert np.linalg.matrix_rank(disc) > 1 and np.linalg.matrix_rank(holes) > 1
    assert ratio(disc) == pytest.approx(1.0, abs=0.05) and ratio(holes) == pytest.approx(1.0, abs=0.05)
    two = ((yy - 3) ** 2 + (xx - 3) ** 2 <= 4) | ((yy - 12) ** 2 + (xx - 12) ** 2 <= 4)
    assert ratio(two) == pytest.approx(0.5, abs=0.05)
