"""lorasam's text towers: the stand-in is fixed and distinct per name; a local HF CLIP folder loads offline."""

import json

import pytest
import torch

from medrun.errors import DataError
from medrun.models.clip_text import STANDIN_NAME, StandInTextTower, load_clip_text, text_tower


def test_standin_is_deterministic_and_distinct():
    a = StandInTextTower()(["liver", "grasper", "gallbladder"])
    b = StandInTextTower()(["liver", "grasper", "gallbladder"])
    assert a.shape == (3, 512) and torch.equal(a, b)
    assert not torch.allclose(a[0], a[1]) and not any(p.requires_grad for p in StandInTextTower().parameters())
    assert text_tower(None)[1] == STANDIN_NAME


def _tiny_clip_folder(path):
    """A randomly initialised CLIP text model with projection and a byte-level BPE vocabulary, saved HF-style."""
    from transformers import CLIPTextConfig, CLIPTextModelWithProjection, CLIPTokenizer
    from transformers.convert_slow_tokenizer import bytes_to_unicode

    chars = list(bytes_to_unicode().values())
    vocab = {t: i for i, t in enumerate(chars + [c + "</w>" for c in chars] + ["<|startoftext|>", "<|endoftext|>"])}
    path.mkdir()
    (path / "vocab.json").write_text(json.dumps(vocab))
    (path / "merges.txt").write_text("#version: 0.2\n")
    CLIPTokenizer(str(path / "vocab.json"), str(path / "merges.txt")).save_pretrained(path)
    cfg = CLIPTextConfig(
        vocab_size=len(vocab),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=1,
        num_attention_heads=2,
        projection_dim=512,
        max_position_embeddings=32,
        bos_token_id=vocab["<|startoftext|>"],
        eos_token_id=vocab["<|endoftext|>"],
        pad_token_id=vocab["<|endoftext|>"],
    )
    CLIPTextModelWithProjection(cfg).save_pretrained(path)
    return path


def test_hf_clip_from_a_local_folder(tmp_path):
    folder = _tiny_clip_folder(tmp_path / "clip")
    tower = load_clip_text(folder)
    emb = tower(["liver", "l-hook electrocautery"])
    assert emb.shape == (2, 512) and not torch.allclose(emb[0], emb[1])
    assert load_clip_text(folder / "config.json")(["liver"]).shape == (1, 512)  # a file inside the folder works too


def test_bad_clip_paths(tmp_path):
    with pytest.raises(DataError, match="not found"):
        load_clip_text(tmp_path / "nowhere")
    (tmp_path / "x").mkdir()
    with pytest.raises(DataError, match="no config.json"):
        load_clip_text(tmp_path / "x")
    (tmp_path / "x" / "config.json").write_text("{broken")
    with pytest.raises(DataError, match="cannot load a CLIP text model"):
        load_clip_text(tmp_path / "x")
