"""The latent diffusion model: diffusers parts from a local SD 2.1 folder or the card's tiny configs, the caption
text tower, and the ``finetune-ldm`` stage (ε-prediction MSE under DDPM noise)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from medrun.errors import EnvError

from .. import training
from .config import SD_LAYOUT, check_sd_folder

SCALE = 0.18215  # SD's latent scaling factor s
TINY_VOCAB_WORDS = ("dermoscopic image of with and nevus squamous cell carcinoma benign keratosis actinic basal "
                    "melanoma dermatofibroma vascular lesion streaks pigment network dots globules blue-whitish veil "
                    "regression structures")
SCHEDULER = dict(num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                 steps_offset=1, set_alpha_to_one=False, clip_sample=False)


class WordTower(nn.Module):
    """The tiny text tower: a word-level vocabulary of the caption template (0 = pad, 1 = unknown), token +
    position embeddings and one transformer layer → ``encoder_hidden_states`` (B, 16, width)."""

    CONTEXT = 16

    def __init__(self, width: int = 32):
        super().__init__()
        self.vocab = {w: i + 2 for i, w in enumerate(dict.fromkeys(TINY_VOCAB_WORDS.split()))}
        self.tok = nn.Embedding(len(self.vocab) + 2, width)
        self.pos = nn.Parameter(torch.zeros(self.CONTEXT, width))
        self.layer = nn.TransformerEncoderLayer(width, 4, 2 * width, dropout=0.0, batch_first=True)

    def ids(self, texts: list[str]) -> torch.Tensor:
        out = torch.zeros(len(texts), self.CONTEXT, dtype=torch.long)
        for i, t in enumerate(texts):
            words = re.findall(r"[a-z\-]+", t.lower())[: self.CONTEXT]
            out[i, : len(words)] = torch.tensor([self.vocab.get(w, 1) for w in words], dtype=torch.long)
        return out

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.layer(self.tok(ids) + self.pos)


class Ldm(nn.Module):
    """vae + unet + text tower (+ tokenizer for CLIP); ``encode_text(texts)`` → encoder_hidden_states."""

    def __init__(self, vae, unet, text, tokenizer=None):
        super().__init__()
        self.vae, self.unet, self.text, self.tokenizer = vae, unet, text, tokenizer

    def encode_text(self, texts: list[str]) -> torch.Tensor:
        dev = next(self.unet.parameters()).device
        if self.tokenizer is None:
            return self.text(self.text.ids(texts).to(dev))
        ids = self.tokenizer(texts, padding="max_length", max_length=self.tokenizer.model_max_length, truncation=True,
                             return_tensors="pt").input_ids.to(dev)
        return self.text(ids)[0]


def tiny(size: int) -> Ldm:
    from diffusers import AutoencoderKL, UNet2DConditionModel

    vae = AutoencoderKL(in_channels=3, out_channels=3, down_block_types=("DownEncoderBlock2D",) * 3,
                        up_block_types=("UpDecoderBlock2D",) * 3, block_out_channels=(32, 64, 64), layers_per_block=1,
                        latent_channels=4, norm_num_groups=32, sample_size=size)
    unet = UNet2DConditionModel(sample_size=size // 4, in_channels=4, out_channels=4, layers_per_block=1,
                                block_out_channels=(32, 64), down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
                                up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"), cross_attention_dim=32,
                                attention_head_dim=4, norm_num_groups=32)
    return Ldm(vae, unet, WordTower(32))


def from_sd(path: Path, size: int) -> Ldm:
    check_sd_folder(path, size)
    try:
        from diffusers import AutoencoderKL, UNet2DConditionModel
        from transformers import CLIPTextModel, CLIPTokenizer

        kw = dict(local_files_only=True)
        vae = AutoencoderKL.from_pretrained(path, subfolder="vae", **kw)
        unet = UNet2DConditionModel.from_pretrained(path, subfolder="unet", **kw)
        text = CLIPTextModel.from_pretrained(path, subfolder="text_encoder", **kw)
        tok = CLIPTokenizer.from_pretrained(path, subfolder="tokenizer", **kw)
    except (OSError, ValueError) as e:
        raise EnvError(f"cannot load Stable Diffusion from {path}: {str(e).splitlines()[0][:200]}",
                       fix=f"a complete local diffusers folder holds {SD_LAYOUT}") from None
    return Ldm(vae.requires_grad_(False), unet, text.requires_grad_(False), tok)


def build(m) -> Ldm:
    f = m.finetune_ldm
    return from_sd(Path(f.sd_path).expanduser(), f.size) if f.sd_path else tiny(f.size)


def load(p, finetuned: bool = True) -> Ldm:
    """The chain's fine-tuned LDM (or, ``finetuned=False``, the weights before fine-tuning: SD's, or for the tiny
    configs the AutoencoderKL and text tower trained but the UNet at its initialisation)."""
    ldm = build(p.m)
    state = training.load_state(p.ancestor_file("finetune-ldm", "checkpoints/model.safetensors"))
    if not finetuned:
        torch.manual_seed(p.m.seed)
        state = {k: v for k, v in state.items() if not k.startswith("unet.")} if p.m.finetune_ldm.sd_path is None \
            else {}
        if p.m.finetune_ldm.sd_path is None:
            ldm.unet = tiny(p.m.finetune_ldm.size).unet
    own = ldm.state_dict()
    ldm.load_state_dict({**own, **{k: v for k, v in state.items() if k in own}})
    return ldm.eval().requires_grad_(False)


def scheduler(kind: str = "pndm", cfg: dict | None = None):
    from diffusers import DDPMScheduler, PNDMScheduler

    cfg = dict(cfg or SCHEDULER)
    if kind == "pndm":
        return PNDMScheduler(**{k: v for k, v in cfg.items() if k != "clip_sample"}, skip_prk_steps=True)
    return DDPMScheduler(**{k: v for k, v in cfg.items() if k != "set_alpha_to_one"})


def sd_scheduler_cfg(m) -> dict:
    if not m.finetune_ldm.sd_path:
        return SCHEDULER
    f = Path(m.finetune_ldm.sd_path).expanduser() / "scheduler" / "scheduler_config.json"
    keys = ("num_train_timesteps", "beta_start", "beta_end", "beta_schedule", "steps_offset", "set_alpha_to_one",
            "prediction_type")
    return {k: v for k, v in json.loads(f.read_text()).items() if k in keys}


class CaptionImages(torch.utils.data.Dataset):
    def __init__(self, images: torch.Tensor, captions: list[str]):
        self.images, self.captions = images, captions

    def __len__(self):
        return len(self.captions)

    def __getitem__(self, i):
        return self.images[i], self.captions[i]


def lit_ldm(ldm: Ldm, f, sched_cfg: dict):
    """Steps 0…vae_steps−1 train the tiny AutoencoderKL (MSE + 1e-6 KL); then the UNet (and the tiny text tower)
    with SD's ε-MSE under the DDPM noise schedule."""
    import lightning as L

    noise = scheduler("ddpm", sched_cfg)
    tiny_path = f.sd_path is None

    class Lit(L.LightningModule):
        def __init__(self):
            super().__init__()
            self.net = ldm

        def training_step(self, batch, i):
            x, caps = batch
            x = x * 2 - 1
            if self.global_step < f.vae_steps:
                post = self.net.vae.encode(x).latent_dist
                rec = self.net.vae.decode(post.sample()).sample
                loss = F.mse_loss(rec, x) + 1e-6 * post.kl().mean()
                self.log("vae_loss", loss, on_step=False, on_epoch=True)
                return loss
            with torch.no_grad():
                z = self.net.vae.encode(x).latent_dist.sample() * SCALE
            eps = torch.randn_like(z)
            t = torch.randint(0, noise.config.num_train_timesteps, (len(z),), device=z.device)
            zt = noise.add_noise(z, eps, t)
            cond = self.net.encode_text(list(caps))
            loss = F.mse_loss(self.net.unet(zt, t, encoder_hidden_states=cond).sample, eps)
            self.log("train_loss", loss, on_step=False, on_epoch=True, prog_bar=True)
            return loss

        def configure_optimizers(self):
            groups = [{"params": [p for p in self.net.unet.parameters() if p.requires_grad],
                       "lr": f.unet_lr or f.lr}]
            if tiny_path:
                groups += [{"params": list(self.net.vae.parameters()), "lr": f.vae_lr},
                           {"params": list(self.net.text.parameters()), "lr": f.unet_lr or f.lr}]
            return torch.optim.AdamW(groups)

    return Lit()


def finetune(p) -> dict:
    import csv

    f = p.m.finetune_ldm
    with open(p.ctx.parent_file("captions.csv"), newline="") as fh:
        rows = [r for r in csv.DictReader(fh) if r["split"] == "train"]
    by_id = {s.id: s for s in p.splits()["train"]}
    samples = [by_id[r["image"]] for r in rows if r["image"] in by_id]
    caps = [r["caption"] for r in rows if r["image"] in by_id]
    ldm = build(p.m)
    lora = ""
    if f.lora_rank:
        from peft import LoraConfig, inject_adapter_in_model

        ldm.unet.requires_grad_(False)
        cfg = LoraConfig(r=f.lora_rank, lora_alpha=f.lora_rank, target_modules=["to_q", "to_k", "to_v", "to_out.0"])
        ldm.unet = inject_adapter_in_model(cfg, ldm.unet)
        lora = f"LoRA rank {f.lora_rank} on the UNet's attention (a deviation: the paper fine-tunes the full UNet)"
        p.ctx.log(lora)
    ds = CaptionImages(p.images(samples, f.size), caps)
    trainer = training.make_trainer(p.ctx, -1, max_steps=f.vae_steps + f.steps)
    training.fit(trainer, lit_ldm(ldm, f, sd_scheduler_cfg(p.m)),
                 train_dataloaders=training.ResumableLoader(ds, f.batch_size, p.m.seed,
                                                            drop_last=len(ds) > f.batch_size),
                 ckpt_path=training.resume_checkpoint(p.ctx.run))
    state = {k: v for k, v in ldm.state_dict().items() if f.sd_path is None or k.startswith("unet.")}
    p.ctx.write_bytes("checkpoints/model.safetensors", training.safetensors_bytes(
        state, {"pipeline": "counterfactual-ldm", "parts": "unet" if f.sd_path else "vae,unet,text", "lora": lora}))
    p.ctx.learning_curves()
    from ..report import read_series

    series = read_series(p.ctx.path / "logs" / "metrics.csv").get("train_loss", [])
    return {"steps": f.vae_steps + f.steps, "n_images": len(ds), "loss_first": series[0][1] if series else None,
            "loss_last": series[-1][1] if series else None, "lora": bool(f.lora_rank),
            "unet_params": sum(q.numel() for q in ldm.unet.parameters())}
