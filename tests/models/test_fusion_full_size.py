"""SM-SAFE at the card's full size: parameter counts from the card's layer list, and ASE's token grids for a 96³
patch (24³, 12³, 6³), checked on the meta device (shapes without compute)."""

import torch

from medrun.models.fusion import SMSAFE


def n_params(m):
    return sum(p.numel() for p in m.parameters())


def test_full_size_parameter_counts_follow_the_card():
    from monai.networks.nets import UNet

    net = SMSAFE(4, 4)  # Task01 BrainTumour: FLAIR, T1w, T1gd, T2w → background + 3 tumour labels
    conv = lambda cin, cout, k=3: cin * cout * k**3 + cout  # noqa: E731
    norm = lambda c: 2 * c  # noqa: E731 (affine InstanceNorm / LayerNorm)
    stem = conv(1, 32) + norm(32) + conv(32, 32) + norm(32)
    assert n_params(net.fusion.stems) == 4 * stem == 114_816
    assert n_params(net.fusion.fusions) == 32 + 1  # V ∈ R^32 and b, shared by the modalities
    attention = conv(64, 192, 1) + conv(64, 64, 1) + norm(64)
    downs = conv(32, 64) + norm(64) + 3 * (conv(64, 64) + norm(64))
    assert n_params(net.ase) == downs + 3 * attention + 3 * conv(64, 32, 1) == 444_384
    unet = UNet(3, 32, 4, (32, 64, 128, 256, 320), (2, 2, 2, 2), num_res_units=2, norm="INSTANCE")
    assert n_params(net.unet) == n_params(unet) == 12_920_809
    assert n_params(net) == 13_480_042
    baseline = UNet(3, 4, 4, (32, 64, 128, 256, 320), (2, 2, 2, 2), num_res_units=2, norm="INSTANCE")
    assert n_params(SMSAFE(4, 4, use_amf=False, use_ase=False)) == n_params(baseline) == 12_872_425
    assert n_params(SMSAFE(4, 4, use_ase=False)) == 13_480_042 - 444_384  # AMF-Net


def test_full_size_shapes_on_a_96_cubed_patch():
    net = SMSAFE(2, 3).to("meta")  # Task05 Prostate: T2 + ADC
    tokens = []
    for layer in net.ase.attentions:
        layer.register_forward_hook(lambda m, i, o: tokens.append(tuple(o.shape)))
    out = net(torch.empty(1, 2, 96, 96, 96, device="meta"))
    assert out.shape == (1, 3, 96, 96, 96)
    assert tokens == [(1, 64, 24, 24, 24), (1, 64, 12, 12, 12), (1, 64, 6, 6, 6)]
    weights = net.fusion_weights(torch.empty(1, 2, 96, 96, 96, device="meta"))
    assert weights.shape == (1, 2, 96, 96, 96)
