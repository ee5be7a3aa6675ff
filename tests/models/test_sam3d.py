"""3D SAM (SAM-Med3D vit_b_ori): parameter counts from the architecture, shapes, rel-pos, checkpoint mapping."""

from __future__ import annotations

import argparse

import numpy as np
import pytest
import torch

from medrun.errors import DataError, UsageError
from medrun.models.sam import count_params
from medrun.models.sam3d import (
    Attention3d,
    Sam3D,
    Sam3dConfig,
    build_sam3d_vit_b_ori,
    load_sammed3d_checkpoint,
    window_partition3d,
    window_unpartition3d,
)

SMALL = Sam3dConfig(img_size=32, patch_size=8, embed_dim=96, depth=2, num_heads=4, window_size=2,
                    global_attn_indexes=(1,), prompt_dim=96, decoder_depth=1, decoder_mlp_dim=192,
                    iou_head_hidden_dim=64)


@pytest.fixture(scope="module")
def vit_b_ori_meta() -> Sam3D:
    with torch.device("meta"):
        return build_sam3d_vit_b_ori()


def test_vit_b_ori_parameter_counts(vit_b_ori_meta):
    # derived by hand from the layout (card, "Method"), not from the code under test
    block = (768 * 2304 + 2304) + (768 * 768 + 768) + (768 * 3072 + 3072) + (3072 * 768 + 768) + 2 * 2 * 768
    encoder = (
        (768 * 16**3 + 768)  # patch embedding
        + 8**3 * 768  # absolute position embedding
        + 12 * block
        + 8 * 3 * 27 * 64 + 4 * 3 * 15 * 64  # rel-pos: windowed (14 → 27 rows), global (8 → 15 rows)
        + 768 * 384 + 2 * 384 + 384 * 384 * 27 + 2 * 384  # neck
    )
    prompt = 3 * 384 + 384 + (4 * 8 + 4) + 8 + (16 * 4 * 8 + 16) + 32 + (16 * 384 + 384)
    attn_full, attn_half = 4 * (384 * 384 + 384), 3 * (384 * 192 + 192) + 192 * 384 + 384
    two_way = 2 * (attn_full + 2 * attn_half + (384 * 2048 + 2048 + 2048 * 384 + 384) + 4 * 768) + attn_half + 768
    decoder = (
        two_way + 5 * 384
        + (384 * 96 * 8 + 96) + 192 + (96 * 48 * 8 + 48)  # upscaling
        + 4 * (2 * (384 * 384 + 384) + 384 * 48 + 48)  # hypernetworks
        + (384 * 256 + 256) + (256 * 256 + 256) + (256 * 4 + 4)  # IoU head
    )
    assert (encoder, prompt, decoder) == (92_924_928, 8_668, 7_575_636)
    assert count_params(vit_b_ori_meta.image_encoder) == encoder
    assert count_params(vit_b_ori_meta.prompt_encoder) == prompt
    assert count_params(vit_b_ori_meta.mask_decoder) == decoder
    assert count_params(vit_b_ori_meta) == 100_509_232


def test_vit_b_ori_shapes_at_128(vit_b_ori_meta):
    sd = vit_b_ori_meta.state_dict()
    assert sd["image_encoder.pos_embed"].shape == (1, 8, 8, 8, 768)
    assert sd["image_encoder.blocks.0.attn.rel_pos_d"].shape == (27, 64)
    assert sd["image_encoder.blocks.2.attn.rel_pos_w"].shape == (15, 64)
    assert sd["prompt_encoder.pe_layer.positional_encoding_gaussian_matrix"].shape == (3, 128)
    assert "prompt_encoder.point_embeddings.2.weight" not in sd
    x = torch.empty(1, 1, 128, 128, 128, device="meta")
    assert vit_b_ori_meta.image_encoder(x).shape == (1, 384, 8, 8, 8)
    points = (torch.empty(1, 2, 3, device="meta"), torch.ones(1, 2, dtype=torch.long, device="meta"))
    prev = torch.empty(1, 1, 32, 32, 32, device="meta")
    masks, iou = vit_b_ori_meta(x, points=points, masks=prev, multimask_output=True)
    assert masks.shape == (1, 3, 32, 32, 32) and iou.shape == (1, 3)


def test_small_forward_backward_prompted_and_prompt_free():
    torch.manual_seed(0)
    model = Sam3D(SMALL)
    x = torch.randn(2, 1, 32, 32, 32)
    masks, iou = model(x)  # prompt-free
    assert masks.shape == (2, 1, 16, 16, 16) and iou.shape == (2, 1)
    points = (torch.rand(2, 3, 3) * 32, torch.tensor([[1, 0, 1], [1, 1, 0]]))
    masks, iou = model(x, points=points, masks=torch.randn(2, 1, 16, 16, 16), multimask_output=True)
    assert masks.shape == (2, 3, 16, 16, 16)
    masks.mean().backward()
    assert model.image_encoder.pos_embed.grad is not None


def test_window_partition_round_trip_with_padding():
    x = torch.randn(2, 5, 4, 3, 6)
    windows, padded = window_partition3d(x, 2)
    assert windows.shape == (2 * 3 * 2 * 2, 2, 2, 2, 6) and padded == (6, 4, 4)
    assert torch.equal(window_unpartition3d(windows, 2, padded, (5, 4, 3)), x)


def test_decomposed_3d_rel_pos_matches_brute_force():
    torch.manual_seed(0)
    attn = Attention3d(dim=8, num_heads=2, grid=3)
    for table in (attn.rel_pos_d, attn.rel_pos_h, attn.rel_pos_w):
        torch.nn.init.normal_(table)
    x = torch.randn(1, 3, 3, 3, 8)
    q, k, v = attn.qkv(x).reshape(1, 27, 3, 2, 4).permute(2, 0, 3, 1, 4).reshape(3, 2, 27, 4)
    coords = torch.stack(torch.meshgrid(*[torch.arange(3)] * 3, indexing="ij"), -1).reshape(27, 3)
    off = coords[:, None, :] - coords[None, :, :] + 2  # (27, 27, 3) offsets into the 5-row tables
    bias = (
        torch.einsum("hqc,qkc->hqk", q, attn.rel_pos_d[off[..., 0]])
        + torch.einsum("hqc,qkc->hqk", q, attn.rel_pos_h[off[..., 1]])
        + torch.einsum("hqc,qkc->hqk", q, attn.rel_pos_w[off[..., 2]])
    )
    weights = (q @ k.transpose(-1, -2) * 4**-0.5 + bias).softmax(-1)
    expect = attn.proj((weights @ v).permute(1, 0, 2).reshape(1, 3, 3, 3, 8))
    assert torch.allclose(attn(x), expect, atol=1e-5)


def test_sammed3d_checkpoint_round_trip_and_resize(tmp_path):
    source = Sam3D(SMALL)
    sd = {k: torch.randn(v.shape) for k, v in source.state_dict().items()}
    sd["extra.weight"] = torch.zeros(1)
    path = tmp_path / "sam_med3d.pth"
    # as SAM-Med3D's trainer saves it: the weights beside its argparse args and numpy metrics
    extras = {"epoch": 3, "args": argparse.Namespace(lr=8e-5, task_name="x"), "best_dice": np.float64(0.8),
              "losses": [np.float32(0.1)], "arr": np.zeros(3)}
    torch.save({"model_state_dict": sd, **extras}, path)
    bigger = Sam3D(Sam3dConfig(**{**SMALL.__dict__, "img_size": 64}))  # 8³ tokens instead of 4³
    report = load_sammed3d_checkpoint(path, bigger)
    assert report.missing == [] and report.unexpected == ["extra.weight"]
    assert sorted(report.resized) == sorted(
        ["image_encoder.pos_embed"] + [f"image_encoder.blocks.1.attn.rel_pos_{a}" for a in "dhw"]
    )
    assert bigger.image_encoder.pos_embed.shape == (1, 8, 8, 8, 96)
    assert torch.equal(bigger.mask_decoder.iou_token.weight, sd["mask_decoder.iou_token.weight"])

    class Wrapper(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.sam = Sam3D(SMALL)
            self.class_tokens = torch.nn.Embedding(5, 96)

    report = load_sammed3d_checkpoint(path, Wrapper(), prefix="sam.")
    assert report.missing == ["class_tokens.weight"]


def test_sammed3d_bad_checkpoints(tmp_path):
    corrupt = tmp_path / "sam_med3d_turbo.pth"
    corrupt.write_bytes(b"\x80\x04garbage")
    with pytest.raises(DataError):
        load_sammed3d_checkpoint(corrupt, Sam3D(SMALL))
    sam2d = tmp_path / "sam_vit_b.pth"
    torch.save({"image_encoder.patch_embed.proj.weight": torch.zeros(96, 3, 8, 8)}, sam2d)
    with pytest.raises(UsageError, match="patch embedding"):
        load_sammed3d_checkpoint(sam2d, Sam3D(SMALL))


def test_class_tokens_and_image_token_hook():
    cfg = Sam3dConfig(**{**SMALL.__dict__, "num_classes": 4})
    model = Sam3D(cfg)
    x = torch.randn(2, 1, 32, 32, 32)
    masks, iou, logits = model(x, return_class_logits=True)  # prompt-free semantic output
    assert masks.shape == (2, 1, 16, 16, 16) and logits.shape == (2, 5, 16, 16, 16)
    dim = 96
    assert count_params(model.mask_decoder) - count_params(Sam3D(SMALL).mask_decoder) == (
        5 * dim + 2 * (dim * dim + dim) + dim * (dim // 8) + dim // 8
    )
    calls = []

    class Probe(torch.nn.Module):
        def forward(self, tokens):
            calls.append(tokens.shape)
            return tokens

    model.mask_decoder.image_token_block = Probe()
    points = (torch.rand(2, 1, 3) * 32, torch.ones(2, 1, dtype=torch.long))
    masks, iou, logits = model(x, points=points, return_class_logits=True)
    assert calls == [(2, 4**3, dim)]
    with pytest.raises(ValueError, match="num_classes"):
        Sam3D(SMALL)(x, return_class_logits=True)


def test_sammed3d_checkpoint_into_semantic_model_reports_new_keys(tmp_path):
    path = tmp_path / "sam_med3d.pth"
    torch.save({"model_state_dict": Sam3D(SMALL).state_dict()}, path)
    model = Sam3D(Sam3dConfig(**{**SMALL.__dict__, "num_classes": 4}))
    report = load_sammed3d_checkpoint(path, model)
    assert report.unexpected == []
    assert all(k.startswith(("mask_decoder.class_tokens", "mask_decoder.class_hypernetwork")) for k in report.missing)
    assert len(report.missing) == 7  # class_tokens.weight + 3 × (weight, bias)


def test_checkpoint_with_code_is_refused(tmp_path):
    path = tmp_path / "evil.pth"
    torch.save({"model_state_dict": Sam3D(SMALL).state_dict(), "hook": print}, path)
    with pytest.raises(DataError, match="cannot read"):
        load_sammed3d_checkpoint(path, Sam3D(SMALL))
