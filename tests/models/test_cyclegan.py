"""CycleGAN networks at the card's (CycleGAN's) size, the history pool, and the attack's target classifiers."""

import torch

from medrun.models import attack_targets
from medrun.models.cyclegan import CycleGAN, ImagePool, PatchDiscriminator, ResnetGenerator, init_weights


def count(m):
    return sum(p.numel() for p in m.parameters())


def test_full_size_parameter_counts_match_the_reference():
    """junyanz/pytorch-CycleGAN-and-pix2pix: resnet_9blocks 11.378 M, resnet_6blocks 7.838 M, basic D 2.765 M."""
    assert count(ResnetGenerator(3, 3, 64, 9)) == 11_378_179
    assert count(ResnetGenerator(3, 3, 64, 6)) == 7_837_699
    assert count(PatchDiscriminator(3, 64)) == 2_764_737
    gan = CycleGAN(64, 64, 9)
    assert count(gan) == 2 * 11_378_179 + 2 * 2_764_737


def test_shapes_and_range():
    g, d = init_weights(ResnetGenerator(3, 3, 8, 2)), PatchDiscriminator(3, 8)
    x = torch.rand(2, 3, 64, 64) * 2 - 1
    y = g(x)
    assert y.shape == x.shape and y.abs().max() <= 1
    assert d(x).shape == (2, 1, 6, 6)  # 70×70 PatchGAN on 64²: 6×6 patches


def test_image_pool_fills_then_mixes():
    pool = ImagePool(3, torch.Generator().manual_seed(0))
    first = torch.arange(3.0).view(3, 1, 1, 1)
    assert torch.equal(pool.query(first), first)
    out = pool.query(torch.full((20, 1, 1, 1), 9.0))
    assert ((out == 9) | (out < 3)).all() and (out < 3).any() and (out == 9).any()
    assert ImagePool(0).query(first) is first


def test_target_classifiers_have_torchvision_sized_backbones():
    assert count(attack_targets.build("resnet50").features) == 23_508_032
    assert count(attack_targets.build("densenet121").features) == 6_953_856
    assert count(attack_targets.build("resnet18").features) == 11_176_512
    net = attack_targets.build("resnet50")
    head = [m for m in net.head if isinstance(m, torch.nn.Linear)]
    assert [(h.in_features, h.out_features) for h in head] == [(2048, 512), (512, 2)]
    net.eval()
    with torch.no_grad():
        assert net(torch.rand(1, 3, 224, 224)).shape == (1, 2)
        assert attack_targets.build("vit_s", 224).eval()(torch.rand(1, 3, 224, 224)).shape == (1, 2)
