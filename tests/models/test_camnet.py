"""The svd-gradcam classifiers: DenseNet-169 at full size (card: ~12.5 M with a 1-logit head), the tiny CNN, and
loading torchvision DenseNet weights."""

import pytest
import torch

from medrun.models.camnet import densenet169, load_torchvision_densenet, tiny_cnn, torchvision_to_monai


def n_params(m):
    return sum(p.numel() for p in m.parameters())


def test_densenet169_parameter_count_and_target_map():
    net = densenet169().eval()
    # torchvision densenet169: 14,149,480 with the 1000-class head; features 12,484,480 + Linear(1664, 1)
    assert n_params(net) == 12_486_145
    assert n_params(net.features) == 12_484_480
    assert n_params(densenet169("mlp")) == 12_484_480 + 1664 * 256 + 256 + 257
    with torch.no_grad():
        m = net.forward_features(torch.rand(1, 3, 224, 224) * 255)
        assert m.shape == (1, 1664, 7, 7) and m.min() >= 0  # the card's M ∈ R^{1664×7×7}
        assert net.forward_head(m).shape == (1, 1)


def test_tiny_cnn_shapes():
    net = tiny_cnn(32).eval()
    assert net.forward_features(torch.rand(2, 3, 64, 64)).shape == (2, 32, 16, 16)
    assert net(torch.rand(2, 3, 64, 64)).shape == (2, 1)


def _as_torchvision(state):
    """Undo MONAI's renaming: denselayerN.layers.norm1 → denselayerN.norm1 (the torchvision key layout)."""
    return {k.replace(".layers.", "."): v for k, v in state.items()}


def test_torchvision_weights_load_and_mismatch_is_reported():
    src, dst = densenet169(), densenet169()
    tv = _as_torchvision({f"features.{k}": v for k, v in src.features.state_dict().items()})
    assert "features.denseblock1.denselayer1.norm1.weight" in tv
    assert torchvision_to_monai(tv).keys() == {f"features.{k}" for k in src.features.state_dict()}
    tv["classifier.weight"], tv["classifier.bias"] = torch.zeros(1000, 1664), torch.zeros(1000)
    assert load_torchvision_densenet(dst, tv) == ([], [])
    assert torch.equal(dst.features.conv0.weight, src.features.conv0.weight)
    bad = dict(tv)
    bad["features.conv0.weight"] = torch.zeros(64, 1, 7, 7)
    del bad["features.norm5.weight"]
    missing, wrong = load_torchvision_densenet(densenet169(), bad)
    assert missing == ["features.norm5.weight"] and wrong[0].startswith("features.conv0.weight: (64, 1, 7, 7)")


def test_bad_head_name():
    with pytest.raises(ValueError, match="head must be"):
        tiny_cnn(8, head="conv")


def test_old_torchvision_key_layout():
    assert list(torchvision_to_monai({"features.denseblock2.denselayer3.norm.2.running_var": 0})) == [
        "features.denseblock2.denselayer3.layers.norm2.running_var"]
