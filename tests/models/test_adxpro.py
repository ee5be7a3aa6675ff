"""models.adxpro: the full-size parameter count (pinned: the card states none), shapes, the masked product of
experts and Δ against hand computations, masks and causality of the recurrent part, the Kendall weighting, and
Hand & Till mAUC against sklearn."""

import numpy as np
import pytest
import torch

from medrun.models.adxpro import ADxPro, Decoder3d, Encoder3d, elapsed, product_of_experts

FULL_PARAMS = 12_799_411  # this implementation at the card's sizes (the lost first build had 12,817,425)


def n_params(m):
    return sum(p.numel() for p in m.parameters())


def test_full_size_parameter_count():
    net = ADxPro()
    assert n_params(net) == FULL_PARAMS
    enc, dec = net.encoders[0], net.decoders[0]
    assert dec.start == (8, 10, 8) and dec.fc.out_features == 128 * 8 * 10 * 8  # the card's 128×8×10×8
    assert [m.out_channels for m in enc.conv if isinstance(m, torch.nn.Conv3d)] == [16, 32, 64, 128]
    assert enc.mu.out_features == 64 and net.hidden == 128
    assert net.cell.gates.in_features == 2 * (64 + 13 + 3) + 128  # [v ‖ ĥ ‖ m]


def test_encoder_full_size_and_decoder_crops_odd_sizes():
    enc = Encoder3d(64).eval()
    with torch.no_grad():
        mu, lv = enc(torch.rand(1, 1, 128, 160, 128))
    assert mu.shape == lv.shape == (1, 64)
    for shape in ((16, 20, 16), (32, 48, 32)):
        dec = Decoder3d(shape, 8)
        out = dec(torch.randn(3, 8))
        assert out.shape == (3, 1, *shape) and 0 <= out.min() and out.max() <= 1


def test_product_of_experts_closed_form():
    torch.manual_seed(0)
    mu, lv = torch.randn(4, 2, 5), torch.randn(4, 2, 5)
    mask = torch.tensor([[1.0, 1.0], [1.0, 0.0], [0.0, 1.0], [0.0, 0.0]])
    m, v = product_of_experts(mu, lv, mask)
    T = torch.exp(-lv)
    both = (mu[0] * T[0]).sum(0) / (1 + T[0].sum(0))
    assert torch.allclose(m[0], both) and torch.allclose(v[0], 1 / (1 + T[0].sum(0)))
    assert torch.allclose(m[1], mu[1, 0] * T[1, 0] / (1 + T[1, 0]))
    assert torch.allclose(m[3], torch.zeros(5)) and torch.allclose(v[3], torch.ones(5))  # prior only


def test_elapsed_time_matches_eq2():
    times = torch.tensor([[0.0, 1.0, 2.0, 3.0, 5.0]])
    mask = torch.tensor([[[1.0], [0.0], [0.0], [1.0], [1.0]]])
    d = elapsed(times, mask)[0, :, 0].tolist()
    assert d == [0.0, 1.0, 2.0, 3.0, 2.0]  # 0; observed before: 1; missing before: 1+1; 1+2; observed before: 2


def _batch(B=3, T=6, shape=(16, 20, 16), seed=0):
    g = torch.Generator().manual_seed(seed)
    return dict(
        images=torch.rand(B, T, 2, *shape, generator=g),
        img_mask=(torch.rand(B, T, 2, generator=g) > 0.4).float(),
        x=torch.randn(B, T, 13, generator=g),
        x_mask=(torch.rand(B, T, 13, generator=g) > 0.3).float(),
        dx=torch.randint(-1, 3, (B, T), generator=g),
        dx_in=torch.zeros(B, T),
        times=torch.arange(T, dtype=torch.float32).expand(B, T),
        fill=torch.zeros(13 + 3),
    )


def _run(net, b):
    return net(b["images"], b["img_mask"], b["x"], b["x_mask"], b["dx"], b["dx_in"], b["times"], b["fill"])


def test_masks_and_causality():
    torch.manual_seed(0)
    net = ADxPro((16, 20, 16), latent=8, hidden=16).eval()
    b = _batch()
    with torch.no_grad():
        ref = _run(net, b)
        assert ref["dx_logits"].shape == (3, 6, 3) and ref["x_hat"].shape == (3, 6, 13) and ref["v"].shape == (3, 6, 24)
        masked = dict(
            b,
            x=b["x"] + 100 * (1 - b["x_mask"]),  # values under a 0 mask are never seen
            images=b["images"] * b["img_mask"][..., None, None, None] + 7 * (1 - b["img_mask"][..., None, None, None]),
            dx=b["dx"].clone(),
        )
        out = _run(net, masked)
        assert torch.allclose(out["dx_logits"], ref["dx_logits"], atol=1e-6)
        later = dict(b, x=b["x"].clone(), images=b["images"].clone())
        later["x"][:, 3:] += 5
        later["images"][:, 3:] = 1 - later["images"][:, 3:]
        out = _run(net, later)
        assert torch.allclose(out["dx_logits"][:, :4], ref["dx_logits"][:, :4], atol=1e-6)  # forecast of t uses < t
        assert not torch.allclose(out["dx_logits"][:, 4:], ref["dx_logits"][:, 4:])
        # without DX input the labels never enter; with the baseline setting they do
        swapped = dict(b, dx=torch.where(b["dx"] >= 0, (b["dx"] + 1) % 3, b["dx"]))
        assert torch.allclose(_run(net, swapped)["dx_logits"], ref["dx_logits"], atol=1e-6)
        base = dict(b, dx_in=torch.zeros(3, 6).index_fill_(1, torch.tensor([0]), 1.0))
        swapped_base = dict(swapped, dx_in=base["dx_in"])
        if (b["dx"][:, 0] >= 0).any():
            assert not torch.allclose(_run(net, base)["dx_logits"], _run(net, swapped_base)["dx_logits"])


def test_losses_kendall_weighting_and_backward():
    torch.manual_seed(0)
    net = ADxPro((16, 20, 16), latent=8, hidden=16)
    with torch.no_grad():
        net.log_vars.copy_(torch.tensor([0.5, -0.2, 1.0]))
    b = _batch()
    out = net(b["images"], b["img_mask"], b["x"], b["x_mask"], b["dx"], b["dx_in"], b["times"], b["fill"], sample=True)
    parts = net.losses(out, b)
    s = net.log_vars.detach()
    manual = sum(torch.exp(-s[k]) / 2 * parts[n].detach() + s[k] / 2 for k, n in enumerate(("dx", "impute", "elbo")))
    assert torch.isclose(parts["loss"].detach(), manual)
    parts["loss"].backward()
    assert net.encoders[1].conv[0].weight.grad is not None and net.forecast_y.weight.grad.abs().sum() > 0
    bio_only = ADxPro((16, 20, 16), latent=8, hidden=16, use_images=False)
    out = _run(bio_only, b)
    assert torch.equal(out["mu"], torch.zeros_like(out["mu"])) and bio_only.losses(out, b)["elbo"] == 0


def test_hand_till_mauc_matches_sklearn():
    from sklearn.metrics import roc_auc_score

    from medrun.metrics.classification import auroc

    rng = np.random.default_rng(0)
    y = rng.integers(0, 3, 200)
    logits = rng.normal(size=(200, 3)) + 1.5 * np.eye(3)[y]
    p = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    assert auroc(y, p, average="ovo") == pytest.approx(
        roc_auc_score(y, p, multi_class="ovo", average="macro"), abs=1e-12
    )
