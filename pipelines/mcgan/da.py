"""mcgan ``train-da``: stage 1, CycleGAN between the donor's T1 (Ŝ) and the recipient's T1 (T̂), unpaired.

G1: Ŝ → T̂ style, G2: T̂ → Ŝ (``models.cyclegan.ResnetGenerator``, one channel), D_T (and D_S for the two-sided
form) 70×70 PatchGANs; LSGAN (G: (D(fake) − 1)², D: ½[(D(real) − 1)² + D(pool(fake))²]); L_DA = λ_adv·L_adv +
λ_cyc·‖G2(G1(Ŝ)) − Ŝ‖₁ (+ the T̂ → Ŝ → T̂ terms unless ``one_sided``). Manual optimisation, generators then
discriminators each step, LambdaLR: constant for ``epochs`` then linear to 0 over ``decay_epochs``. Logs the
unweighted Ŝ cycle L1 per epoch (``cycle_l1``); writes ``checkpoints/g1.safetensors`` (and g2).
"""

from __future__ import annotations

import time

import lightning as L
import torch
import torch.nn.functional as F

from medrun.models.cyclegan import ImagePool, PatchDiscriminator, ResnetGenerator, init_weights

from .. import training
from ..report import read_series


def lsgan(logits: torch.Tensor, real: bool) -> torch.Tensor:
    return F.mse_loss(logits, torch.ones_like(logits) if real else torch.zeros_like(logits))


def schedule(opt, epochs: int, decay: int):
    """Constant for ``epochs``, then linear to 0 over ``decay`` epochs (pix2pix's ``linear`` policy)."""
    return torch.optim.lr_scheduler.LambdaLR(opt, lambda e: 1.0 - max(0, e + 1 - epochs) / float(decay + 1))


class Unpaired(torch.utils.data.Dataset):
    """Item i: (donor T1 slice, recipient T1 slice), each 1×S×S in [−1, 1]."""

    def __init__(self, a, b):
        self.a, self.b = torch.from_numpy(a) * 2 - 1, torch.from_numpy(b) * 2 - 1

    def __len__(self):
        return max(len(self.a), len(self.b))

    def __getitem__(self, i):
        return self.a[i % len(self.a)][None], self.b[i % len(self.b)][None]


class DANets(torch.nn.Module):
    def __init__(self, ngf: int, n_blocks: int, ndf: int, one_sided: bool):
        super().__init__()
        self.g1, self.g2 = ResnetGenerator(1, 1, ngf, n_blocks), ResnetGenerator(1, 1, ngf, n_blocks)
        self.d_t = PatchDiscriminator(1, ndf)
        self.d_s = None if one_sided else PatchDiscriminator(1, ndf)


class LitDA(L.LightningModule):
    def __init__(self, nets: DANets, cfg, seed: int):
        super().__init__()
        self.automatic_optimization = False
        self.nets, self.cfg = nets, cfg
        gen = torch.Generator().manual_seed(seed)
        self.pool_t, self.pool_s = ImagePool(cfg.pool_size, gen), ImagePool(cfg.pool_size, gen)

    def training_step(self, batch, batch_idx):
        c, n = self.cfg, self.nets
        s, t = batch
        opt_g, opt_d = self.optimizers()
        ds = [d for d in (n.d_t, n.d_s) if d is not None]
        for d in ds:
            d.requires_grad_(False)
        fake_t = n.g1(s)
        cyc_s = F.l1_loss(n.g2(fake_t), s)
        loss_g = c.lambda_adv * lsgan(n.d_t(fake_t), True) + c.lambda_cyc * cyc_s
        if n.d_s is not None:
            fake_s = n.g2(t)
            loss_g = loss_g + c.lambda_adv * lsgan(n.d_s(fake_s), True) + c.lambda_cyc * F.l1_loss(n.g1(fake_s), t)
        opt_g.zero_grad()
        self.manual_backward(loss_g)
        opt_g.step()
        for d in ds:
            d.requires_grad_(True)
        loss_d = 0.5 * (lsgan(n.d_t(t), True) + lsgan(n.d_t(self.pool_t.query(fake_t)), False))
        if n.d_s is not None:
            loss_d = loss_d + 0.5 * (lsgan(n.d_s(s), True) + lsgan(n.d_s(self.pool_s.query(fake_s)), False))
        opt_d.zero_grad()
        self.manual_backward(loss_d)
        opt_d.step()
        kw = {"on_step": False, "on_epoch": True, "batch_size": len(s)}
        self.log("loss_g", loss_g, prog_bar=True, **kw)
        self.log("loss_d", loss_d, **kw)
        self.log("cycle_l1", cyc_s, prog_bar=True, **kw)

    def on_train_epoch_end(self):
        for sch in self.lr_schedulers():
            sch.step()

    def configure_optimizers(self):
        c, n = self.cfg, self.nets
        g = [*n.g1.parameters(), *n.g2.parameters()]
        d = [*n.d_t.parameters(), *([] if n.d_s is None else n.d_s.parameters())]
        opt_g = torch.optim.Adam(g, lr=c.lr, betas=tuple(c.betas))
        opt_d = torch.optim.Adam(d, lr=c.lr, betas=tuple(c.betas))
        return [opt_g, opt_d], [schedule(opt_g, c.epochs, c.decay_epochs), schedule(opt_d, c.epochs, c.decay_epochs)]


def build(m) -> DANets:
    mm = m.model
    return init_weights(DANets(mm.ngf, mm.n_blocks, mm.ndf, m.train_da.one_sided),
                        generator=torch.Generator().manual_seed(m.seed))


def first_last(ctx, name: str) -> tuple[float, float]:
    pts = read_series(ctx.path / "logs" / "metrics.csv").get(name, [])
    return (pts[0][1], pts[-1][1]) if pts else (float("nan"), float("nan"))


def train_da(p) -> dict:
    ctx, c = p.ctx, p.m.train_da
    p.record()
    donor, recipient = p.slices("donor", "train", False), p.slices("recipient", "train", False)
    nets = build(p.m)
    ds = Unpaired(donor.t1, recipient.t1)
    ctx.log(f"DA: {len(donor)} donor + {len(recipient)} recipient T1 slices, {c.epochs}+{c.decay_epochs} epochs of "
            f"{-(-len(ds) // c.batch_size)} steps (batch {c.batch_size}), "
            f"{'one-sided (paper Eq. 1-3)' if c.one_sided else 'two-sided CycleGAN (released code)'}")
    t0 = time.perf_counter()
    trainer = training.make_trainer(ctx, c.epochs + c.decay_epochs)
    loader = training.ResumableLoader(ds, c.batch_size, p.m.seed)
    training.fit(trainer, LitDA(nets, c, p.m.seed), train_dataloaders=loader,
                 ckpt_path=training.resume_checkpoint(ctx.run))
    secs = time.perf_counter() - t0
    meta = {"pipeline": "mcgan", "net": "G1", "maps": f"{p.m.dataset.donor} T1 -> {p.m.dataset.name} T1 style",
            "ngf": str(p.m.model.ngf), "n_blocks": str(p.m.model.n_blocks)}
    training.save_weights(nets.g1, ctx.path / "checkpoints" / "g1.safetensors", meta)
    training.save_weights(nets.g2, ctx.path / "checkpoints" / "g2.safetensors", {**meta, "net": "G2"})
    ctx.learning_curves()
    first, last = first_last(ctx, "cycle_l1")
    figure(p, nets.g1.eval(), donor)
    return {"cycle_l1_first": first, "cycle_l1_last": last, "cycle_l1_drop": first - last,
            "steps": trainer.global_step, "train_seconds": round(secs, 3), "one_sided": c.one_sided,
            "params_g1": sum(x.numel() for x in nets.g1.parameters())}


def restyle(p, g1, t1) -> torch.Tensor:
    """G1 over [0, 1] slices (N, S, S) → [−1, 1] (N, 1, S, S), through the predictor."""
    x = torch.from_numpy(t1)[:, None] * 2 - 1
    pred = p.ctx.predictor()
    g = pred.setup(g1)
    return torch.cat([pred(g, x[i:i + 16]) for i in range(0, len(x), 16)]) if len(x) else x


def figure(p, g1, donor, n: int = 4) -> None:
    import numpy as np

    idx = np.linspace(0, len(donor) - 1, min(n, len(donor))).astype(int)
    out = (restyle(p, g1, donor.t1[idx])[:, 0].numpy() + 1) / 2
    with p.ctx.figure("da_restyled", nrows=2, ncols=len(idx), figsize=(2 * len(idx), 4.2), squeeze=False,
                      dpi=80) as (_, ax):
        for j, i in enumerate(idx):
            ax[0, j].imshow(donor.t1[i], cmap="gray", vmin=0, vmax=1)
            ax[0, j].set_title(f"donor T1 {donor.subject[i]}", fontsize=6)
            ax[1, j].imshow(out[j], cmap="gray", vmin=0, vmax=1)
            ax[1, j].set_title("G1: recipient style", fontsize=6)
            ax[0, j].axis("off")
            ax[1, j].axis("off")
