"""Step 2: the concept VAE on every trajectory image of a ``generate`` run (``train-vae``).

Loss (card): MSE + w_kld·KLD + L1 + (1 − SSIM, 11×11 Gaussian window σ 1.5, kornia) + perceptual (sum over every
VGG19 ReLU output of the feature MSE). KLD = −½ Σ(1 + log σ² − μ² − σ²), summed over the latent and averaged over
the batch. Adam, ExponentialLR(γ) stepped once per epoch. The perceptual term needs ImageNet VGG19 weights
(``vae.vgg19_weights``, torchvision names); ``vae.perceptual: false`` drops it (the fixture does, and says so).
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from medrun.errors import EnvError
from medrun.models.cdct import ConceptVAE, VGG19Features

from .. import training


def build_vae(m) -> ConceptVAE:
    v = m.vae
    return ConceptVAE(v.size, tuple(v.channels), v.latent)


def vgg(m):
    if not m.vae.perceptual:
        return None
    if not m.vae.vgg19_weights:
        raise EnvError("vae.perceptual needs ImageNet VGG19 weights, which cannot be downloaded here",
                       fix="-o vae.vgg19_weights=/path/vgg19.safetensors (torchvision names), "
                           "or -o vae.perceptual=false")
    net = VGG19Features()
    state = training.load_state(Path(m.vae.vgg19_weights).expanduser())
    net.load_state_dict({k: v for k, v in state.items() if k.startswith("features.")}, strict=False)
    return net.eval().requires_grad_(False)


def vae_loss(x, rec, mu, logvar, w_kld: float, perc=None) -> dict:
    from kornia.losses import ssim_loss

    parts = {"rec": F.mse_loss(rec, x), "l1": (rec - x).abs().mean(),
             "ssim": 2 * ssim_loss(rec, x, window_size=11),  # kornia returns (1 − SSIM)/2
             "kld": (-0.5 * (1 + logvar - mu ** 2 - logvar.exp()).sum(1)).mean()}
    parts["perc"] = sum(F.mse_loss(a, b) for a, b in zip(perc(rec), perc(x), strict=True)) if perc is not None \
        else torch.zeros((), device=x.device)
    parts["loss"] = parts["rec"] + w_kld * parts["kld"] + parts["l1"] + parts["ssim"] + parts["perc"]
    return parts


def lit_vae(net, m, perc):
    import lightning as L

    v = m.vae

    class Lit(L.LightningModule):
        def __init__(self):
            super().__init__()
            self.net, self.perc = net, perc

        def training_step(self, batch, i):
            x = batch
            rec, mu, logvar = self.net(x)
            parts = vae_loss(x, rec, mu, logvar, v.w_kld, self.perc)
            for k, val in parts.items():
                self.log("train_loss" if k == "loss" else f"train_{k}", val, on_step=False, on_epoch=True)
            return parts["loss"]

        def configure_optimizers(self):
            opt = torch.optim.Adam(self.net.parameters(), lr=v.lr)
            sched = torch.optim.lr_scheduler.ExponentialLR(opt, v.gamma)
            return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "epoch"}}

    return Lit()


def trajectory_images(p) -> torch.Tensor:
    from medrun.datasets.images import read_rgb

    with open(p.ctx.parent_file("trajectories.csv"), newline="") as fh:
        files = [r["file"] for r in csv.DictReader(fh)]
    ids = sorted({f.split("/")[1] for f in files})
    files += [f"trajectories/{i}/factual.png" for i in ids]
    arr = np.stack([read_rgb(p.ctx.parent.path / f, p.m.vae.size) for f in files])
    return torch.from_numpy(arr).permute(0, 3, 1, 2).float() / 255


def train_vae(p) -> dict:
    m = p.m
    x = trajectory_images(p)
    net, perc = build_vae(m), vgg(m)
    p.ctx.log(f"concept VAE on {len(x)} trajectory images" + ("" if perc else " (no perceptual term)"))
    trainer = training.make_trainer(p.ctx, m.vae.epochs)
    training.fit(trainer, lit_vae(net, m, perc),
                 train_dataloaders=training.ResumableLoader(x, m.vae.batch_size, m.seed),
                 ckpt_path=training.resume_checkpoint(p.ctx.run))
    training.save_weights(net, p.ctx.path / "checkpoints" / "model.safetensors",
                          {"pipeline": "counterfactual-ldm", "part": "concept-vae", "latent": m.vae.latent})
    p.ctx.learning_curves()
    from ..report import read_series

    series = [v for _, v in read_series(p.ctx.path / "logs" / "metrics.csv").get("train_loss", [])]
    pred = p.ctx.predictor()
    rec = pred(net, x[:8])[0]
    with p.ctx.figure("vae_reconstructions", nrows=2, ncols=min(8, len(x)), squeeze=False,
                      figsize=(1.4 * min(8, len(x)), 3)) as (_, ax):
        for j in range(min(8, len(x))):
            ax[0, j].imshow(x[j].permute(1, 2, 0).numpy())
            ax[1, j].imshow(rec[j].permute(1, 2, 0).numpy())
            ax[0, j].axis("off")
            ax[1, j].axis("off")
    return {"n_images": len(x), "loss_first_epoch": series[0] if series else None,
            "loss_last_epoch": series[-1] if series else None,
            "vae_loss_drop": series[0] - series[-1] if series else None, "perceptual": perc is not None,
            **training.count_params(net)}
