"""MA-DTNet and its ablation models (ma-dtnet.md): parameter counts against the card, feature shapes at 256²,
the heads each variant has, and loading a torchvision-style ResNet34 state dict."""

import pytest
import torch

from medrun.models.madtnet import DualTaskNet, ResNet34Encoder, UNetDecoder, load_torchvision_encoder


def n_params(m):
    return sum(p.numel() for p in m.parameters())


def test_full_size_parameter_count_matches_card():
    with torch.device("meta"):  # shapes only: no time spent initialising 22 M weights
        net = DualTaskNet()  # ResNet34 + C-SMA on f1..f5 + decoder (128, 64, 32, 16, 8) + CA classifier
        plain = DualTaskNet(skip_attention="none", cls_head="none")  # UNet-R34 of Tables 1–2
    assert n_params(net) == 22_787_554
    assert abs(n_params(net) - 22.95e6) / 22.95e6 < 0.01  # paper: 22.95 M
    assert abs(n_params(plain) - 22.72e6) / 22.72e6 < 0.01  # paper: 22.72 M
    assert n_params(net.encoder) == 21_285_568  # torchvision's resnet34 without fc is 21,284,672 (+896 biases)


def test_encoder_feature_shapes_at_256():
    enc = ResNet34Encoder().eval()
    with torch.no_grad():
        feats = enc(torch.rand(1, 3, 256, 256))
    assert [tuple(f.shape[1:]) for f in feats] == [
        (64, 128, 128),
        (64, 64, 64),
        (128, 32, 32),
        (256, 16, 16),
        (512, 8, 8),
    ]


def test_outputs_and_backward():
    net = DualTaskNet(decoder_widths=(32, 16, 8, 8, 8))
    seg, cls = net(torch.rand(2, 3, 64, 64))
    assert seg.shape == (2, 1, 64, 64) and cls.shape == (2,)
    (seg.mean() + cls.mean()).backward()
    assert all(p.grad is not None for p in net.parameters())


@pytest.mark.parametrize(("attention", "expected"), [
    ("none", 1_815_265),  # paper 1.81 M
    ("cbam", 1_818_377),  # paper 1.82 M
    ("ca", 1_817_985), ("sma", 1_832_641), ("csma", 1_835_361), ("mhsa", 3_312_033),  # paper 3.31 M
])
def test_small_unet_ablation_counts(attention, expected):
    net = DualTaskNet("unet", skip_attention=attention, cls_head="none")
    assert n_params(net) == expected
    seg, cls = net(torch.rand(1, 3, 32, 32))
    assert seg.shape == (1, 1, 32, 32) and cls is None


def test_multitask_and_classification_only_variants():
    seg, cls = DualTaskNet("unet", skip_attention="csma", cls_head="ca")(torch.rand(2, 3, 32, 32))
    assert seg.shape == (2, 1, 32, 32) and cls.shape == (2,)
    enc_only = DualTaskNet("unet", seg_head=False, cls_head="plain")
    seg, cls = enc_only(torch.rand(2, 3, 32, 32))
    assert seg is None and cls.shape == (2,)
    assert not hasattr(enc_only, "upcat_1")
    # SE size study (Table 5): 5×5 structuring elements add 16 weights per channel and operation
    c3 = n_params(DualTaskNet("unet", skip_attention="csma", cls_head="none"))
    c5 = n_params(DualTaskNet("unet", skip_attention="csma", cls_head="none", se_size=5))
    assert c5 - c3 == 6 * 16 * (16 + 32 + 64 + 128)


def test_decoder_without_skip_in_last_block():
    dec = UNetDecoder((64, 64, 128, 256, 512), (128, 64, 32, 16, 8))
    assert dec.blocks[0][0][0].in_channels == 512 + 256 and dec.blocks[4][0][0].in_channels == 16


def test_invalid_combinations():
    with pytest.raises(ValueError, match="mhsa"):
        DualTaskNet(skip_attention="mhsa")
    with pytest.raises(ValueError, match="needs a segmentation or a classification head"):
        DualTaskNet(seg_head=False, cls_head="none")


def test_torchvision_state_dict_loads_into_the_monai_encoder():
    enc = ResNet34Encoder()
    tv = {k: torch.randn_like(v) if v.is_floating_point() else v for k, v in enc.state_dict().items()
          if not k.endswith("downsample.0.bias")}  # torchvision's layout: no downsample biases, plus fc
    tv["fc.weight"], tv["fc.bias"] = torch.zeros(1000, 512), torch.zeros(1000)
    load_torchvision_encoder(enc, tv)
    assert torch.equal(enc.conv1.weight, tv["conv1.weight"])
    assert torch.count_nonzero(enc.layer2[0].downsample[0].bias) == 0
    with pytest.raises(ValueError, match="not a torchvision resnet34"):
        load_torchvision_encoder(ResNet34Encoder(), {"conv1.weight": torch.zeros(1)})
