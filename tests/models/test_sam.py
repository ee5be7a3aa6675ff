"""SAM ViT-B: official parameter counts, output shapes at 1024² and 256², official-checkpoint key mapping."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from medrun.errors import DataError, UsageError
from medrun.models.sam import (
    VIT_B_PARAMS,
    VIT_B_PARAMS_TOTAL,
    Attention,
    Sam,
    SamConfig,
    build_sam_vit_b,
    convert_official_state_dict,
    count_params,
    detect_variant,
    load_official_checkpoint,
    official_key_to_ours,
    our_key_to_official,
    window_partition,
    window_unpartition,
)

TINY = SamConfig(img_size=64, embed_dim=96, depth=4, num_heads=3, window_size=4, global_attn_indexes=(1, 3),
                 prompt_dim=64, decoder_mlp_dim=128, iou_head_hidden_dim=64)


@pytest.fixture(scope="module")
def vit_b_1024_meta() -> Sam:
    """Full-size ViT-B at 1024² on the meta device: exact shapes, no memory, no compute."""
    with torch.device("meta"):
        return build_sam_vit_b(1024)


@pytest.fixture(scope="module")
def vit_b_256() -> Sam:
    torch.manual_seed(0)
    return build_sam_vit_b(256).eval()


def official_state_dict(model: Sam, seed: int = 0) -> dict[str, torch.Tensor]:
    """Synthetic checkpoint in the official key layout: every tensor of `model` under its official name."""
    g = torch.Generator().manual_seed(seed)
    return {
        our_key_to_official(k): torch.randn(v.shape, generator=g) for k, v in model.state_dict().items()
    }


def test_vit_b_parameter_counts_match_official(vit_b_1024_meta):
    counts = {name: count_params(getattr(vit_b_1024_meta, name)) for name in VIT_B_PARAMS}
    assert counts == {"image_encoder": 89_670_912, "prompt_encoder": 6_220, "mask_decoder": 4_058_340}
    assert count_params(vit_b_1024_meta) == VIT_B_PARAMS_TOTAL == 93_735_472


def test_vit_b_official_layout_at_1024(vit_b_1024_meta):
    sd = vit_b_1024_meta.state_dict()
    assert sd["image_encoder.pos_embed"].shape == (1, 64, 64, 768)
    assert sd["image_encoder.blocks.0.attn.qkv.weight"].shape == (2304, 768)
    for i in range(12):  # global blocks 2/5/8/11 see the whole 64×64 grid, the others a 14×14 window
        rows = 127 if i in (2, 5, 8, 11) else 27
        assert sd[f"image_encoder.blocks.{i}.attn.rel_pos_h"].shape == (rows, 64)
        assert sd[f"image_encoder.blocks.{i}.attn.rel_pos_w"].shape == (rows, 64)
    assert sd["image_encoder.neck.0.weight"].shape == (256, 768, 1, 1)
    assert sd["image_encoder.neck.2.weight"].shape == (256, 256, 3, 3)
    assert sd["prompt_encoder.pe_layer.positional_encoding_gaussian_matrix"].shape == (2, 128)
    assert sd["mask_decoder.transformer.layers.0.cross_attn_token_to_image.q_proj.weight"].shape == (128, 256)
    assert sd["mask_decoder.output_hypernetworks_mlps.3.layers.2.weight"].shape == (32, 256)
    assert detect_variant(sd) == "vit_b"
    assert "pixel_mean" not in sd


def test_output_shapes_at_1024(vit_b_1024_meta):
    x = torch.empty(2, 3, 1024, 1024, device="meta")
    assert vit_b_1024_meta.image_encoder(x).shape == (2, 256, 64, 64)
    points = (torch.empty(2, 3, 2, device="meta"), torch.ones(2, 3, dtype=torch.long, device="meta"))
    masks, iou = vit_b_1024_meta(x, points=points, multimask_output=True)
    assert masks.shape == (2, 3, 256, 256) and iou.shape == (2, 3)


def test_resized_model_shapes_and_forward_at_256(vit_b_256):
    sd = vit_b_256.state_dict()
    assert sd["image_encoder.pos_embed"].shape == (1, 16, 16, 768)
    assert sd["image_encoder.blocks.2.attn.rel_pos_h"].shape == (31, 64)  # global: 2·16 − 1
    assert sd["image_encoder.blocks.0.attn.rel_pos_h"].shape == (27, 64)  # windowed: 2·14 − 1
    # Same parameter count as 1024² apart from the position embedding and the global rel-pos tables.
    expected = VIT_B_PARAMS_TOTAL - (64 * 64 - 16 * 16) * 768 - 8 * (127 - 31) * 64
    assert count_params(vit_b_256) == expected

    x = torch.randn(1, 3, 256, 256)
    with torch.no_grad():
        emb = vit_b_256.image_encoder(x)  # the encoder runs once; the decoder is cheap
        assert emb.shape == (1, 256, 16, 16)
        pe, dec = vit_b_256.prompt_encoder, vit_b_256.mask_decoder
        sparse, dense = pe(batch_size=1)  # no prompt: empty sparse tokens, no_mask dense embedding
        assert sparse.shape == (1, 0, 256) and dense.shape == (1, 256, 16, 16)
        masks, iou = dec(emb, pe.get_dense_pe(), sparse, dense)
        assert masks.shape == (1, 1, 64, 64) and iou.shape == (1, 1)
        pts = (torch.tensor([[[30.0, 40.0], [100.0, 200.0]]]), torch.tensor([[1, 0]]))
        box = torch.tensor([[10.0, 20.0, 120.0, 140.0]])
        sparse, dense = pe(pts, box, torch.randn(1, 1, 64, 64))
        assert sparse.shape == (1, 4, 256) and dense.shape == (1, 256, 16, 16)
        masks, iou = dec(emb, pe.get_dense_pe(), sparse, dense, multimask_output=True)
        assert masks.shape == (1, 3, 64, 64) and iou.shape == (1, 3)
    assert torch.isfinite(masks).all()


def test_wrong_input_size_is_refused():
    model = Sam(TINY)
    with pytest.raises(ValueError, match="64x64"):
        model.image_encoder(torch.randn(1, 3, 96, 96))


def test_key_mapping_round_trip_and_resize_from_1024(vit_b_1024_meta, vit_b_256):
    official = official_state_dict(vit_b_1024_meta)
    assert "image_encoder.blocks.0.attn.qkv.weight" in official
    assert "mask_decoder.iou_prediction_head.layers.2.bias" in official
    # names: official → ours → official is the identity, and covers every tensor of the model
    ours_names = {official_key_to_ours(k) for k in official}
    assert ours_names == set(vit_b_256.state_dict())
    assert {our_key_to_official(k) for k in ours_names} == set(official)

    sd, report = convert_official_state_dict(official, vit_b_256)
    assert report.missing == [] and report.unexpected == []
    globals_ = [f"image_encoder.blocks.{i}.attn.rel_pos_{a}" for i in (2, 5, 8, 11) for a in "hw"]
    assert sorted(report.resized) == sorted(["image_encoder.pos_embed", *globals_])
    # pos_embed: adaptive average pooling 64×64 → 16×16 (4×4 means)
    pos = official["image_encoder.pos_embed"]
    assert torch.allclose(sd["image_encoder.pos_embed"][0, 0, 0], pos[0, :4, :4].mean((0, 1)), atol=1e-5)
    # rel-pos: linear interpolation 127 → 31 rows
    table = official["image_encoder.blocks.5.attn.rel_pos_w"]
    expect = F.interpolate(table.T[None], size=31, mode="linear", align_corners=False)[0].T
    assert torch.allclose(sd["image_encoder.blocks.5.attn.rel_pos_w"], expect)
    untouched = [k for k in official if k not in report.resized]
    assert all(torch.equal(sd[k], official[k]) for k in untouched)

    target = build_sam_vit_b(256)
    target.load_state_dict(sd, strict=True)
    assert torch.equal(target.mask_decoder.iou_token.weight, official["mask_decoder.iou_token.weight"])


def test_load_checkpoint_file_reports_missing_and_unexpected(tmp_path, caplog):
    official = official_state_dict(Sam(TINY), seed=1)
    del official["mask_decoder.iou_token.weight"]
    official["mask_decoder.extra_head.weight"] = torch.zeros(3)
    official["pixel_mean"] = torch.zeros(3, 1, 1)  # some exports keep it; it is a non-persistent buffer here
    path = tmp_path / "sam_tiny.pth"
    torch.save({"model": {f"module.{k}": v for k, v in official.items()}}, path)  # wrapped + DataParallel
    model = Sam(TINY)
    report = load_official_checkpoint(path, model)
    assert report.missing == ["mask_decoder.iou_token.weight"]
    assert report.unexpected == ["mask_decoder.extra_head.weight"]
    assert torch.equal(model.image_encoder.pos_embed, official["image_encoder.pos_embed"])
    assert "1 missing, 1 unexpected" in caplog.text
    with pytest.raises(UsageError, match="lacks 1 tensors"):
        load_official_checkpoint(path, Sam(TINY), require_complete=True)


def test_wrong_variant_is_a_usage_error(tmp_path, vit_b_256):
    # the first tensors of an official ViT-L file: width 1024, 24 blocks
    vit_l = {
        "image_encoder.patch_embed.proj.weight": torch.zeros(1024, 3, 16, 16),
        "image_encoder.blocks.23.norm1.weight": torch.ones(1024),
        "mask_decoder.iou_token.weight": torch.zeros(1, 256),
    }
    path = tmp_path / "sam_vit_l_0b3195.pth"
    torch.save(vit_l, path)
    with pytest.raises(UsageError, match="vit_l.*vit_b") as err:
        load_official_checkpoint(path, vit_b_256)
    assert err.value.file == str(path) and err.value.exit_code == 2


def test_shape_mismatch_is_a_usage_error():
    official = official_state_dict(Sam(TINY))
    official["mask_decoder.mask_tokens.weight"] = torch.zeros(7, 64)
    with pytest.raises(UsageError, match="mask_tokens"):
        convert_official_state_dict(official, Sam(TINY), file="x.pth")


def test_corrupt_missing_or_foreign_file(tmp_path):
    corrupt = tmp_path / "sam_vit_b_01ec64.pth"
    corrupt.write_bytes(b"PK\x03\x04 this is not a checkpoint")
    with pytest.raises(DataError) as err:
        load_official_checkpoint(corrupt, Sam(TINY))
    assert err.value.exit_code == 3 and str(corrupt) in str(err.value)
    with pytest.raises(DataError, match="not found"):
        load_official_checkpoint(tmp_path / "absent.pth", Sam(TINY))
    foreign = tmp_path / "resnet.pth"
    torch.save({"conv1.weight": torch.zeros(2, 3)}, foreign)
    with pytest.raises(UsageError, match="no SAM weights"):
        load_official_checkpoint(foreign, Sam(TINY))


def test_sammed3d_file_into_2d_sam_is_a_usage_error(tmp_path):
    path = tmp_path / "sam_med3d.pth"
    torch.save({"model_state_dict": {"image_encoder.patch_embed.proj.weight": torch.zeros(96, 1, 8, 8, 8)}}, path)
    with pytest.raises(UsageError, match="3D"):
        load_official_checkpoint(path, Sam(TINY))


def test_window_partition_round_trip_with_padding():
    x = torch.randn(2, 5, 7, 6)
    windows, padded = window_partition(x, 4)
    assert windows.shape == (2 * 2 * 2, 4, 4, 6) and padded == (8, 8)
    assert torch.equal(window_unpartition(windows, 4, padded, (5, 7)), x)


def test_decomposed_rel_pos_matches_brute_force():
    torch.manual_seed(0)
    attn = Attention(dim=8, num_heads=2, grid=4)
    torch.nn.init.normal_(attn.rel_pos_h)
    torch.nn.init.normal_(attn.rel_pos_w)
    x = torch.randn(1, 4, 4, 8)
    q, k, v = attn.qkv(x).reshape(1, 16, 3, 2, 4).permute(2, 0, 3, 1, 4).reshape(3, 2, 16, 4)
    coords = torch.stack(torch.meshgrid(torch.arange(4), torch.arange(4), indexing="ij"), -1).reshape(16, 2)
    off = coords[:, None, :] - coords[None, :, :] + 3  # offsets into the 7-row tables
    bias = torch.einsum("hqc,qkc->hqk", q, attn.rel_pos_h[off[..., 0]]) + torch.einsum(
        "hqc,qkc->hqk", q, attn.rel_pos_w[off[..., 1]]
    )
    weights = (q @ k.transpose(-1, -2) * 4**-0.5 + bias).softmax(-1)
    expect = attn.proj((weights @ v).permute(1, 0, 2).reshape(1, 4, 4, 8))
    assert torch.allclose(attn(x), expect, atol=1e-5)
