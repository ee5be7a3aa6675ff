"""Hierarchical fusion (card sm-safe.md, --amf-levels 2): a second AMF at half resolution added at U-Net level 2."""

import pytest
import torch

from medrun.models.fusion import SMSAFE
from medrun.models.fusion_hierarchical import SMSAFEHierarchical


def n_params(m):
    return sum(p.numel() for p in m.parameters())


def test_extra_parameters_are_the_second_level():
    extra = n_params(SMSAFEHierarchical(4, 4)) - n_params(SMSAFE(4, 4))
    stage = 32 * 64 * 27 + 64 + 2 * 64  # per modality: stride-2 Conv3d 32→64 + InstanceNorm
    assert extra == 4 * stage + (64 + 1) + (64 * 32 + 32)  # + AMF on 64 channels + 1×1×1 projection to 32


def test_level_two_reaches_the_output():
    torch.manual_seed(0)
    net = SMSAFEHierarchical(2, 3, fusion_channels=4, unet_channels=(8, 16, 32), num_res_units=1, ase_layers=1).eval()
    x = torch.randn(1, 2, 16, 16, 16)
    with torch.no_grad():
        out = net(x)
        assert out.shape == (1, 3, 16, 16, 16)
        torch.nn.init.zeros_(net.level2.weight)
        torch.nn.init.zeros_(net.level2.bias)
        assert not torch.allclose(out, net(x))
    assert net.fusion_weights(x).shape == (1, 2, 16, 16, 16)


def test_needs_a_stride_two_first_level():
    with pytest.raises(ValueError, match="stride-2"):
        SMSAFEHierarchical(2, 3, unet_channels=(8, 16), unet_strides=(1,))
