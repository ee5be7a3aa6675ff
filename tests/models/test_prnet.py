"""The ph-mci two-branch network at the card's sizes."""

import pytest
import torch

from medrun.models.prnet import PRNet

NETWORKS = {"CB": 18, "CO": 32, "DMN": 34, "FP": 21, "OP": 22, "SM": 33}


def n_params(m):
    return sum(p.numel() for p in m.parameters())


def test_parameter_count_from_the_cards_layer_list():
    net = PRNet(34)  # DMN
    convs = [(1, 16), (16, 32), (32, 64), (64, 128), (128, 256)]
    assert n_params(net.conv) == sum(i * o * 9 + o for i, o in convs) == 392_320  # card: "about 0.39 M"
    assert n_params(net.linear) == 34 * 34 * 256 + 256 == 296_192  # card: 1156·256 ≈ 0.30 M
    assert n_params(net.head) == (512 * 128 + 128) + (128 * 64 + 64) + (64 * 32 + 32) + (32 * 2 + 2) == 76_066
    assert n_params(net) == 764_578
    code = PRNet(34, head="code")
    assert n_params(code.head) == 512 * 128 + 128 + 128 * 2 + 2 and n_params(code) == 754_434


@pytest.mark.parametrize("net", sorted(NETWORKS))
def test_shapes_for_every_network(net):
    n = NETWORKS[net]
    m = PRNet(n).eval()
    assert m(torch.randn(3, 1, n, n)).shape == (3, 2)
    assert m(torch.randn(2, n, n)).shape == (2, 2)  # channel added when missing
    assert m.conv(torch.randn(1, 1, n, n)).shape == (1, 256)


def test_paper_head_has_relu_and_dropout_code_head_has_no_relu():
    paper, code = PRNet(18), PRNet(18, head="code")
    assert sum(isinstance(x, torch.nn.ReLU) for x in paper.head) == 3
    assert sum(isinstance(x, torch.nn.Dropout) for x in paper.head) == 3
    assert not any(isinstance(x, torch.nn.ReLU) for x in code.head)
    assert not any(isinstance(x, torch.nn.ReLU) for x in code.linear)  # 1-D branch: no activation (code)
    with pytest.raises(ValueError):
        PRNet(18, head="other")
