"""Numerical cross-check of our SAM against HF transformers' SAM (installed with peft), which reproduces the
official release. Random weights at a small size, copied across by name; points, box and mask prompts."""

from __future__ import annotations

import re

import torch
from transformers import SamConfig as HFSamConfig
from transformers import SamMaskDecoderConfig, SamPromptEncoderConfig, SamVisionConfig
from transformers.models.sam.modeling_sam import SamModel

from medrun.models.sam import Sam, SamConfig

CFG = SamConfig(img_size=64, embed_dim=96, depth=4, num_heads=3, window_size=3, global_attn_indexes=(1, 3),
                prompt_dim=64, decoder_heads=4, decoder_mlp_dim=128, iou_head_hidden_dim=32)

# our (official) decoder/prompt names → HF names; the image encoder is copied in registration order
RENAMES = [
    (r"^prompt_encoder\.point_embeddings", "prompt_encoder.point_embed"),
    (r"mask_downscaling\.0", "mask_embed.conv1"),
    (r"mask_downscaling\.1", "mask_embed.layer_norm1"),
    (r"mask_downscaling\.3", "mask_embed.conv2"),
    (r"mask_downscaling\.4", "mask_embed.layer_norm2"),
    (r"mask_downscaling\.6", "mask_embed.conv3"),
    (r"\.norm(\d)", r".layer_norm\1"),
    (r"norm_final_attn", "layer_norm_final_attn"),
    (r"output_upscaling\.0", "upscale_conv1"),
    (r"output_upscaling\.1", "upscale_layer_norm"),
    (r"output_upscaling\.3", "upscale_conv2"),
    (r"(mlps\.\d|iou_prediction_head)\.layers\.0", r"\1.proj_in"),
    (r"(mlps\.\d|iou_prediction_head)\.layers\.2", r"\1.proj_out"),
    (r"(mlps\.\d|iou_prediction_head)\.layers\.1", r"\1.layers.0"),
]


def hf_model() -> SamModel:
    vision = SamVisionConfig(hidden_size=96, output_channels=64, num_hidden_layers=4, num_attention_heads=3,
                             image_size=64, patch_size=16, window_size=3, global_attn_indexes=[1, 3],
                             mlp_dim=384, num_pos_feats=32)
    prompt = SamPromptEncoderConfig(hidden_size=64, image_size=64, patch_size=16)
    decoder = SamMaskDecoderConfig(hidden_size=64, mlp_dim=128, num_attention_heads=4, iou_head_hidden_dim=32)
    cfg = HFSamConfig(vision_config=vision.to_dict(), prompt_encoder_config=prompt.to_dict(),
                      mask_decoder_config=decoder.to_dict())
    return SamModel(cfg).eval()


def test_matches_hf_transformers_sam():
    ours, hf = Sam(CFG).eval(), hf_model()
    g = torch.Generator().manual_seed(1)
    sd = {k: torch.randn(v.shape, generator=g) * 0.1 for k, v in ours.state_dict().items()}
    ours.load_state_dict(sd)
    enc_ours, enc_hf = list(ours.image_encoder.state_dict()), list(hf.vision_encoder.state_dict())
    assert len(enc_ours) == len(enc_hf)
    hf_sd = {}
    for key, value in sd.items():
        if key.startswith("image_encoder."):
            hf_sd["vision_encoder." + enc_hf[enc_ours.index(key.removeprefix("image_encoder."))]] = value
        elif key.endswith("positional_encoding_gaussian_matrix"):
            hf_sd["shared_image_embedding.positional_embedding"] = value
            hf_sd["prompt_encoder.shared_embedding.positional_embedding"] = value
        else:
            for pattern, repl in RENAMES:
                key = re.sub(pattern, repl, key)
            hf_sd[key] = value
    missing, unexpected = hf.load_state_dict(hf_sd, strict=False)
    assert not missing and not unexpected

    x = torch.randn(1, 3, 64, 64)
    pts, lab = torch.tensor([[[10.0, 20.0], [40.0, 50.0]]]), torch.tensor([[1, 0]])
    box, prev = torch.tensor([[5.0, 8.0, 40.0, 50.0]]), torch.randn(1, 1, 16, 16)
    with torch.no_grad():
        assert torch.allclose(ours.image_encoder(x), hf.vision_encoder(x).last_hidden_state, atol=1e-5)
        masks, iou = ours(x, points=(pts, lab), masks=prev, multimask_output=True)
        ref = hf(pixel_values=x, input_points=pts[:, None], input_labels=lab[:, None], input_masks=prev,
                 multimask_output=True)
        assert masks.shape == (1, 3, 16, 16)
        assert torch.allclose(masks, ref.pred_masks[:, 0], atol=1e-4)
        assert torch.allclose(iou, ref.iou_scores[:, 0], atol=1e-5)
        masks, iou = ours(x, boxes=box)
        ref = hf(pixel_values=x, input_boxes=box[:, None], multimask_output=False)
        assert torch.allclose(masks, ref.pred_masks[:, 0], atol=1e-4)
        assert torch.allclose(iou, ref.iou_scores[:, 0], atol=1e-5)
