"""mcgan ``train-i2i``: stage 2, the Attention U-Net G3 from G1(donor T1) to the donor's contrast (paired).

G1 comes from the train-da run of the same manifest (run or reused as a sweep child, so ``medrun train-i2i``
alone does both stages), or from ``train_i2i.da_weights``; ``use_da: false`` feeds the donor's real T1 instead
(the no-DA control). D_s is a PatchGAN on concat(input, image); L_I2I = λ_adv·LSGAN + λ_L1·L1 + λ_vgg·L1 of VGG16
relu2_2 features over the whole batch. Without ``vgg_weights`` λ_vgg = 0 and the run says it is not faithful.
Logs the unweighted L1 per epoch (``l1``); writes ``checkpoints/g3.safetensors`` (also as ``model.safetensors``).
"""

from __future__ import annotations

import time
from pathlib import Path

import lightning as L
import numpy as np
import torch
import torch.nn.functional as F

from medrun.errors import EnvError, UsageError
from medrun.models.cyclegan import ImagePool, PatchDiscriminator, ResnetGenerator, init_weights
from medrun.models.mcgan import VGG16Features

from .. import training
from ..report import paper_md
from ..sweep import Child
from .da import first_last, lsgan, restyle, schedule


class Paired(torch.utils.data.Dataset):
    def __init__(self, x: torch.Tensor, y: np.ndarray):
        self.x, self.y = x, torch.from_numpy(y)[:, None] * 2 - 1

    def __len__(self):
        return len(self.x)

    def __getitem__(self, i):
        return self.x[i], self.y[i]


class LitI2I(L.LightningModule):
    def __init__(self, g3, d, vgg, cfg, lambda_vgg: float, seed: int):
        super().__init__()
        self.automatic_optimization = False
        self.g3, self.d, self.vgg, self.cfg, self.lambda_vgg = g3, d, vgg, cfg, lambda_vgg
        self.pool = ImagePool(cfg.pool_size, torch.Generator().manual_seed(seed))

    def training_step(self, batch, batch_idx):
        c = self.cfg
        x, y = batch
        opt_g, opt_d = self.optimizers()
        self.d.requires_grad_(False)
        fake = self.g3(x)
        l1 = F.l1_loss(fake, y)
        loss_g = c.lambda_adv * lsgan(self.d(torch.cat([x, fake], 1)), True) + c.lambda_l1 * l1
        if self.vgg is not None and self.lambda_vgg > 0:
            loss_g = loss_g + self.lambda_vgg * F.l1_loss(self.vgg(fake), self.vgg(y))
        opt_g.zero_grad()
        self.manual_backward(loss_g)
        opt_g.step()
        self.d.requires_grad_(True)
        pair = self.pool.query(torch.cat([x, fake], 1))
        loss_d = 0.5 * (lsgan(self.d(torch.cat([x, y], 1)), True) + lsgan(self.d(pair), False))
        opt_d.zero_grad()
        self.manual_backward(loss_d)
        opt_d.step()
        kw = {"on_step": False, "on_epoch": True, "batch_size": len(x)}
        self.log("loss_g", loss_g, prog_bar=True, **kw)
        self.log("loss_d", loss_d, **kw)
        self.log("l1", l1, prog_bar=True, **kw)

    def on_train_epoch_end(self):
        for sch in self.lr_schedulers():
            sch.step()

    def configure_optimizers(self):
        c = self.cfg
        opt_g = torch.optim.Adam(self.g3.parameters(), lr=c.lr, betas=tuple(c.betas))
        opt_d = torch.optim.Adam(self.d.parameters(), lr=c.lr, betas=tuple(c.betas))
        return [opt_g, opt_d], [schedule(opt_g, c.epochs, c.decay_epochs), schedule(opt_d, c.epochs, c.decay_epochs)]


def vgg(p) -> tuple[VGG16Features | None, float]:
    """The frozen VGG16 relu2_2 extractor from ``vgg_weights`` (torchvision keys ``features.N.*``), and λ_vgg."""
    c = p.m.train_i2i
    if c.lambda_vgg == 0:
        return None, 0.0
    if not c.vgg_weights:
        p.ctx.log("train_i2i.vgg_weights not given: λ_vgg = 0, so this run is NOT faithful to the paper's loss "
                  "(pass a torchvision VGG16 state dict to use the perceptual term)")
        return None, 0.0
    path = Path(c.vgg_weights).expanduser()
    if not path.is_file():
        raise EnvError(f"train_i2i.vgg_weights not found: {path}",
                       fix="pass a local torchvision VGG16 ImageNet state dict (vgg16-397923af.pth or .safetensors)")
    state = training.load_state(path)
    net = VGG16Features()
    own = net.state_dict()
    usable = {k: v for k, v in state.items() if k in own}
    if set(usable) != set(own) or any(tuple(v.shape) != tuple(own[k].shape) for k, v in usable.items()):
        raise UsageError(f"{path} lacks VGG16 features.0–7 (conv1_1 … conv2_2) of torchvision's shapes",
                         fix="pass torchvision's vgg16 state dict (keys features.0.weight …)")
    net.load_state_dict(usable)
    return net.eval().requires_grad_(False), c.lambda_vgg


def g1_of(p) -> torch.nn.Module | None:
    """G1: from ``da_weights``, or the train-da run of this manifest (run or reused as a child); None without DA."""
    c, mm = p.m.train_i2i, p.m.model
    if not c.use_da:
        return None
    g1 = ResnetGenerator(1, 1, mm.ngf, mm.n_blocks)
    if c.da_weights:
        path = Path(c.da_weights).expanduser()
        if not path.is_file():
            raise UsageError(f"train_i2i.da_weights not found: {path}", fix="pass checkpoints/g1.safetensors of a "
                                                                            "train-da run")
    else:
        child = p.ctx.sweep([Child("da", {}, stage="train-da")], title="domain adaptation")[0]
        path = Path(child.run_dir) / "checkpoints" / "g1.safetensors"
        p.ctx.run.update_info(da_run=child.run_id)
    from medrun.artifacts import sha256_file

    p.ctx.run.update_info(g1_sha256=sha256_file(path))
    return training.load_weights(g1, path, prefix="\0").eval()  # its own keys start with "model."


def build(p):
    g3 = init_weights(p.build_model(), generator=torch.Generator().manual_seed(p.m.seed))
    d = init_weights(PatchDiscriminator(2, p.m.model.ndf), generator=torch.Generator().manual_seed(p.m.seed + 1))
    return g3, d


def train_i2i(p) -> dict:
    ctx, c = p.ctx, p.m.train_i2i
    g1 = g1_of(p)
    p.record()
    donor = p.slices("donor", "train")
    x = restyle(p, g1, donor.t1) if g1 is not None else torch.from_numpy(donor.t1)[:, None] * 2 - 1
    v, lam_vgg = vgg(p)
    faithful = lam_vgg > 0 or c.lambda_vgg == 0
    ctx.run.update_info(faithful=faithful, lambda_vgg_used=lam_vgg)
    g3, d = build(p)
    ds = Paired(x.float(), donor.target)
    ctx.log(f"I2I: {len(ds)} donor slices, input {'G1(T1)' if g1 is not None else 'real T1 (no DA)'} → "
            f"{p.m.dataset.contrast}, {c.epochs}+{c.decay_epochs} epochs, λ_vgg {lam_vgg}")
    t0 = time.perf_counter()
    trainer = training.make_trainer(ctx, c.epochs + c.decay_epochs)
    loader = training.ResumableLoader(ds, c.batch_size, p.m.seed, drop_last=len(ds) > c.batch_size)
    training.fit(trainer, LitI2I(g3, d, v, c, lam_vgg, p.m.seed), train_dataloaders=loader,
                 ckpt_path=training.resume_checkpoint(ctx.run))
    secs = time.perf_counter() - t0
    meta = {"pipeline": "mcgan", "net": "G3", "input": "G1(T1)" if g1 is not None else "T1",
            "contrast": p.m.dataset.contrast, "channels": ",".join(map(str, p.m.model.channels))}
    training.save_weights(g3, ctx.path / "checkpoints" / "g3.safetensors", meta)
    training.save_weights(g3, ctx.path / "checkpoints" / "model.safetensors", meta)
    ctx.learning_curves()
    first, last = first_last(ctx, "l1")
    metrics = {"i2i_l1_first": first, "i2i_l1_last": last, "i2i_l1_drop": first - last, "use_da": c.use_da,
            "lambda_vgg_used": lam_vgg, "faithful": faithful, "steps": trainer.global_step,
            "train_seconds": round(secs, 3), "params_g3": sum(t.numel() for t in g3.parameters())}
    note = ("**Faithful:** λ_vgg = {lam_vgg:g} with the given VGG16 weights." if faithful else
            "**Not faithful:** no VGG16 weights were given (`train_i2i.vgg_weights`), so λ_vgg = 0 and the loss is "
            "not the paper's.").format(lam_vgg=lam_vgg)
    ctx.write_text("paper.md", paper_md(ctx.spec, p.m, metrics, ctx, expect={}, table="", keys=[
        "i2i_l1_first", "i2i_l1_last", "lambda_vgg_used", "params_g3"], title="MCGAN stage 2 (I2I)",
        setting="the I2I training itself (the paper's numbers are kl-eval's Table 1)", sections=[note]))
    return metrics
