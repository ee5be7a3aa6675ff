"""Memorizing-transformer block (card unit tests: FIFO memory, gate ≈ 0 equals the local path, the no-memory
ablation, prompted and prompt-free passes) and TotalCT-SAM's parameter counts at full size."""

from __future__ import annotations

import math

import pytest
import torch

from medrun.models.memorizing import KNNMemory, MemorizingBlock, TotalCTSAM
from medrun.models.sam import count_params
from medrun.models.sam3d import Sam3dConfig, build_sam3d_vit_b_ori


@pytest.fixture(autouse=True)
def _one_thread():
    """On the shared 2-core machine one intra-op thread is several times faster than two contending ones."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


SMALL = Sam3dConfig(img_size=32, patch_size=8, embed_dim=96, depth=2, num_heads=4, window_size=4,
                    global_attn_indexes=(1,), prompt_dim=96, decoder_depth=1, decoder_mlp_dim=192,
                    iou_head_hidden_dim=64, num_classes=4)


def test_block_parameter_count_matches_card():
    # q/k/v 384→192, out 192→384, LayerNorm(384), 8 gates: the card's ≈0.297 M (14.18 − 13.88 M in Table 3)
    expect = 3 * (384 * 192 + 192) + (192 * 384 + 384) + 2 * 384 + 8
    assert expect == 296_648
    assert count_params(MemorizingBlock(384, 8, 192)) == expect
    assert round((14.18 - 13.88) * 1e6, -4) == round(expect, -4)


def test_full_size_totalct_sam_parameter_counts():
    with torch.device("meta"):
        base = build_sam3d_vit_b_ori()
        full = TotalCTSAM(Sam3dConfig(num_classes=104))
        ablation = TotalCTSAM(Sam3dConfig(num_classes=104), memory=False)
    assert count_params(base) == 100_509_232  # SAM-Med3D vit_b_ori
    change1 = 105 * 384 + 2 * (384 * 384 + 384) + (384 * 48 + 48)  # class tokens + shared hypernetwork
    assert count_params(ablation) == 100_509_232 + change1 == 100_863_712
    assert count_params(full) - count_params(ablation) == 296_648
    mem = full.memory_block.memory
    assert mem.keys.shape == (16_384, 8, 24) and full.memory_block.topk == 32
    assert ablation.memory_block is None


def test_memory_fills_then_evicts_in_fifo_order():
    mem = KNNMemory(size=5, heads=2, head_dim=3)
    entry = lambda i: torch.full((1, 2, 3), float(i))  # noqa: E731
    assert len(mem) == 0
    for i in range(3):
        mem.add(entry(i), -entry(i))
    assert len(mem) == 3 and mem.ordered()[0][:, 0, 0].tolist() == [0, 1, 2]
    mem.add(torch.cat([entry(3), entry(4), entry(5), entry(6)]), -torch.cat([entry(i) for i in (3, 4, 5, 6)]))
    keys, values = mem.ordered()
    assert len(mem) == 5 and int(mem.count) == 7
    assert keys[:, 0, 0].tolist() == [2, 3, 4, 5, 6]  # the two oldest (0, 1) were evicted first
    assert values[:, 1, 2].tolist() == [-2, -3, -4, -5, -6]  # values stay paired with their keys
    mem.add(torch.cat([entry(i) for i in range(10, 17)]), torch.zeros(7, 2, 3))  # more than fits: newest 5
    assert mem.ordered()[0][:, 0, 0].tolist() == [12, 13, 14, 15, 16]


def test_memory_search_is_exact_topk():
    torch.manual_seed(0)
    mem = KNNMemory(size=50, heads=2, head_dim=4)
    mem.add(torch.randn(40, 2, 4), torch.randn(40, 2, 4))
    q = torch.randn(1, 2, 7, 4)
    keys, values = mem.search(q, k=3, chunk=2)
    assert keys.shape == (1, 2, 7, 3, 4)
    for h in range(2):
        scores = q[0, h] @ mem.keys[:40, h].T
        idx = scores.topk(3).indices
        assert torch.equal(keys[0, h], mem.keys[:40, h][idx]) and torch.equal(values[0, h], mem.values[:40, h][idx])


def _local_reference(block: MemorizingBlock, x: torch.Tensor) -> torch.Tensor:
    """The local path written out: plain multi-head attention, residual, LayerNorm."""
    b, n, _ = x.shape
    split = lambda t: t.view(b, n, block.heads, block.head_dim).transpose(1, 2)  # noqa: E731
    q, k, v = split(block.q_proj(x)), split(block.k_proj(x)), split(block.v_proj(x))
    att = torch.nn.functional.scaled_dot_product_attention(q, k, v)
    return block.norm(x + block.out_proj(att.transpose(1, 2).reshape(b, n, -1)))


def test_gate_zero_equals_local_path_and_memory_is_written_only_in_training():
    torch.manual_seed(0)
    block = MemorizingBlock(dim=32, heads=4, inner_dim=16, memory_size=64, topk=4)
    x = torch.randn(2, 10, 32)
    block.train()
    first = block(x)  # empty memory: the local path; then the 20 tokens are written
    assert torch.allclose(first, _local_reference(block, x), atol=1e-5)
    assert len(block.memory) == 20
    block.eval()
    with torch.no_grad():
        block.gate.fill_(-math.inf)  # g = 0 exactly
        y = torch.randn(2, 10, 32)
        assert torch.equal(block(y), _local_reference_exact(block, y))
        block.gate.fill_(-5.0)  # default: g ≈ 0.0067, memory now contributes a little
        out = block(y)
        assert not torch.equal(out, _local_reference_exact(block, y))
        assert torch.allclose(out, _local_reference(block, y), atol=0.05)
    assert len(block.memory) == 20  # frozen at inference
    block.train()
    block.write = False
    block(x)
    assert len(block.memory) == 20


def _local_reference_exact(block, x):
    """The block itself with memory attention skipped (same kernels, so the comparison can be bitwise)."""
    saved = block.memory.count.clone()
    block.memory.count.zero_()
    try:
        return block(x)
    finally:
        block.memory.count.copy_(saved)


def test_gate_one_is_pure_memory_attention():
    torch.manual_seed(0)
    block = MemorizingBlock(dim=16, heads=2, inner_dim=8, memory_size=32, topk=3).eval()
    block.memory.add(torch.randn(20, 2, 4), torch.randn(20, 2, 4))
    x = torch.randn(1, 6, 16)
    with torch.no_grad():
        block.gate.fill_(math.inf)  # g = 1
        q = block.q_proj(x).view(1, 6, 2, 4).transpose(1, 2)
        keys, values = block.memory.keys[:20], block.memory.values[:20]
        heads = []
        for h in range(2):
            scores = q[0, h] @ keys[:, h].T  # (6, 20)
            top = scores.topk(3).indices
            w = torch.softmax(torch.gather(scores, 1, top) / 2.0, -1)  # √4 = 2
            heads.append((w[..., None] * values[:, h][top]).sum(1))
        expect = block.norm(x + block.out_proj(torch.stack(heads, 1).reshape(1, 6, 8)))
        assert torch.allclose(block(x), expect, atol=1e-5)


def test_prompt_free_and_prompted_passes_and_ablation():
    torch.manual_seed(0)
    x = torch.randn(2, 1, 32, 32, 32)
    for memory in (True, False):
        net = TotalCTSAM(SMALL, memory=memory, memory_size=100, topk=4)
        net.train()
        logits = net.semantic(x)
        assert logits.shape == (2, 5, 32, 32, 32)
        coords = torch.tensor([[[10.0, 12.0, 14.0], [3.0, 4.0, 5.0]], [[1.0, 2.0, 3.0], [0.0, 0.0, 0.0]]])
        masks = net.prompted(x, coords, torch.tensor([[1, 0], [1, -1]]))
        assert masks.shape == (2, 1, 32, 32, 32)
        (logits.mean() + masks.mean()).backward()
        assert net.mask_decoder.class_tokens.weight.grad is not None
        if memory:
            assert len(net.memory_block.memory) == 100  # 2 × 64 tokens per forward, FIFO-capped at 100
            assert net.memory_block.gate.grad is not None
    assert count_params(TotalCTSAM(SMALL)) - count_params(TotalCTSAM(SMALL, memory=False)) == (
        3 * (96 * 48 + 48) + 48 * 96 + 96 + 2 * 96 + 8)
    with pytest.raises(ValueError, match="num_classes"):
        TotalCTSAM(Sam3dConfig(**{**SMALL.__dict__, "num_classes": 0}))


def test_memory_is_saved_with_the_weights():
    net = TotalCTSAM(SMALL, memory_size=50)
    net.train()
    net.semantic(torch.randn(1, 1, 32, 32, 32))
    sd = net.state_dict()
    assert int(sd["mask_decoder.image_token_block.memory.count"]) == 64
    fresh = TotalCTSAM(SMALL, memory_size=50)
    fresh.load_state_dict(sd)
    assert (
        torch.equal(fresh.memory_block.memory.keys, net.memory_block.memory.keys)
        and len(fresh.memory_block.memory) == 50
    )
