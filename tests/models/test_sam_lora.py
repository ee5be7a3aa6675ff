"""lorasam LoRA on full-size SAM ViT-B at 256²: the card's exact trainable-parameter counts, frozen weights."""

from __future__ import annotations

import pytest
import torch

from medrun.models.sam import Sam, SamConfig, build_sam_vit_b, count_params, load_official_checkpoint
from medrun.models.sam_lora import (
    LORASAM_TRAINABLE,
    LoraSam,
    load_trainable_state_dict,
    lorasam_param_breakdown,
    mark_lorasam_trainable,
    set_lora_merged,
    trainable_state_dict,
)

TINY = SamConfig(img_size=64, embed_dim=96, depth=4, num_heads=3, window_size=4, global_attn_indexes=(1, 3),
                 prompt_dim=64, decoder_mlp_dim=128, iou_head_hidden_dim=64)


@pytest.mark.parametrize(
    ("r", "expected"), [(2, 672_000), (4, 974_080), (8, 1_578_240), (16, 2_786_560)]
)
def test_trainable_counts_match_the_card(r, expected):
    model = LoraSam(build_sam_vit_b(256), r=r)
    assert LORASAM_TRAINABLE[r] == expected
    assert count_params(model, trainable_only=True) == expected
    parts = lorasam_param_breakdown(model)
    assert parts == {
        "lora_blocks": 12 * r * ((768 + 2304) + (768 + 768) + 2 * (768 + 3072)),  # 589,824 at r=4
        "lora_neck": r * (768 + 256) + (256 * 9 * r + r * 256),  # 14,336 at r=4
        "pos_embed": 16 * 16 * 768,
        "norms": 24 * 2 * 768 + 9 * 2 * 256,  # 36,864 encoder + 4,608 decoder transformer
        "tal": 512 * 256 + 256 + 2 * 256,
        "total": expected,
    }


def test_lora_targets_and_frozen_parts():
    model = LoraSam(build_sam_vit_b(256), r=4)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert "sam.image_encoder.blocks.0.attn.qkv.lora_A.default.weight" in trainable
    assert "sam.image_encoder.neck.2.lora_B.default.weight" in trainable
    assert not any("patch_embed" in n for n in trainable)
    assert not any("rel_pos" in n for n in trainable)
    assert not any(n.startswith(("sam.image_encoder.neck.1", "sam.image_encoder.neck.3")) for n in trainable)
    assert not any(n.startswith("sam.prompt_encoder") for n in trainable)
    assert "sam.mask_decoder.transformer.norm_final_attn.weight" in trainable
    # the conv LoRA of the 3×3 neck conv: Conv(256, r, 3) then Conv(r, 256, 1)
    neck2 = model.sam.image_encoder.neck[2]
    assert neck2.lora_A["default"].weight.shape == (4, 256, 3, 3)
    assert neck2.lora_B["default"].weight.shape == (256, 4, 1, 1)


def test_table5_ablation_counts():
    sam = build_sam_vit_b(256)
    mark_lorasam_trainable(sam, None, lora=False, norms=False)
    assert count_params(sam, trainable_only=True) == 196_608  # pos-embed only
    mark_lorasam_trainable(sam, None, lora=False)
    assert count_params(sam, trainable_only=True) == 238_080  # + LN
    no_tal = LoraSam(sam, r=4, use_tal=False)
    assert count_params(no_tal, trainable_only=True) == 842_240  # LN + LoRA, no TAL


def test_frozen_weights_do_not_change_after_an_optimizer_step():
    torch.manual_seed(0)
    # eval(): the TAL's BatchNorm then takes a batch of one; gradients flow all the same
    model = LoraSam(build_sam_vit_b(256), r=4).eval()
    frozen = {n: p.detach().clone() for n, p in model.named_parameters() if not p.requires_grad}
    trainable = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-3, weight_decay=1e-2)
    logits = model(torch.randn(1, 3, 256, 256), torch.randn(1, 512))
    assert logits.shape == (1, 1, 256, 256)
    loss = torch.nn.functional.binary_cross_entropy_with_logits(logits, (torch.rand_like(logits) > 0.5).float())
    loss.backward()
    opt.step()
    params = dict(model.named_parameters())
    assert all(torch.equal(params[n], v) for n, v in frozen.items())
    changed = [n for n, v in trainable.items() if not torch.equal(params[n], v)]
    assert any("lora_B" in n for n in changed) and any("tal" in n for n in changed)
    assert "sam.image_encoder.pos_embed" in changed


def test_merged_lora_gives_the_same_output():
    torch.manual_seed(0)
    model = LoraSam(Sam(TINY), r=4).eval()
    for n, p in model.named_parameters():
        if "lora_B" in n:  # B starts at zero; make the branch matter
            torch.nn.init.normal_(p, std=0.05)
    x, t = torch.randn(2, 3, 64, 64), torch.randn(2, 512)
    with torch.no_grad():
        plain = model(x, t)
        set_lora_merged(model, True)
        merged = model(x, t)
        set_lora_merged(model, False)
        again = model(x, t)
    assert torch.allclose(plain, merged, atol=1e-4)
    assert torch.allclose(plain, again, atol=1e-5)


def test_checkpoint_loads_into_a_lora_model(tmp_path):
    base = Sam(TINY)
    path = tmp_path / "tiny.pth"
    torch.save(base.state_dict(), path)
    model = LoraSam(Sam(TINY), r=2)
    report = load_official_checkpoint(path, model.sam)
    assert report.missing == [] and report.unexpected == []
    assert torch.equal(model.sam.image_encoder.neck[0].base_layer.weight, base.image_encoder.neck[0].weight)


def test_trainable_state_dict_round_trip():
    torch.manual_seed(0)
    model = LoraSam(Sam(TINY), r=4)
    for p in model.parameters():
        if p.requires_grad:
            torch.nn.init.normal_(p)
    model.tal.bn.running_mean.fill_(0.5)
    saved = trainable_state_dict(model)
    assert "tal.bn.running_mean" in saved and "sam.image_encoder.pos_embed" in saved
    assert not any("patch_embed" in k or "rel_pos" in k for k in saved)
    assert sum(v.numel() for k, v in saved.items() if "running" not in k and "num_batches" not in k) == count_params(
        model, trainable_only=True
    )
    torch.manual_seed(1)
    fresh = LoraSam(Sam(TINY), r=4)
    fresh.sam.load_state_dict(model.sam.state_dict())  # same frozen base
    load_trainable_state_dict(fresh, saved)
    x, t = torch.randn(2, 3, 64, 64), torch.randn(2, 512)
    with torch.no_grad():
        assert torch.equal(model.eval()(x, t), fresh.eval()(x, t))
    with pytest.raises(KeyError):
        load_trainable_state_dict(fresh, {"sam.not_a_tensor": torch.zeros(1)})
