"""Text towers for lorasam's prompts: CLIP's text encoder from a user's local checkpoint, or a small stand-in.

Spec: lorasam card, "Text path" (X = the frozen CLIP ViT-B/32 text embedding, 512-d, of the bare label name) and
"Reproduction plan" (without weights, a CLIP stand-in text tower of width 128 projecting to 512).

* `load_clip_text(path)`: HF transformers' `CLIPTextModelWithProjection` + `CLIPTokenizer` from a local folder
  (a file inside such a folder is accepted: its folder is used), `local_files_only=True`, so nothing is ever
  downloaded. The embedding is `text_embeds` (the projected EOS token, 512-d for ViT-B/32). Frozen, eval mode.
* `StandInTextTower`: byte-level tokens (UTF-8 bytes + BOS/EOS, context 32), token + position embeddings,
  2 pre-norm causal transformer layers of width 128 (4 heads), a final LayerNorm, the EOS token, a linear
  projection to 512. Initialised from a fixed generator (seed 0) whatever the run's seed, so every run of the
  stand-in sees the same embeddings of the same names. It carries no language knowledge: it only gives each
  class name its own fixed vector. Anything reported with it says so.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from medrun.errors import DataError, EnvError

STANDIN_NAME = "stand-in text tower (random, width 128 → 512; not CLIP)"


class StandInTextTower(nn.Module):
    def __init__(self, width: int = 128, out_dim: int = 512, layers: int = 2, heads: int = 4, context: int = 32):
        super().__init__()
        self.context = context
        g = torch.Generator().manual_seed(0)
        self.token_embedding = nn.Embedding(258, width)  # 256 bytes + BOS (256) + EOS (257)
        self.positional_embedding = nn.Parameter(torch.zeros(context, width))
        layer = nn.TransformerEncoderLayer(width, heads, 4 * width, dropout=0.0, activation="gelu",
                                           batch_first=True, norm_first=True)
        self.transformer = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
        self.ln_final = nn.LayerNorm(width)
        self.text_projection = nn.Linear(width, out_dim, bias=False)
        with torch.no_grad():  # every parameter from the fixed generator (or a constant), none from the global RNG
            for name, p in self.named_parameters():
                if p.dim() > 1:
                    scale = width**-0.5 if name == "text_projection.weight" else 0.02
                    p.copy_(torch.randn(p.shape, generator=g) * scale)
                elif name.endswith("weight"):  # LayerNorm gains
                    p.fill_(1.0)
                else:
                    p.zero_()
        self.requires_grad_(False).eval()

    def tokenize(self, names: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        ids = torch.zeros(len(names), self.context, dtype=torch.long)
        eos = torch.zeros(len(names), dtype=torch.long)
        for i, name in enumerate(names):
            toks = [256, *name.encode("utf-8")[: self.context - 2], 257]
            ids[i, : len(toks)] = torch.tensor(toks)
            eos[i] = len(toks) - 1
        return ids, eos

    @torch.no_grad()
    def forward(self, names: list[str]) -> torch.Tensor:
        ids, eos = self.tokenize(names)
        x = self.token_embedding(ids) + self.positional_embedding
        causal = nn.Transformer.generate_square_subsequent_mask(self.context)
        x = self.ln_final(self.transformer(x, mask=causal, is_causal=True))
        return self.text_projection(x[torch.arange(len(names)), eos])


class HFClipText(nn.Module):
    def __init__(self, model, tokenizer):
        super().__init__()
        self.model, self.tokenizer = model, tokenizer

    @torch.no_grad()
    def forward(self, names: list[str]) -> torch.Tensor:
        batch = self.tokenizer(names, padding=True, return_tensors="pt")
        return self.model(**batch).text_embeds


def load_clip_text(path: str | Path) -> HFClipText:
    """CLIP's text tower from a local HF checkpoint folder (config.json, weights, tokenizer files)."""
    path = Path(path)
    folder = path if path.is_dir() else path.parent
    if not path.exists():
        raise DataError(
            "CLIP checkpoint not found",
            file=str(path),
            fix="pass a local folder with a saved CLIP model (config.json, model.safetensors, tokenizer files)",
        )
    if not (folder / "config.json").is_file():
        raise DataError(f"{folder} has no config.json: not a saved HF CLIP model", file=str(path),
                        fix="save one with CLIPModel.save_pretrained(folder) and CLIPTokenizer.save_pretrained(folder)")
    try:
        from transformers import CLIPTextModelWithProjection, CLIPTokenizer
    except ImportError as e:  # pragma: no cover - transformers is a dependency
        raise EnvError("the CLIP text tower needs the `transformers` package", fix="pip install transformers") from e
    try:
        model = CLIPTextModelWithProjection.from_pretrained(folder, local_files_only=True)
        tokenizer = CLIPTokenizer.from_pretrained(folder, local_files_only=True)
    except Exception as e:  # corrupt or foreign files
        raise DataError(f"cannot load a CLIP text model from {folder}: {e.__class__.__name__}: "
                        f"{str(e).splitlines()[0][:160] if str(e) else ''}", file=str(path),
                        fix="pass the folder of a saved HF CLIP ViT-B/32 model") from None
    return HFClipText(model.requires_grad_(False).eval(), tokenizer)


def text_tower(clip_checkpoint: str | None) -> tuple[nn.Module, str]:
    """(tower, description): CLIP from `clip_checkpoint`, else the stand-in."""
    if clip_checkpoint:
        return load_clip_text(clip_checkpoint), f"CLIP text tower from {clip_checkpoint}"
    return StandInTextTower(), STANDIN_NAME
