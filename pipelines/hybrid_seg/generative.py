"""hybrid-seg generative augmentation (card R4): ``gen-train``, ``generate``, ``synth-train``.

- Condition: one-hot type map (6 channels) + instance-boundary map (1, skimage ``find_boundaries``), at ``gen.size``
  (random crops of the training patches when they are larger; the labels stay exact).
- ``gen.kind: ddpm``: diffusers ``UNet2DModel(sample_size=gen.size, in_channels=3+7, out_channels=3,
  block_out_channels=gen.block_out, layers_per_block)``, attention in the two lowest-resolution blocks (one when there
  are only two), the condition concatenated to the noisy image; ``DDPMScheduler(gen.timesteps,
  "squaredcos_cap_v2")``, ε-prediction MSE, AdamW ``gen.lr``, batch ``gen.batch_size``, ``gen.epochs`` (Lightning).
  Sampling with ``DDIMScheduler`` (same betas) in ``gen.ddim_steps`` steps. Images in [−1, 1].
- ``gen.kind: pix2pix``: a U-Net generator (log2(size) down-steps, width ``gen.base``, capped at 8·base) and a 70×70
  PatchGAN (3 stride-2 and 2 stride-1 4×4 convs), BCE + ``gen.l1_weight``·L1, Adam 2e-4 β (0.5, 0.999), Lightning
  manual optimisation; the condition is the input, no noise (dropout only, as pix2pix).
- ``generate`` (on a gen-train run): conditions from real training masks after a random rot90/flip, with copy-paste
  of rare-class nuclei (the least frequent class present in the training set, pasted from another patch onto free
  background) when ``gen.rebalance``; elastic warps are not done. Writes ``samples/<i>_image.png``,
  ``<i>_inst.png`` (16-bit), ``<i>_type.png`` and a grid figure; checks every pair's shapes. FID/KID need Inception
  weights and FID_seg a real-data HybridNet: neither is computed (not done); the pixel mean/sd of real and generated
  images is reported as a crude check.
- ``synth-train`` (on a gen-train run): samples ``gen.samples`` pairs as ``generate`` does, resizes them to the
  training patch size (bilinear image, nearest labels) when ``gen.size`` differs, and trains HybridNet with each
  training item replaced by a synthetic pair with probability ρ = ``synth_train.rho`` (ρ of each batch in
  expectation); ρ = 1 is TSTR (train synthetic, test real).
"""

from __future__ import annotations

import math

import lightning as L
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from medrun.errors import UsageError

from .. import training
from ..report import paper_md
from .method import N_TYPES, Nuclei


# -- conditions -------------------------------------------------------------------------------------------------
def condition(inst: np.ndarray, types: np.ndarray) -> np.ndarray:
    """(7, H, W) float32: one-hot type map and the instance-boundary map."""
    from skimage.segmentation import find_boundaries

    onehot = np.eye(N_TYPES, dtype=np.float32)[types.astype(np.int64)].transpose(2, 0, 1)
    return np.concatenate([onehot, find_boundaries(inst, mode="inner")[None].astype(np.float32)])


def crops(data: Nuclei, size: int, rng, n: int | None = None):
    """Random ``size``² crops (image, inst, types) of the patches, one per patch (or ``n`` in all)."""
    out = []
    idx = range(len(data)) if n is None else rng.integers(len(data), size=n)
    for i in idx:
        h, w = data.images.shape[1:3]
        if h < size or w < size:
            raise UsageError(f"gen.size {size} is larger than the patches ({h}×{w})", fix=f"-o gen.size={min(h, w)}")
        y, x = rng.integers(h - size + 1), rng.integers(w - size + 1)
        sl = np.s_[y:y + size, x:x + size]
        out.append((data.images[i][sl], data.inst[i][sl], data.types[i][sl]))
    return out


class PairData(torch.utils.data.Dataset):
    def __init__(self, data: Nuclei, size: int, seed: int):
        self.data, self.size, self.seed = data, size, seed

    def __len__(self):
        return len(self.data)

    def __getitem__(self, i):
        rng = np.random.default_rng(int(torch.randint(2**31 - 1, (1,))))
        img, ins, typ = crops(self.data.take([i]), self.size, rng)[0]
        k = int(rng.integers(4))
        img, ins, typ = (np.ascontiguousarray(np.rot90(a, k)) for a in (img, ins, typ))
        x = torch.from_numpy(img.astype(np.float32).transpose(2, 0, 1) / 127.5 - 1)
        return x, torch.from_numpy(condition(ins, typ))


# -- networks ---------------------------------------------------------------------------------------------------
def ddpm_unet(g):
    from diffusers import UNet2DModel

    n = len(g.block_out)
    attn = max(1, min(2, n - 1))
    down = tuple(["DownBlock2D"] * (n - attn) + ["AttnDownBlock2D"] * attn)
    up = tuple(["AttnUpBlock2D"] * attn + ["UpBlock2D"] * (n - attn))
    groups = math.gcd(*g.block_out, 32)
    return UNet2DModel(sample_size=g.size, in_channels=3 + N_TYPES + 1, out_channels=3,
                       block_out_channels=tuple(g.block_out), layers_per_block=g.layers_per_block,
                       down_block_types=down, up_block_types=up, norm_num_groups=groups)


def schedulers(g):
    from diffusers import DDIMScheduler, DDPMScheduler

    kw = dict(num_train_timesteps=g.timesteps, beta_schedule="squaredcos_cap_v2")
    return DDPMScheduler(**kw), DDIMScheduler(**kw)


class Pix2PixG(nn.Module):
    """U-Net generator: log2(size) stride-2 4×4 down-steps (LeakyReLU, BN), mirrored up-steps with skips, tanh."""

    def __init__(self, cin: int, size: int, base: int):
        super().__init__()
        depth = int(math.log2(size))
        widths = [min(base * 2 ** i, base * 8) for i in range(depth)]
        self.down, self.up = nn.ModuleList(), nn.ModuleList()
        prev = cin
        for i, w in enumerate(widths):
            self.down.append(nn.Sequential(nn.Conv2d(prev, w, 4, 2, 1), *( [nn.BatchNorm2d(w)] if 0 < i < depth - 1
                                                                           else []), nn.LeakyReLU(0.2)))
            prev = w
        for i, w in reversed(list(enumerate(widths[:-1]))):
            cin_up = prev if i == depth - 2 else prev * 2
            self.up.append(nn.Sequential(nn.ConvTranspose2d(cin_up, w, 4, 2, 1), nn.BatchNorm2d(w),
                                         *([nn.Dropout(0.5)] if i >= depth - 4 else []), nn.ReLU()))
            prev = w
        self.out = nn.ConvTranspose2d(prev * 2, 3, 4, 2, 1)

    def forward(self, c):
        skips, x = [], c
        for d in self.down:
            x = d(x)
            skips.append(x)
        for u, s in zip(self.up, reversed(skips[:-1]), strict=True):
            x = torch.cat([u(x), s], 1)
        return torch.tanh(self.out(x))


def patch_gan(cin: int, base: int) -> nn.Sequential:
    """70×70 PatchGAN: C64-C128-C256 (stride 2), C512 (stride 1), 1-channel output (stride 1)."""
    w = [base, base * 2, base * 4, base * 8]
    return nn.Sequential(nn.Conv2d(cin, w[0], 4, 2, 1), nn.LeakyReLU(0.2),
                         nn.Conv2d(w[0], w[1], 4, 2, 1), nn.BatchNorm2d(w[1]), nn.LeakyReLU(0.2),
                         nn.Conv2d(w[1], w[2], 4, 2, 1), nn.BatchNorm2d(w[2]), nn.LeakyReLU(0.2),
                         nn.Conv2d(w[2], w[3], 4, 1, 1), nn.BatchNorm2d(w[3]), nn.LeakyReLU(0.2),
                         nn.Conv2d(w[3], 1, 4, 1, 1))


class LitDDPM(L.LightningModule):
    def __init__(self, unet, g):
        super().__init__()
        self.net, self.g = unet, g
        self.sched = schedulers(g)[0]

    def training_step(self, batch, _):
        x, c = batch
        noise = torch.randn_like(x)
        t = torch.randint(0, self.g.timesteps, (len(x),), device=x.device)
        noisy = self.sched.add_noise(x, noise, t)
        loss = F.mse_loss(self.net(torch.cat([noisy, c], 1), t).sample, noise)
        self.log("train_loss", loss, on_step=False, on_epoch=True, prog_bar=True, batch_size=len(x))
        return loss

    def configure_optimizers(self):
        return torch.optim.AdamW(self.net.parameters(), lr=self.g.lr)


class LitPix2Pix(L.LightningModule):
    def __init__(self, gen, disc, g):
        super().__init__()
        self.net, self.disc, self.g = gen, disc, g
        self.automatic_optimization = False

    def training_step(self, batch, _):
        x, c = batch
        opt_g, opt_d = self.optimizers()
        fake = self.net(c)
        real_logit, fake_logit = self.disc(torch.cat([c, x], 1)), self.disc(torch.cat([c, fake.detach()], 1))
        loss_d = 0.5 * (F.binary_cross_entropy_with_logits(real_logit, torch.ones_like(real_logit))
                        + F.binary_cross_entropy_with_logits(fake_logit, torch.zeros_like(fake_logit)))
        opt_d.zero_grad()
        self.manual_backward(loss_d)
        opt_d.step()
        logit = self.disc(torch.cat([c, fake], 1))
        l1 = F.l1_loss(fake, x)
        loss_g = F.binary_cross_entropy_with_logits(logit, torch.ones_like(logit)) + self.g.l1_weight * l1
        opt_g.zero_grad()
        self.manual_backward(loss_g)
        opt_g.step()
        self.log_dict({"train_loss_g": loss_g, "train_loss_d": loss_d, "train_l1": l1}, on_step=False, on_epoch=True,
                      batch_size=len(x))

    def configure_optimizers(self):
        b = (0.5, 0.999)
        return (torch.optim.Adam(self.net.parameters(), lr=2e-4, betas=b),
                torch.optim.Adam(self.disc.parameters(), lr=2e-4, betas=b))


def build_generator(g):
    if g.kind == "ddpm":
        return ddpm_unet(g)
    return Pix2PixG(N_TYPES + 1, g.size, g.base)


# -- stages -----------------------------------------------------------------------------------------------------
def gen_train(p) -> dict:
    g, ctx = p.m.gen, p.ctx
    splits = p.splits()
    if g.kind == "pix2pix" and (g.size & (g.size - 1) or g.size < 32):
        raise UsageError(f"pix2pix needs gen.size a power of two ≥ 32, got {g.size}", fix="-o gen.size=32")
    net = build_generator(g)
    module = LitDDPM(net, g) if g.kind == "ddpm" else LitPix2Pix(net, patch_gan(3 + N_TYPES + 1, g.base), g)
    loader = training.ResumableLoader(PairData(splits["train"], g.size, p.m.seed), min(g.batch_size,
                                                                                         len(splits["train"])),
                                      p.m.seed)
    trainer = training.make_trainer(ctx, g.epochs)
    training.fit(trainer, module, train_dataloaders=loader, ckpt_path=training.resume_checkpoint(ctx.run))
    training.save_weights(net, ctx.path / "checkpoints" / "model.safetensors",
                          {"pipeline": "hybrid-seg", "generator": g.kind, "size": g.size})
    ctx.learning_curves()
    from ..report import read_series

    losses = [v for _, v in read_series(ctx.path / "logs" / "metrics.csv").get(
        "train_loss" if g.kind == "ddpm" else "train_l1", [])]
    n = sum(q.numel() for q in net.parameters())
    metrics = {"kind": g.kind, "params_total": n, "epochs": g.epochs,
               "loss_first": losses[0] if losses else math.nan, "loss_last": losses[-1] if losses else math.nan}
    metrics["loss_drop"] = metrics["loss_first"] - metrics["loss_last"]
    ctx.write_text("paper.md", paper_md(ctx.spec, p.m, metrics, ctx, title=f"Generator ({g.kind})", expect={},
                                        keys=["params_total", "loss_first", "loss_last"], present_only=True))
    return metrics


def _trained_generator(p):
    g = p.m.gen
    net = build_generator(g)
    path = p.ctx.parent_file("checkpoints/model.safetensors") if p.ctx.checkpoint is None else p.ctx.checkpoint
    return training.load_weights(net, path).eval()


def conditions(p, data: Nuclei, n: int, rng) -> list[tuple[np.ndarray, np.ndarray]]:
    """(inst, types) label pairs from real training crops, rot90/flip, with rare-class copy-paste."""
    g = p.m.gen
    counts = np.bincount(data.types.ravel(), minlength=N_TYPES)[1:]
    rare = int(np.argmin(np.where(counts > 0, counts, np.inf))) + 1 if counts.any() else None
    out = []
    for _, ins, typ in crops(data, g.size, rng, n):
        k = int(rng.integers(4))
        ins, typ = np.rot90(ins, k).copy(), np.rot90(typ, k).copy()
        if rng.random() < 0.5:
            ins, typ = ins[:, ::-1].copy(), typ[:, ::-1].copy()
        if g.rebalance and rare is not None:
            ins, typ = _paste(ins, typ, data, rare, rng)
        out.append((ins, typ))
    return out


def _paste(ins, typ, data: Nuclei, cls: int, rng):
    """Copy one nucleus of class ``cls`` from a random patch onto background of this crop (if it fits)."""
    donors = [i for i in range(len(data)) if (data.types[i] == cls).any()]
    if not donors:
        return ins, typ
    d = donors[int(rng.integers(len(donors)))]
    ids = np.unique(data.inst[d][data.types[d] == cls])
    mask = data.inst[d] == ids[int(rng.integers(len(ids)))]
    ys, xs = np.nonzero(mask)
    piece = mask[ys.min():ys.max() + 1, xs.min():xs.max() + 1]
    h, w = piece.shape
    for _ in range(10):
        if h >= ins.shape[0] or w >= ins.shape[1]:
            break
        y, x = rng.integers(ins.shape[0] - h), rng.integers(ins.shape[1] - w)
        if not (ins[y:y + h, x:x + w][piece] > 0).any():
            new = int(ins.max()) + 1
            ins[y:y + h, x:x + w][piece] = new
            typ[y:y + h, x:x + w][piece] = cls
            break
    return ins, typ


@torch.no_grad()
def sample(p, net, conds) -> np.ndarray:
    """Images (N, S, S, 3) uint8 for the conditions (DDIM in gen.ddim_steps steps, or the pix2pix generator)."""
    g = p.m.gen
    c = torch.from_numpy(np.stack([condition(i, t) for i, t in conds]))
    if g.kind == "pix2pix":
        x = torch.cat([p.predictor(net, b) for b in c.split(8)])
    else:
        from ..predictor import Forward

        ddim = schedulers(g)[1]
        ddim.set_timesteps(g.ddim_steps)
        gen = torch.Generator().manual_seed(p.m.seed)
        x = torch.randn((len(c), 3, g.size, g.size), generator=gen)
        step = Forward(net, lambda n, inp, t: n(inp, t).sample)
        for t in ddim.timesteps:
            eps = p.predictor(step, torch.cat([x, c], 1), t)
            x = ddim.step(eps, t, x).prev_sample
    return ((x.clamp(-1, 1) + 1) * 127.5).round().byte().permute(0, 2, 3, 1).numpy()


def generate(p) -> dict:
    g, ctx = p.m.gen, p.ctx
    splits = p.splits()
    rng = np.random.default_rng(p.m.seed)
    conds = conditions(p, splits["train"], g.samples, rng)
    images = sample(p, _trained_generator(p), conds)
    ok = all(im.shape == (g.size, g.size, 3) and ins.shape == (g.size, g.size) == typ.shape
             for im, (ins, typ) in zip(images, conds, strict=True))
    for i, (im, (ins, typ)) in enumerate(zip(images, conds, strict=True)):
        ctx.write_png(f"samples/{i:03d}_image.png", im)
        ctx.write_png(f"samples/{i:03d}_inst.png", ins.astype(np.uint16))
        ctx.write_png(f"samples/{i:03d}_type.png", typ.astype(np.uint8))
    _grid(ctx, images, conds)
    real = splits["train"].images.astype(np.float32)
    metrics = {"pairs": len(images), "shapes_ok": float(ok), "size": g.size, "steps": g.ddim_steps if g.kind == "ddpm"
               else 1, "real_pixel_mean": float(real.mean()), "gen_pixel_mean": float(images.mean()),
               "real_pixel_sd": float(real.std()), "gen_pixel_sd": float(images.astype(np.float32).std()),
               "nuclei_per_pair": float(np.mean([len(np.unique(i)) - 1 for i, _ in conds]))}
    ctx.write_text("paper.md", paper_md(ctx.spec, p.m, metrics, ctx, title=f"Generated pairs ({g.kind})", expect={},
                                        keys=list(metrics), present_only=True,
                                        sections=["FID/KID (Inception weights) and FID_seg are not computed."]))
    return metrics


def _grid(ctx, images, conds, n: int = 8):
    from .pipeline import TYPE_COLOURS

    n = min(n, len(images))
    with ctx.figure("samples", nrows=2, ncols=n, figsize=(1.6 * n, 3.4), squeeze=False) as (fig, axes):
        for j in range(n):
            axes[0, j].imshow(images[j])
            axes[1, j].imshow(TYPE_COLOURS[conds[j][1]], interpolation="nearest")
            axes[0, j].set_axis_off()
            axes[1, j].set_axis_off()
        axes[0, 0].set_title("generated", fontsize=7)
        axes[1, 0].set_title("condition (types)", fontsize=7)


def synth_train(p) -> dict:
    g, ctx = p.m.gen, p.ctx
    splits = p.splits()
    rng = np.random.default_rng(p.m.seed)
    conds = conditions(p, splits["train"], g.samples, rng)
    images = sample(p, _trained_generator(p), conds)
    side = splits["train"].images.shape[1]
    if g.size != side:
        from PIL import Image

        images = np.stack([np.asarray(Image.fromarray(im).resize((side, side), Image.BILINEAR)) for im in images])
        conds = [tuple(np.asarray(Image.fromarray(a.astype(np.int32)).resize((side, side), Image.NEAREST))
                       for a in c) for c in conds]
    syn = Nuclei([f"syn{i:03d}" for i in range(len(images))], [""] * len(images), images,
                 np.stack([c[0] for c in conds]).astype(np.int32), np.stack([c[1] for c in conds]).astype(np.uint8),
                 np.zeros((len(images), splits["train"].meta.shape[1]), np.float32))
    p.synthetic = syn
    ctx.log(f"synthetic pairs: {len(syn)}; ρ = {p.m.synth_train.rho}")
    metrics = p.train()
    metrics.update(rho=p.m.synth_train.rho, synthetic_pairs=len(syn))
    return metrics
