"""The ASD attention transformer: the card's size, the batched local encoder, the interaction module, OCRead."""

import torch

from medrun.models.asd_transformer import (
    CC200_BLOCKS,
    AsdTransformer,
    EncoderLayer,
    OCRead,
    pairing,
    paper_model,
)

FIXTURE_BLOCKS = (8, 6, 4, 4, 4, 2, 4, 8)


def n_params(m):
    return sum(p.numel() for p in m.parameters())


def test_parameter_count_matches_card():
    """Card: ~1.2 M parameters, two encoder layers of ≈ 0.57 M each plus the head (d_model 200, 8 heads, FFN 1024)."""
    net = paper_model()
    assert sum(CC200_BLOCKS) == 200 and len(CC200_BLOCKS) == 8
    assert n_params(net) == 1_172_986
    layer = n_params(net.local)
    assert layer == n_params(net.glob) == 572_424  # = nn.TransformerEncoderLayer(200, 8, 1024)
    assert layer == n_params(torch.nn.TransformerEncoderLayer(200, 8, 1024, batch_first=True))
    assert net.prompts.numel() == 8 * 200
    assert n_params(net.readout) == 1608 + 16_640 + 8_224 + 66  # Linear(200→8), 64→256→32→2
    assert "readout.centres" not in dict(net.named_parameters())  # frozen: a buffer


def test_shapes_at_full_size():
    net = paper_model().eval()
    x = torch.randn(2, 200, 200)
    enc = net.encode(x)
    assert enc["z"].shape == (2, 200, 200) and enc["score"].shape == (2, 8)
    assert enc["global_attention"].shape == (2, 208, 208)
    assert net(x).shape == (2, 2)


def test_encoder_layer_is_pytorch_post_norm_layer():
    torch.manual_seed(0)
    ours = EncoderLayer(40, 8, 64, 0.0).eval()
    ref = torch.nn.TransformerEncoderLayer(40, 8, 64, 0.0, batch_first=True).eval()
    ref.load_state_dict({k: v for k, v in ours.state_dict().items() if not k.startswith("dropout")})
    x = torch.randn(3, 9, 40)
    assert torch.allclose(ours(x)[0], ref(x), atol=1e-5)


def test_batched_local_encoder_equals_per_community_loop():
    torch.manual_seed(0)
    net = AsdTransformer(FIXTURE_BLOCKS, 8, 64, 0.1, 8, "none").eval()
    x = torch.randn(4, 40, 40)
    enc = net.encode(x)
    scores, hs = [], []
    for k, blk in enumerate(x.split(net.blocks, 1)):
        out, w = net.local(torch.cat([net.prompts[k].expand(4, 1, 40), blk], 1))
        scores.append(w[:, :, 0].mean(1))
        hs.append(out[:, 1:])
    assert torch.allclose(torch.stack(scores, 1), enc["score"], atol=1e-6)
    # with interaction none the global layer sees [p'; H] in community order: recompute z from the loop's H
    prompts = torch.stack([net.local(torch.cat([net.prompts[k].expand(4, 1, 40), b], 1))[0][:, 0]
                           for k, b in enumerate(x.split(net.blocks, 1))], 1)
    z = net.glob(torch.cat([prompts, torch.cat(hs, 1)], 1))[0][:, 8:]
    assert torch.allclose(z, enc["z"], atol=1e-5)


def test_pairing_high_attention_block_gets_low_attention_prompt():
    order, rank, partner = pairing(torch.tensor([[0.1, 0.5, 0.3], [0.3, 0.3, 0.9]]))
    assert order.tolist() == [[1, 2, 0], [2, 0, 1]]
    assert partner.tolist() == [[1, 0, 2], [0, 2, 1]]  # most attended ↔ least attended; ties keep index order
    assert rank.tolist() == [[2, 0, 1], [1, 2, 0]]


def test_literal_concat_changes_nothing_and_add_does():
    """The card's point: reordering blocks and prompts is invisible to a position-free transformer + OCRead."""
    torch.manual_seed(1)
    none = AsdTransformer(FIXTURE_BLOCKS, 8, 64, 0.1, 8, "none").eval()
    concat = AsdTransformer(FIXTURE_BLOCKS, 8, 64, 0.1, 8, "concat").eval()
    add = AsdTransformer(FIXTURE_BLOCKS, 8, 64, 0.1, 8, "add").eval()
    concat.load_state_dict(none.state_dict())
    add.load_state_dict(none.state_dict())
    x = torch.randn(5, 40, 40)
    enc = concat.encode(x)
    assert not (enc["order"] == torch.arange(8)).all()  # it did reorder
    assert torch.allclose(none(x), concat(x), atol=1e-5)
    assert (none(x) - add(x)).abs().max() > 1e-3


def test_ocread_centres_orthonormal_and_permutation_invariant():
    torch.manual_seed(0)
    ro = OCRead(40, 8).eval()
    e = ro.centres
    assert torch.allclose(e @ e.T, torch.eye(8), atol=1e-5)
    z = torch.randn(3, 40, 40)
    perm = torch.randperm(40)
    assert torch.allclose(ro(z), ro(z[:, perm]), atol=1e-5)
    p = ro.assignment(z)
    assert torch.allclose(p.sum(-1), torch.ones(3, 40))
