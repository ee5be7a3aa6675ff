"""AMF and ASE of sm-safe.md: weights sum to 1 per voxel, 2D/3D shapes, the SM-SAFE model and its variants."""

import pytest
import torch

from medrun.models.fusion import (
    SMSAFE,
    AdaptiveFusion,
    AttentiveStructuralEncoder,
    ModalityStems,
    MultiModalFusion,
)


@pytest.mark.parametrize("spatial", [(12, 10), (6, 8, 10)])
@pytest.mark.parametrize("modalities", [1, 2, 4])
def test_amf_weights_sum_to_one_per_voxel(spatial, modalities):
    torch.manual_seed(0)
    fusion = MultiModalFusion(modalities, channels=8, spatial_dims=len(spatial))
    x = torch.randn(2, modalities, *spatial)
    (fused,), (weights,) = fusion(x)
    assert fused.shape == (2, 8, *spatial)
    assert weights.shape == (2, modalities, *spatial)
    assert torch.all(weights > 0)
    torch.testing.assert_close(weights.sum(dim=1), torch.ones(2, *spatial), atol=1e-5, rtol=0)


def test_amf_is_the_weighted_sum_as_written():
    torch.manual_seed(0)
    amf = AdaptiveFusion(4)
    maps = [torch.randn(1, 4, 3, 3, 3) for _ in range(3)]
    fused, weights = amf(maps)
    scores = [torch.sigmoid(torch.einsum("bcxyz,c->bxyz", m, amf.score.weight[0]) + amf.score.bias) for m in maps]
    total = sum(scores) + 1e-6
    expected = sum((s / total).unsqueeze(1) * m for s, m in zip(scores, maps, strict=True))
    torch.testing.assert_close(fused, expected)
    torch.testing.assert_close(weights[:, 0], scores[0] / total)


def test_single_modality_fusion_is_identity():
    amf = AdaptiveFusion(4)
    m = torch.randn(2, 4, 5, 5)
    fused, _ = amf([m])
    torch.testing.assert_close(fused, m, atol=1e-5, rtol=1e-5)


def test_hierarchical_fusion_second_level():
    fusion = MultiModalFusion(2, channels=8, spatial_dims=3, levels=2)
    fused, weights = fusion(torch.randn(1, 2, 8, 8, 8))
    assert [f.shape for f in fused] == [(1, 8, 8, 8, 8), (1, 16, 4, 4, 4)]
    torch.testing.assert_close(weights[1].sum(dim=1), torch.ones(1, 4, 4, 4), atol=1e-5, rtol=0)


def test_stems_refuse_wrong_modality_count():
    with pytest.raises(ValueError, match="expected 2 modalities"):
        ModalityStems(2, 8)(torch.randn(1, 3, 4, 4, 4))


@pytest.mark.parametrize(("spatial", "layers"), [((32, 32), 3), ((32, 32, 32), 1), ((32, 32, 32), 3)])
def test_ase_shapes(spatial, layers):
    ase = AttentiveStructuralEncoder(channels=8, width=16, layers=layers, spatial_dims=len(spatial))
    x = torch.randn(1, 8, *spatial)
    y = ase(x)
    assert y.shape == x.shape
    y.sum().backward()
    assert all(p.grad is not None for p in ase.parameters())


def test_ase_works_at_quarter_eighth_sixteenth():
    ase = AttentiveStructuralEncoder(channels=8, width=16, layers=3, spatial_dims=3)
    sizes = []
    h = torch.randn(1, 8, 32, 32, 32)
    for down in ase.downs:
        h = down(h)
        sizes.append(h.shape[-1])
    assert sizes == [8, 4, 2]


def test_ase_attention_mixes_distant_positions():
    torch.manual_seed(0)
    ase = AttentiveStructuralEncoder(channels=4, width=8, layers=1, spatial_dims=2).eval()
    x = torch.randn(1, 4, 32, 32)
    changed = x.clone()
    changed[..., -4:, -4:] += 5.0  # far corner
    diff = (ase(changed) - ase(x))[..., :8, :8]  # opposite corner, outside any conv receptive field
    assert diff.abs().max() > 1e-4


@pytest.mark.parametrize(
    ("flags", "unet_in"),
    [({}, 8), ({"use_ase": False}, 8), ({"use_amf": False, "use_ase": False}, 2), ({"concat_raw": True}, 10)],
)
def test_sm_safe_variants(flags, unet_in):
    model = SMSAFE(2, 3, fusion_channels=8, unet_channels=(8, 16, 32), num_res_units=1, ase_layers=1, **flags)
    x = torch.randn(1, 2, 16, 16, 16)
    assert model(x).shape == (1, 3, 16, 16, 16)
    first_conv = next(m for m in model.unet.modules() if isinstance(m, torch.nn.Conv3d))
    assert first_conv.in_channels == unet_in


def test_sm_safe_exports_fusion_weights_2d():
    model = SMSAFE(2, 2, spatial_dims=2, fusion_channels=8, unet_channels=(8, 16), num_res_units=1, ase_layers=1)
    w = model.fusion_weights(torch.randn(1, 2, 16, 16))
    assert w.shape == (1, 2, 16, 16)
