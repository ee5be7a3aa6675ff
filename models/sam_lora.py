"""LoRA on SAM for lorasam: peft adapters, the Text Affine Layer (TAL) and the trainable-parameter selection.

Spec: lorasam card, "Method" (`../shared/papers/lorasam.md`):

* LoRA (Eq. 4) y = W x + λ·B(A x) with λ = lora_alpha / r = 1, no dropout, on every encoder block's `attn.qkv`,
  `attn.proj`, `mlp.lin1`, `mlp.lin2` and on both neck convs (`neck.0`, `neck.2`; peft's conv LoRA is
  Conv(in, r, k) then Conv(r, out, 1)); never on `patch_embed`. Injected with peft's `inject_adapter_in_model`
  into the image encoder only.
* Also trainable: the encoder's `pos_embed`; every parameter whose name contains "norm" (24 encoder LNs + the 9
  LNs of the decoder's two-way transformer; the neck's LN2d modules `neck.1/.3`, the prompt encoder's and the
  upscaler's LN2d are not named "norm" and stay frozen); the TAL = Linear(512→256) + ReLU + BatchNorm1d(256).
  Rel-pos tables stay frozen.
* Resulting counts (`LORASAM_TRAINABLE`): 974,080 at r = 4; 672,000 / 1,578,240 / 2,786,560 at r = 2 / 8 / 16.

Choices where the card is silent:

* peft's default LoRA init (A Kaiming-uniform, B zero), so the adapted model starts equal to the base model.
* The adapter name is peft's "default"; merging (for the benchmark) goes through peft's own `merge`/`unmerge`.
* `LoraSam` puts the text token after the (empty) prompt-encoder tokens and returns logits upsampled
  bilinearly to the input size, as the card's "Text path" and "Decoder" bullets describe.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from medrun.errors import EnvError

from .sam import Sam, count_params

# Full-match regex on module names inside the image encoder (peft treats a str target_modules as a regex).
LORASAM_TARGET_REGEX = r"(blocks\.\d+\.(attn\.(qkv|proj)|mlp\.(lin1|lin2)))|(neck\.(0|2))"

# The card's trainable-parameter totals (Tables 4-5 of the paper), by LoRA rank.
LORASAM_TRAINABLE = {2: 672_000, 4: 974_080, 8: 1_578_240, 16: 2_786_560}

CLIP_DIM = 512  # CLIP ViT-B/32 text embedding width


class TextAffineLayer(nn.Module):
    """TAL (Eq. 5): y = BN(ReLU(W x + b)), CLIP text embedding (512) → one prompt token (256)."""

    def __init__(self, in_dim: int = CLIP_DIM, out_dim: int = 256):
        super().__init__()
        self.linear = nn.Linear(in_dim, out_dim)
        self.bn = nn.BatchNorm1d(out_dim)

    def forward(self, text_embedding: torch.Tensor) -> torch.Tensor:
        return self.bn(F.relu(self.linear(text_embedding)))


def add_lora(sam: Sam, r: int = 4, alpha: float | None = None) -> Sam:
    """Inject rank-`r` LoRA (λ = alpha / r, default 1) into `sam.image_encoder` in place and return `sam`."""
    try:
        from peft import LoraConfig, inject_adapter_in_model
    except ImportError as err:  # pragma: no cover - peft is installed in the project venv
        raise EnvError("LoRA needs the `peft` package", fix="pip install peft") from err
    config = LoraConfig(
        r=r,
        lora_alpha=alpha if alpha is not None else r,
        lora_dropout=0.0,
        target_modules=LORASAM_TARGET_REGEX,
        bias="none",
    )
    inject_adapter_in_model(config, sam.image_encoder)
    return sam


def lora_parameters(module: nn.Module):
    return [p for n, p in module.named_parameters() if "lora_" in n]


def mark_lorasam_trainable(sam: Sam, tal: nn.Module | None = None, *, lora: bool = True,
                           pos_embed: bool = True, norms: bool = True) -> None:
    """Freeze everything, then unfreeze the card's trainable set. The switches give the Table-5 ablation rows
    (pos-embed only; + LN; + TAL; LN + LoRA without TAL)."""
    for p in sam.parameters():
        p.requires_grad_(False)
    for name, p in sam.named_parameters():
        if lora and "lora_" in name:
            p.requires_grad_(True)
        if norms and "norm" in name and "lora_" not in name:
            p.requires_grad_(True)
    sam.image_encoder.pos_embed.requires_grad_(pos_embed)
    if tal is not None:
        for p in tal.parameters():
            p.requires_grad_(True)


def set_lora_merged(module: nn.Module, merged: bool) -> None:
    """Fold the LoRA branches into the base weights (faster inference) or take them out again."""
    for m in module.modules():
        if hasattr(m, "merge") and hasattr(m, "unmerge") and hasattr(m, "lora_A"):
            if merged and not m.merged:
                m.merge()
            elif not merged and m.merged:
                m.unmerge()


class LoraSam(nn.Module):
    """SAM + LoRA + TAL: (normalised images, CLIP text embeddings of the class names) → mask logits.

    `text_embeddings` is (B, 512), one class name per image. With `use_tal=False` the text token is the first
    256 dims of the CLIP vector (card, Table-5 row "LoRA without TAL")."""

    def __init__(self, sam: Sam, r: int = 4, use_tal: bool = True, use_lora: bool = True):
        super().__init__()
        self.sam = add_lora(sam, r) if use_lora else sam
        self.r = r
        dim = sam.cfg.prompt_dim
        self.tal = TextAffineLayer(CLIP_DIM, dim) if use_tal else None
        mark_lorasam_trainable(self.sam, self.tal, lora=use_lora)

    def text_token(self, text_embeddings: torch.Tensor) -> torch.Tensor:
        if self.tal is None:
            return text_embeddings[:, : self.sam.cfg.prompt_dim]
        return self.tal(text_embeddings)

    def forward(self, images: torch.Tensor, text_embeddings: torch.Tensor) -> torch.Tensor:
        b = images.shape[0]
        image_embeddings = self.sam.image_encoder(images)
        sparse, dense = self.sam.prompt_encoder(batch_size=b)
        sparse = torch.cat([sparse, self.text_token(text_embeddings).unsqueeze(1)], dim=1)
        low_res, _ = self.sam.mask_decoder(
            image_embeddings, self.sam.prompt_encoder.get_dense_pe(), sparse, dense, multimask_output=False
        )
        return F.interpolate(low_res, size=images.shape[-2:], mode="bilinear", align_corners=False)


def trainable_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """What a lorasam run stores (issue 8 item 2): every trainable parameter (adapters, norms, position
    embedding, TAL) plus the buffers of modules that own a trainable parameter (the TAL BatchNorm's running
    statistics), detached and contiguous, ready for safetensors."""
    out = {n: p.detach().contiguous() for n, p in model.named_parameters() if p.requires_grad}
    for mod_name, mod in model.named_modules():
        if any(p.requires_grad for p in mod.parameters(recurse=False)):
            for b_name, buf in mod.named_buffers(recurse=False):
                out[f"{mod_name}.{b_name}" if mod_name else b_name] = buf.detach().contiguous()
    return out


def load_trainable_state_dict(model: nn.Module, tensors: dict[str, torch.Tensor]) -> None:
    """Put `trainable_state_dict` output back into a model built the same way (same rank and switches);
    a name the model does not have is an error, so a run cannot silently load into the wrong layout."""
    own = model.state_dict()
    unknown = sorted(set(tensors) - set(own))
    if unknown:
        raise KeyError(f"tensors not in the model: {unknown[:5]}")
    model.load_state_dict(tensors, strict=False)


def lorasam_param_breakdown(model: LoraSam) -> dict[str, int]:
    """Trainable parameters by group, as the card's parameter check lists them."""
    enc = model.sam.image_encoder
    groups = {
        "lora_blocks": sum(p.numel() for n, p in enc.blocks.named_parameters() if "lora_" in n and p.requires_grad),
        "lora_neck": sum(p.numel() for n, p in enc.neck.named_parameters() if "lora_" in n and p.requires_grad),
        "pos_embed": enc.pos_embed.numel() if enc.pos_embed.requires_grad else 0,
        "norms": sum(
            p.numel() for n, p in model.sam.named_parameters() if "norm" in n and "lora_" not in n and p.requires_grad
        ),
        "tal": count_params(model.tal, trainable_only=True) if model.tal is not None else 0,
    }
    groups["total"] = sum(groups.values())
    return groups
