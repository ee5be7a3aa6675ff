"""cycleadvgan, the method (card: shared/papers/cycleadvgan.md).

Data: ISIC 2020 (``datasets.isic2020``; an 80/20 split grouped by ``patient_id``, stratified by ``target``) or the
Kermany chest X-rays (``datasets.chestxray``; the official train/test, a Kaggle ``val/`` folded into train). Domains:
M = malignant / PNEUMONIA (label 1), B = benign / NORMAL (label 0). Every image is converted to RGB and resized to
``img_size``² (bilinear); all attacks work in [0, 1] pixel space and the ImageNet mean/std normalisation sits inside
the classifier (``models.attack_targets``).

Stages:
- ``train``: the target classifier F (ResNet-50, DenseNet-121, the ViT-S stand-in for MedViT-S, or the CPU
  stand-ins) with the card's two-FC head, Adam lr 1e-5, batch 32, 20 epochs, RandomResizedCrop + flip on training
  batches, the epoch with the best validation AUC kept (a stratified ``val_fraction`` of train). Test metrics.
- ``eval`` / ``predict``: on a finished train run (``--run``/``--checkpoint``).
- ``attack`` on a finished train run: trains CycleAdvGAN against the frozen F, then attacks the test split with
  CycleAdvGAN (x_adv = G_M(x) for true label M, G_B(x) for B: one forward pass, no ε-ball), FGSM (ε 0.03), PGD
  (ε 0.03, α 0.01, 10 steps, random start) via captum with a cross-entropy ``loss_func`` on logits and [0, 1]
  bounds (captum's default loss, −log of the output, is for probabilities), and uniform noise rescaled to each
  image's CycleAdvGAN L2 norm (the card's sanity baseline). Writes ``adv/<method>.npy`` (uint8 N×H×W×3),
  ``per_case.csv``, overlays in ``figures/``, the generators' weights, and ``paper.md`` beside Tables 1–2.
- ``transfer``: the source × target ASR matrix: every model of ``transfer.models`` is a source and a target; the
  parent run's F is reused, the others are trained here with the ``train`` section, CycleAdvGAN is trained against
  each source, and each source's adversarial images are fed to every target.
- ``sweep-lambda``: one ``attack`` run per λ of ``sweep_lambda.lambdas`` (ordinary runs of their own, reused when
  complete), then a table and the ASR/SSIM-vs-λ plot (Fig. 2).

CycleAdvGAN (the card's reading of Eq. 1–5): ResNet generators G_M (M → B), G_B (B → M) and 70×70 PatchGAN
discriminators D_B, D_M (``models.cyclegan``, CycleGAN's N(0, 0.02) init); generator objective
L = (1 − λ)[L_GAN(G_M) + L_GAN(G_B) + λ_cyc·L_cyc + λ_idt·L_idt] + λ·L_adv with λ = 0.7, λ_cyc = 1 (no weight in
the paper) and λ_idt = 0 by default. The GAN terms use BCE-with-logits (non-saturating for G; ``gan_loss: lsgan``
is CycleGAN's MSE); the discriminators minimise ½[BCE(D(real), 1) + BCE(D(pool(fake)), 0)] with a 50-image history
pool. **Sign correction (card):** Eq. 4 as printed minimises CE to the true class, which would help F; L_adv is the
AdvGAN margin loss mean(max(Z_y − max_{j≠y} Z_j, −κ)), κ = 0, on G_M(m) (y = M) and G_B(b) (y = B), or
``adv_loss: ce-flip`` = CE(F(x_fake), 1 − y). ``recon_cls`` adds CE(F(G_B(G_M(m))), M) + CE(F(G_M(G_B(b))), B)
(off by default). F is frozen in eval mode; gradients reach only the generators. Adam lr 2e-4, β (0.5, 0.999),
batch 1, 100 constant + 100 linearly decaying epochs (CycleGAN's recipe; the paper gives none). Lightning with
``automatic_optimization = False`` and two optimisers (generators, discriminators).

Choices where the card is silent or offers options:
- GAN training data: all non-test images of the minority domain and a seeded same-size sample of the majority;
  an epoch pairs them in a fixed order shuffled per epoch (CycleGAN draws an unaligned partner at random).
- ASR counts test images F classifies correctly when clean (``n_attacked``); clean accuracy is logged beside it.
  SSIM (skimage, ``channel_axis=-1``, ``data_range=1``) is averaged over the same images.
- Resuming an interrupted attack run restores generators, discriminators and optimisers from ``last.ckpt`` but
  starts the history pools empty (they are not checkpointed).
- F's training drops the last partial batch of an epoch (BatchNorm cannot train on a batch of one).
- ``predict`` without ``predict.input`` predicts the eval split; ``transfer`` trains its extra targets without
  checkpoints (an interrupted transfer run starts those again).
- Inception-V3 is not available (no torchvision), SMIA and HFC are not implemented; the paper's columns for them
  are shown in paper.md for reference.
- The fixture smoke (``<dataset>.fixture.yaml``) runs at 32² with the 4-conv CNN as F and a tiny CycleAdvGAN
  (ngf = ndf = 8, 2 blocks, 120 steps, lr 1e-3, λ_cyc 10, λ_idt 2): the card's size (ResNet-18 at 64², ngf 16,
  3 blocks, ~400 steps) gave FGSM ASR 0.375 and SSIM 0.549 on the ISIC fixture, below or at its thresholds.
"""

from __future__ import annotations

import io
import time
import warnings
from collections import Counter
from pathlib import Path

import lightning as L
import numpy as np
import torch
import torch.nn.functional as F

from medrun.artifacts import atomic_write
from medrun.datasets import chestxray, isic2020
from medrun.datasets.images import list_images
from medrun.errors import DataError, UsageError
from medrun.metrics import classification as cm
from medrun.models import attack_targets
from medrun.models.cyclegan import CycleGAN, ImagePool, init_weights

from .. import training
from ..base import Pipeline
from ..report import confusion_png, learning_curves, markdown_table, paper_md, save_figure
from ..tasks import classification as clf

# F stays in eval mode inside the GAN's training, and captum notes that it sets requires_grad on the inputs
for _pattern in (".*module\\(s\\) in eval mode at the start of training.*",
                 ".*required_grads has been set automatically.*"):
    warnings.filterwarnings("ignore", message=_pattern)

# Tables 1 and 2 (white-box ASR / SSIM), by dataset and target model.
PAPER_WHITEBOX = {
    "isic2020": {
        "resnet50": {"fgsm": (.8973, .7965), "pgd": (1.0, .8398), "smia": (.8968, .8835), "hfc": (.9532, .8979),
                     "cycleadvgan": (.9961, .9126)},
        "densenet121": {"fgsm": (.8864, .8165), "pgd": (1.0, .8263), "smia": (.8234, .8879), "hfc": (.9627, .8825),
                        "cycleadvgan": (.9895, .9038)},
        "inception_v3": {"fgsm": (.9012, .7983), "pgd": (1.0, .8204), "smia": (.9194, .8991), "hfc": (.9367, .8817),
                         "cycleadvgan": (.9529, .9021)},
    },
    "chestxray": {
        "resnet50": {"fgsm": (.9032, .8043), "pgd": (.9954, .8264), "smia": (.9652, .8863), "hfc": (.9583, .8753),
                     "cycleadvgan": (.9918, .8937)},
        "densenet121": {"fgsm": (.9124, .8139), "pgd": (.9961, .8157), "smia": (.9531, .8755), "hfc": (.9724, .8861),
                        "cycleadvgan": (.9986, .8924)},
        "inception_v3": {"fgsm": (.9046, .8231), "pgd": (.9929, .8167), "smia": (.9643, .8924), "hfc": (.9514, .8961),
                         "cycleadvgan": (.9962, .9034)},
    },
}
# Tables 3 and 4 ("Ours" row): transfer ASR source → target. MedViT is the vit_s stand-in here.
PAPER_TRANSFER = {
    "isic2020": {("resnet50", "densenet121"): .4651, ("resnet50", "inception_v3"): .4867, ("resnet50", "vit_s"): .4965,
                 ("densenet121", "resnet50"): .4142, ("densenet121", "inception_v3"): .3649, ("densenet121", "vit_s"): .4621,
                 ("inception_v3", "resnet50"): .4176, ("inception_v3", "densenet121"): .4517, ("inception_v3", "vit_s"): .4784,
                 ("vit_s", "resnet50"): .5123, ("vit_s", "densenet121"): .4697, ("vit_s", "inception_v3"): .4723},
    "chestxray": {("resnet50", "densenet121"): .4791, ("resnet50", "inception_v3"): .3961, ("resnet50", "vit_s"): .5185,
                  ("densenet121", "resnet50"): .4293, ("densenet121", "inception_v3"): .4029, ("densenet121", "vit_s"): .4721,
                  ("inception_v3", "resnet50"): .4381, ("inception_v3", "densenet121"): .4483, ("inception_v3", "vit_s"): .4781,
                  ("vit_s", "resnet50"): .5123, ("vit_s", "densenet121"): .4697, ("vit_s", "inception_v3"): .4723},
}
ARCH_NAMES = {"resnet50": "ResNet-50", "densenet121": "DenseNet-121", "inception_v3": "Inception-V3",
              "vit_s": "ViT-S (MedViT-S stand-in)", "resnet18": "ResNet-18 (stand-in)", "small_cnn": "small CNN (stand-in)"}
METHOD_NAMES = {"cycleadvgan": "CycleAdvGAN (ours)", "fgsm": "FGSM", "pgd": "PGD", "noise": "uniform noise (same L2)",
                "smia": "SMIA", "hfc": "HFC"}


# -- target classifier ---------------------------------------------------------------------------------------
def random_resized_crop(x: torch.Tensor, scale=(0.08, 1.0), ratio=(3 / 4, 4 / 3)) -> torch.Tensor:
    """RandomResizedCrop to the input size plus a random horizontal flip, per image (bilinear, affine grid)."""
    n = len(x)
    area = torch.empty(n).uniform_(*scale)
    logr = torch.empty(n).uniform_(np.log(ratio[0]), np.log(ratio[1]))
    r = torch.exp(logr)
    w, h = torch.sqrt(area * r).clamp(max=1.0), torch.sqrt(area / r).clamp(max=1.0)
    cx, cy = (torch.rand(n) * 2 - 1) * (1 - w), (torch.rand(n) * 2 - 1) * (1 - h)
    flip = torch.where(torch.rand(n) < 0.5, -1.0, 1.0)
    theta = torch.zeros(n, 2, 3)
    theta[:, 0, 0], theta[:, 0, 2], theta[:, 1, 1], theta[:, 1, 2] = w * flip, cx, h, cy
    grid = F.affine_grid(theta.to(x), list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)


class LitTarget(L.LightningModule):
    """F with cross-entropy and Adam; inputs arrive as raw 0–255 values and are scaled to [0, 1] here. Keeps the
    weights of the epoch with the best validation AUROC."""

    def __init__(self, net, lr: float, augment: bool):
        super().__init__()
        self.net, self.lr, self.augment = net, lr, augment
        self.best_auc, self.best_loss, self.best_epoch, self.best_state = -1.0, float("inf"), -1, None
        self._val = []

    def forward(self, x):
        return self.net(x / 255.0)

    def training_step(self, batch, batch_idx):
        x, y = batch
        x = x / 255.0
        if self.augment:
            x = random_resized_crop(x)
        logits = self.net(x)
        loss = F.cross_entropy(logits, y)
        self.log("train_loss", loss, on_step=False, on_epoch=True, prog_bar=True, batch_size=len(y))
        self.log("train_acc", (logits.argmax(1) == y).float().mean(), on_step=False, on_epoch=True, batch_size=len(y))
        return loss

    def validation_step(self, batch, batch_idx):
        x, y = batch
        logits = self(x)
        self.log("val_loss", F.cross_entropy(logits, y), on_step=False, on_epoch=True, prog_bar=True, batch_size=len(y))
        self._val.append((torch.softmax(logits, 1)[:, 1].detach().cpu(), y.cpu(),
                          F.cross_entropy(logits, y, reduction="none").detach().cpu()))

    def on_validation_epoch_end(self):
        p, y, losses = (torch.cat(t).numpy() for t in zip(*self._val, strict=True))
        self._val = []
        loss = float(losses.mean())
        auc = cm.auroc(y, np.stack([1 - p, p], 1), average="macro") if len(set(y.tolist())) == 2 else float("nan")
        acc = float(((p >= 0.5).astype(int) == y).mean())
        self.log("val_auc", float(auc), prog_bar=True)
        self.log("val_acc", acc)
        if not np.isnan(auc) and (auc, -loss) > (self.best_auc, -self.best_loss):  # AUC ties: the lower loss
            self.best_auc, self.best_loss, self.best_epoch = float(auc), loss, self.current_epoch
            self.best_state = {k: v.detach().clone() for k, v in self.net.state_dict().items()}

    def on_save_checkpoint(self, checkpoint):
        checkpoint["best"] = {"auc": self.best_auc, "loss": self.best_loss, "epoch": self.best_epoch,
                              "state": self.best_state}

    def on_load_checkpoint(self, checkpoint):
        best = checkpoint.get("best") or {}
        self.best_auc, self.best_loss = best.get("auc", -1.0), best.get("loss", float("inf"))
        self.best_epoch, self.best_state = best.get("epoch", -1), best.get("state")

    def configure_optimizers(self):
        return torch.optim.Adam(self.parameters(), lr=self.lr)


# -- CycleAdvGAN ---------------------------------------------------------------------------------------------
class PairedDomains(torch.utils.data.Dataset):
    """Item i: (an M image, a B image), both float 3×S×S in [0, 1]."""

    def __init__(self, m: torch.Tensor, b: torch.Tensor):
        self.m, self.b = m, b

    def __len__(self):
        return max(len(self.m), len(self.b))

    def __getitem__(self, i):
        return self.m[i % len(self.m)], self.b[i % len(self.b)]


def adv_loss(logits: torch.Tensor, y: int, kind: str, kappa: float) -> torch.Tensor:
    """The corrected L_adv for images whose true class is ``y``: minimising it pushes F away from y."""
    if kind == "ce-flip":
        return F.cross_entropy(logits, torch.full((len(logits),), 1 - y, dtype=torch.long, device=logits.device))
    other = torch.cat([logits[:, :y], logits[:, y + 1:]], 1).max(1).values
    return torch.clamp(logits[:, y] - other, min=-kappa).mean()


class LitCycleAdvGAN(L.LightningModule):
    def __init__(self, gan: CycleGAN, target: torch.nn.Module, cfg, seed: int = 0):
        super().__init__()
        self.automatic_optimization = False
        self.gan, self.f, self.cfg = gan, target, cfg
        for p in self.f.parameters():
            p.requires_grad_(False)
        gen = torch.Generator().manual_seed(seed)
        self.pool_b, self.pool_m = ImagePool(cfg.pool_size, gen), ImagePool(cfg.pool_size, gen)

    def _gan(self, logits: torch.Tensor, real: bool) -> torch.Tensor:
        t = torch.ones_like(logits) if real else torch.zeros_like(logits)
        if self.cfg.gan_loss == "lsgan":
            return F.mse_loss(logits, t)
        return F.binary_cross_entropy_with_logits(logits, t)

    def training_step(self, batch, batch_idx):
        c, g = self.cfg, self.gan
        self.f.eval()
        m01, b01 = batch
        m, b = m01 * 2 - 1, b01 * 2 - 1  # generators work in [−1, 1]
        opt_g, opt_d = self.optimizers()
        # generators
        fake_b, fake_m = g.g_m(m), g.g_b(b)  # benign-looking from malignant, malignant-looking from benign
        rec_m, rec_b = g.g_b(fake_b), g.g_m(fake_m)
        for d in (g.d_b, g.d_m):
            d.requires_grad_(False)
        l_gan = self._gan(g.d_b(fake_b), True) + self._gan(g.d_m(fake_m), True)
        l_cyc = F.l1_loss(rec_m, m) + F.l1_loss(rec_b, b)
        l_idt = (F.l1_loss(g.g_m(b), b) + F.l1_loss(g.g_b(m), m)) if c.lambda_idt > 0 else torch.zeros((), device=m.device)
        z_b, z_m = self.f((fake_b + 1) / 2), self.f((fake_m + 1) / 2)
        l_adv = adv_loss(z_b, 1, c.adv_loss, c.kappa) + adv_loss(z_m, 0, c.adv_loss, c.kappa)
        if c.recon_cls:
            n = len(m)
            l_adv = l_adv + F.cross_entropy(self.f((rec_m + 1) / 2), torch.ones(n, dtype=torch.long, device=m.device)) \
                + F.cross_entropy(self.f((rec_b + 1) / 2), torch.zeros(len(b), dtype=torch.long, device=m.device))
        loss_g = (1 - c.lam) * (l_gan + c.lambda_cyc * l_cyc + c.lambda_idt * l_idt) + c.lam * l_adv
        opt_g.zero_grad()
        self.manual_backward(loss_g)
        opt_g.step()
        # discriminators
        for d in (g.d_b, g.d_m):
            d.requires_grad_(True)
        pb, pm = self.pool_b.query(fake_b), self.pool_m.query(fake_m)
        loss_d = 0.5 * (self._gan(g.d_b(b), True) + self._gan(g.d_b(pb), False)) \
            + 0.5 * (self._gan(g.d_m(m), True) + self._gan(g.d_m(pm), False))
        opt_d.zero_grad()
        self.manual_backward(loss_d)
        opt_d.step()
        with torch.no_grad():
            fooled = ((z_b.argmax(1) != 1).float().mean() + (z_m.argmax(1) != 0).float().mean()) / 2
        kw = {"on_step": False, "on_epoch": True, "batch_size": len(m)}
        self.log("loss_g", loss_g, prog_bar=True, **kw)
        self.log("loss_d", loss_d, **kw)
        self.log("loss_adv", l_adv, **kw)
        self.log("loss_cyc", l_cyc, **kw)
        self.log("fooled", fooled, prog_bar=True, **kw)

    def on_train_epoch_end(self):
        for s in self.lr_schedulers():
            s.step()

    def configure_optimizers(self):
        c, g = self.cfg, self.gan
        opt_g = torch.optim.Adam([*g.g_m.parameters(), *g.g_b.parameters()], lr=c.lr, betas=tuple(c.betas))
        opt_d = torch.optim.Adam([*g.d_b.parameters(), *g.d_m.parameters()], lr=c.lr, betas=tuple(c.betas))

        def rule(epoch: int) -> float:  # constant for `epochs`, then linear to 0 over `decay_epochs`
            return 1.0 - max(0, epoch + 1 - c.epochs) / float(c.decay_epochs + 1)

        return [opt_g, opt_d], [torch.optim.lr_scheduler.LambdaLR(opt_g, rule), torch.optim.lr_scheduler.LambdaLR(opt_d, rule)]


@torch.no_grad()
def translate(gen: torch.nn.Module, x: torch.Tensor, batch: int = 32) -> torch.Tensor:
    gen.eval()
    return torch.cat([(gen(x[i:i + batch] * 2 - 1) + 1) / 2 for i in range(0, len(x), batch)]).clamp(0, 1)


@torch.no_grad()
def logits_of(net: torch.nn.Module, x: torch.Tensor, batch: int = 32) -> torch.Tensor:
    net.eval()
    return torch.cat([net(x[i:i + batch]) for i in range(0, len(x), batch)])


def ssim(x: torch.Tensor, y: torch.Tensor) -> np.ndarray:
    """Per-image SSIM of [0, 1] images (N, 3, H, W): skimage, channel_axis=-1, data_range=1."""
    from skimage.metrics import structural_similarity

    a, b = x.permute(0, 2, 3, 1).double().numpy(), y.permute(0, 2, 3, 1).double().numpy()
    win = min(7, a.shape[1] - (1 - a.shape[1] % 2), a.shape[2] - (1 - a.shape[2] % 2))
    return np.array([structural_similarity(p, q, channel_axis=-1, data_range=1.0, win_size=win) for p, q in zip(a, b, strict=True)])


def gradient_attack(net, x: torch.Tensor, y: torch.Tensor, method: str, a, seed: int) -> torch.Tensor:
    """FGSM / PGD from captum, untargeted, with cross-entropy on logits and [0, 1] bounds."""
    from captum.robust import FGSM, PGD

    net.eval()

    def loss(out, target):
        return F.cross_entropy(out, target, reduction="none")

    torch.manual_seed(seed)
    out = []
    for i in range(0, len(x), a.batch_eval):
        xb, yb = x[i:i + a.batch_eval], y[i:i + a.batch_eval]
        if method == "fgsm":
            adv = FGSM(net, loss_func=loss, lower_bound=0.0, upper_bound=1.0).perturb(xb, epsilon=a.fgsm_eps, target=yb)
        else:
            adv = PGD(net, loss_func=loss, lower_bound=0.0, upper_bound=1.0).perturb(
                xb, radius=a.pgd_eps, step_size=a.pgd_alpha, step_num=a.pgd_steps, target=yb,
                random_start=a.pgd_random_start, norm="Linf")
        out.append(adv.detach())
    return torch.cat(out).clamp(0, 1)


def same_l2_noise(x: torch.Tensor, ref: torch.Tensor, seed: int) -> torch.Tensor:
    """Uniform noise scaled per image to ||ref − x||₂, added and clipped to [0, 1]."""
    g = torch.Generator().manual_seed(seed)
    u = torch.rand(x.shape, generator=g) * 2 - 1
    norm = (ref - x).flatten(1).norm(dim=1)
    u = u * (norm / u.flatten(1).norm(dim=1).clamp_min(1e-12)).view(-1, 1, 1, 1)
    return (x + u).clamp(0, 1)


def _npy(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, arr)
    return buf.getvalue()


def _uint8(x: torch.Tensor) -> np.ndarray:
    return (x.permute(0, 2, 3, 1).numpy() * 255).round().astype(np.uint8)


class CycleAdvGan(Pipeline):
    def build_model(self, arch: str | None = None):
        mm = self.m.model
        return attack_targets.build(arch or mm.arch, self.m.dataset.img_size, mm.hidden, mm.dropout)

    def build_gan(self) -> CycleGAN:
        a = self.m.attack
        blocks = a.n_blocks or (9 if self.m.dataset.img_size >= 256 else 6)
        gan = CycleGAN(a.ngf, a.ndf, blocks)
        return init_weights(gan, generator=torch.Generator().manual_seed(self.m.seed))

    # -- data -----------------------------------------------------------------------------------------------
    @property
    def root(self) -> Path:
        return self.ctx.data_roots[self.m.dataset.name]

    def classes(self) -> list[str]:
        return isic2020.CLASSES if self.m.dataset.name == "isic2020" else chestxray.CLASSES

    def splits(self) -> dict[str, list]:
        d = self.m.dataset
        if d.name == "isic2020":
            train, test = isic2020.split(isic2020.read(self.root), d.split_seed, d.test_fraction_folds)
        else:
            train, test = chestxray.read(self.root, "train"), chestxray.read(self.root, "test")
        fit, val = clf.stratified_split(train, d.val_fraction, d.split_seed)
        splits = {"train": fit, "val": val, "test": test}
        self._record_splits(splits)
        return splits

    def _record_splits(self, splits: dict) -> None:
        import json

        lock = self.ctx.run.path / "data.lock.json"
        data = json.loads(lock.read_text())
        root = self.root.resolve()
        data["splits"] = {k: [Path(s.path).resolve().relative_to(root).as_posix() for s in v] for k, v in splits.items()}
        self.ctx.run.write_json("data.lock.json", data)

    def images(self, samples) -> torch.Tensor:
        """[0, 1] float tensor (N, 3, S, S); an unreadable file is a DataError naming it."""
        ds = clf.ImageSamples(samples, self.m.dataset.img_size)
        return torch.stack([ds[i][0] for i in range(len(ds))]) / 255.0 if len(ds) else torch.zeros(0, 3, 1, 1)

    # -- stage: train (target classifier) -------------------------------------------------------------------
    def _fit_target(self, arch: str, splits: dict, *, checkpoint: bool = True):
        t, size = self.m.train, self.m.dataset.img_size
        net = self._initial_model(arch)
        module = LitTarget(net, t.lr, t.augment)
        trainer = training.make_trainer(self.ctx, t.epochs, checkpoint=checkpoint, logger=checkpoint)
        t0 = time.perf_counter()
        training.fit(trainer, module,
                     train_dataloaders=self._train_loader(clf.ImageSamples(splits["train"], size)),
                     val_dataloaders=clf.loader(clf.ImageSamples(splits["val"], size), t.batch_size, False, t.num_workers),
                     ckpt_path=training.resume_checkpoint(self.ctx.run) if checkpoint else None)
        if module.best_state is not None:
            net.load_state_dict(module.best_state)
        return net.eval(), {"best_epoch": module.best_epoch + 1, "best_val_auc": module.best_auc,
                            "secs_per_epoch": round((time.perf_counter() - t0) / t.epochs, 3)}

    def _train_loader(self, ds):
        """Shuffled by (seed, epoch) and resumable; the last partial batch is dropped (BatchNorm cannot train on a
        batch of one, which a small split can leave)."""
        t = self.m.train
        return training.ResumableLoader(ds, t.batch_size, self.m.seed, drop_last=len(ds) > t.batch_size,
                                        num_workers=t.num_workers, persistent_workers=t.num_workers > 0)

    def _initial_model(self, arch: str):
        net = self.build_model(arch)
        if self.m.model.weights and arch == self.m.model.arch:
            state = training.load_state(Path(self.m.model.weights).expanduser())
            own = net.features.state_dict()
            usable = {k.removeprefix("features."): v for k, v in state.items()}
            usable = {k: v for k, v in usable.items() if k in own and tuple(own[k].shape) == tuple(v.shape)}
            if len(usable) < len(own) // 2:
                raise UsageError(f"model.weights {self.m.model.weights} fit only {len(usable)} of {len(own)} backbone "
                                 f"tensors of {arch}", fix="pass a state dict of the same architecture")
            net.features.load_state_dict(usable, strict=False)
            missing = sorted(set(own) - set(usable))
            self.ctx.log(f"model.weights: loaded {len(usable)} of {len(own)} backbone tensors of {arch}"
                         + (f"; {len(missing)} left at random init (first: {missing[0]})" if missing else ""))
            self.ctx.run.update_info(weights_loaded=len(usable), weights_missing=len(missing))
        elif arch in ("resnet50", "densenet121", "vit_s"):
            self.ctx.log(f"{arch}: no model.weights given, starting from random init (the paper fine-tunes ImageNet weights)")
        return net

    def train(self) -> dict:
        splits = self.splits()
        classes = self.classes()
        counts = {k: Counter(classes[s.label] for s in v) for k, v in splits.items()}
        self.ctx.log("  ".join(f"{k} {len(v)} ({', '.join(f'{c} {counts[k][c]}' for c in classes)})" for k, v in splits.items()))
        net, info = self._fit_target(self.m.model.arch, splits)
        run = self.ctx.run
        training.save_weights(net, run.path / "checkpoints" / "model.safetensors",
                              {"pipeline": "cycleadvgan", "arch": self.m.model.arch, "classes": ",".join(classes)})
        learning_curves(run.path / "logs" / "metrics.csv", run.path / "figures" / "learning_curves.png")
        metrics = self._report(net, splits["test"], "test")
        metrics.update(info)
        metrics.update(training.count_params(net))
        return metrics

    def _report(self, net, samples, split: str) -> dict:
        classes = self.classes()
        metrics, rows = clf.evaluate(_Scaled(net), samples, self.m.dataset.img_size, classes, self.m.train.batch_size)
        metrics.update(split=split, auroc=metrics["auroc_macro"], arch=self.m.model.arch)
        run = self.ctx.run
        clf.write_csv(run.path / "per_case.csv", rows)
        confusion_png(metrics["confusion_matrix"], classes, run.path / "figures" / "confusion_matrix.png",
                      f"{self.m.dataset.name} {split}")
        self.ctx.log(f"{split}: accuracy {metrics['accuracy']:.4f}  AUROC {metrics['auroc']:.4f}")
        run.write_text("paper.md", self._paper_md(metrics, [clf.per_class_table(metrics), _TRAIN_NOTES],
                                                  f"CycleAdvGAN target classifier F ({ARCH_NAMES[self.m.model.arch]})"))
        return metrics

    def _paper_md(self, metrics: dict, sections: list[str], title: str) -> str:
        return paper_md(self.ctx.spec, self.m, metrics, self.ctx, title=title, sections=sections, present_only=True)

    # -- eval / predict on a finished run ----------------------------------------------------------------------
    def eval(self) -> dict:
        split = self.m.eval.split
        return self._report(self.trained_model().eval(), self.splits()[split], split)

    def predict(self) -> dict:
        net = self.trained_model().eval()
        classes = self.classes()
        if self.m.predict.input:
            folder = Path(self.m.predict.input)
            if not folder.is_dir():
                raise DataError(f"predict.input folder not found: {folder}", fix="-o predict.input=/path/to/images")
            samples = [isic2020.Sample(p, -1) for p in list_images(folder)]
            if not samples:
                raise DataError(f"no images in {folder}", fix="point predict.input at a folder of .jpg/.jpeg/.png files")
        else:
            samples = self.splits()[self.m.eval.split]
        probs = clf.predict_probs(_Scaled(net), clf.ImageSamples(samples, self.m.dataset.img_size), self.m.train.batch_size)
        rows = [{"file": str(s.path), "pred": classes[int(p.argmax())], **{f"prob_{c}": round(float(p[j]), 6)
                 for j, c in enumerate(classes)}} for s, p in zip(samples, probs, strict=True)]
        clf.write_csv(self.ctx.run.path / "per_case.csv", rows)
        counts = Counter(r["pred"] for r in rows)
        self.ctx.log(f"predicted {len(rows)} images: " + ", ".join(f"{c} {counts[c]}" for c in classes))
        return {"n": len(rows), "predicted": {c: counts[c] for c in classes}}

    # -- CycleAdvGAN training --------------------------------------------------------------------------------
    def gan_domains(self, samples) -> tuple[list, list]:
        """All images of the minority domain and a seeded same-size sample of the majority: (M, B)."""
        m = [s for s in samples if s.label == 1]
        b = [s for s in samples if s.label == 0]
        if not m or not b:
            raise DataError(f"CycleAdvGAN needs images of both classes in the training split (M {len(m)}, B {len(b)})",
                            fix="check the dataset's labels")
        rng = np.random.default_rng(self.m.seed)
        if len(m) < len(b):
            b = [b[i] for i in sorted(rng.choice(len(b), len(m), replace=False))]
        elif len(b) < len(m):
            m = [m[i] for i in sorted(rng.choice(len(m), len(b), replace=False))]
        return m, b

    def fit_gan(self, target, samples, *, checkpoint: bool = True, lam: float | None = None) -> CycleGAN:
        a = self.m.attack if lam is None else self.m.attack.model_copy(update={"lam": lam})
        m_s, b_s = self.gan_domains(samples)
        gan = self.build_gan()
        module = LitCycleAdvGAN(gan, target, a, self.m.seed)
        ds = PairedDomains(self.images(m_s), self.images(b_s))
        self.ctx.log(f"CycleAdvGAN: {len(m_s)} M + {len(b_s)} B images, λ {a.lam}, {a.epochs}+{a.decay_epochs} epochs "
                     f"of {-(-len(ds) // a.batch_size)} steps (batch {a.batch_size})")
        trainer = training.make_trainer(self.ctx, a.epochs + a.decay_epochs, checkpoint=checkpoint, logger=checkpoint)
        training.fit(trainer, module, train_dataloaders=clf.loader(ds, a.batch_size, True, seed=self.m.seed),
                     ckpt_path=training.resume_checkpoint(self.ctx.run) if checkpoint else None)
        return gan.eval()

    def attack_images(self, net, gan, x: torch.Tensor, y: torch.Tensor, methods) -> dict[str, torch.Tensor]:
        a, out = self.m.attack, {}
        if "cycleadvgan" in methods or "noise" in methods:
            to_b, to_m = translate(gan.g_m, x, a.batch_eval), translate(gan.g_b, x, a.batch_eval)
            out["cycleadvgan"] = torch.where((y == 1).view(-1, 1, 1, 1), to_b, to_m)
        for method in ("fgsm", "pgd"):
            if method in methods:
                out[method] = gradient_attack(net, x, y, method, a, self.m.seed)
        if "noise" in methods:
            out["noise"] = same_l2_noise(x, out["cycleadvgan"], self.m.seed)
        return {k: v for k, v in out.items() if k in methods}

    # -- stage: attack ----------------------------------------------------------------------------------------
    def attack(self) -> dict:
        a, run = self.m.attack, self.ctx.run
        net = self.trained_model().eval()
        for p in net.parameters():
            p.requires_grad_(False)
        splits = self.splits()
        train, test = splits["train"] + splits["val"], splits["test"]
        gan = self.fit_gan(net, train) if ("cycleadvgan" in a.methods or "noise" in a.methods) else None
        if gan is not None:
            training.save_weights(gan.g_m, run.path / "checkpoints" / "g_m.safetensors", {"maps": "M->B"})
            training.save_weights(gan.g_b, run.path / "checkpoints" / "g_b.safetensors", {"maps": "B->M"})
            learning_curves(run.path / "logs" / "metrics.csv", run.path / "figures" / "gan_losses.png")
        x = self.images(test)
        y = torch.tensor([s.label for s in test])
        t0 = time.perf_counter()
        advs = self.attack_images(net, gan, x, y, a.methods)
        clean = logits_of(net, x, a.batch_eval).argmax(1)
        correct = clean == y
        classes = self.classes()
        rows = [{"file": Path(s.path).resolve().relative_to(self.root.resolve()).as_posix(), "label": classes[s.label],
                 "clean_pred": classes[int(p)], "clean_correct": int(c)} for s, p, c in zip(test, clean, correct, strict=True)]
        metrics: dict = {"arch": self.m.model.arch, "lam": a.lam, "n_test": len(test), "n_attacked": int(correct.sum()),
                         "clean_accuracy": float(correct.float().mean())}
        for method, adv in advs.items():
            pred = logits_of(net, adv, a.batch_eval).argmax(1)
            success = (pred != y) & correct
            s = ssim(x, adv)
            l2 = (adv - x).flatten(1).norm(dim=1)
            linf = (adv - x).flatten(1).abs().max(1).values
            sel = correct.numpy()
            metrics[f"asr_{method}"] = float(success[correct].float().mean()) if sel.any() else float("nan")
            metrics[f"ssim_{method}"] = float(s[sel].mean()) if sel.any() else float("nan")
            metrics[f"l2_{method}"] = float(l2[correct].mean()) if sel.any() else float("nan")
            metrics[f"linf_{method}"] = float(linf[correct].mean()) if sel.any() else float("nan")
            atomic_write(run.path / "adv" / f"{method}.npy", _npy(_uint8(adv)))
            for i, r in enumerate(rows):
                r.update({f"pred_{method}": classes[int(pred[i])], f"success_{method}": int(success[i]),
                          f"ssim_{method}": round(float(s[i]), 6), f"l2_{method}": round(float(l2[i]), 6)})
            self.ctx.log(f"{METHOD_NAMES[method]}: ASR {metrics[f'asr_{method}']:.4f}  SSIM {metrics[f'ssim_{method}']:.4f}"
                         f"  (L2 {metrics[f'l2_{method}']:.3f}, L∞ {metrics[f'linf_{method}']:.3f})")
        if "cycleadvgan" in advs and "noise" in advs:
            metrics["asr_gain_over_noise"] = metrics["asr_cycleadvgan"] - metrics["asr_noise"]
        metrics["attack_seconds"] = round(time.perf_counter() - t0, 3)
        atomic_write(run.path / "adv" / "clean.npy", _npy(_uint8(x)))
        clf.write_csv(run.path / "per_case.csv", rows)
        self._overlays(test, x, advs, clean, correct)
        run.write_text("paper.md", self._paper_md(metrics, self._attack_sections(metrics),
                                                  f"CycleAdvGAN white-box attack on {ARCH_NAMES[self.m.model.arch]}"))
        return metrics

    def _attack_sections(self, metrics: dict) -> list[str]:
        d, arch = self.m.dataset.name, self.m.model.arch
        ref_arch = arch if arch in PAPER_WHITEBOX[d] else "resnet50"
        ref = PAPER_WHITEBOX[d][ref_arch]
        rows = []
        for method in ("fgsm", "pgd", "smia", "hfc", "cycleadvgan", "noise"):
            ours = (metrics.get(f"asr_{method}"), metrics.get(f"ssim_{method}"))
            theirs = ref.get(method, (None, None))
            if ours == (None, None) and theirs == (None, None):
                continue
            rows.append([METHOD_NAMES[method], *ours, *theirs])
        note = "" if ref_arch == arch else f" (this run's F is {ARCH_NAMES[arch]}; the paper's column is {ARCH_NAMES[ref_arch]})"
        table = markdown_table(["method", "ASR (run)", "SSIM (run)", "ASR (paper)", "SSIM (paper)"], rows)
        a = self.m.attack
        return [f"## White-box ASR / SSIM, Tables 1–2{note}\n\nASR over the {metrics['n_attacked']} of {metrics['n_test']} "
                f"test images F classifies correctly (clean accuracy {metrics['clean_accuracy']:.4f}); λ {a.lam}, "
                f"λ_cyc {a.lambda_cyc}, λ_idt {a.lambda_idt}, adversarial loss {a.adv_loss}.\n\n" + table, _ATTACK_NOTES]

    def _overlays(self, samples, x, advs: dict, clean, correct) -> None:
        n = self.m.attack.overlays
        if not n or not advs:
            return
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        classes = self.classes()
        names = list(advs)
        order = [i for i in range(len(samples)) if correct[i]][:n]
        for i in order:
            cols = 1 + 2 * len(names)
            fig, axes = plt.subplots(1, cols, figsize=(2.0 * cols, 2.4), squeeze=False)
            axes[0, 0].imshow(x[i].permute(1, 2, 0).numpy())
            axes[0, 0].set_title(f"clean: {classes[samples[i].label]}", fontsize=7)
            for j, name in enumerate(names):
                adv = advs[name][i]
                axes[0, 1 + 2 * j].imshow(adv.permute(1, 2, 0).numpy())
                axes[0, 1 + 2 * j].set_title(name, fontsize=7)
                diff = (adv - x[i]).abs().mean(0).numpy()
                axes[0, 2 + 2 * j].imshow(diff, cmap="magma", vmin=0, vmax=max(1e-6, float(diff.max())))
                axes[0, 2 + 2 * j].set_title(f"|Δ| {name}", fontsize=7)
            for ax in axes[0]:
                ax.axis("off")
            fig.tight_layout()
            out = self.ctx.run.path / "figures" / f"overlay_{Path(samples[i].path).stem}.png"
            save_figure(fig, out, dpi=90)

    # -- stage: transfer ----------------------------------------------------------------------------------------
    def transfer(self) -> dict:
        tr, run = self.m.transfer, self.ctx.run
        parent_arch = self.m.model.arch
        if parent_arch not in tr.models:
            raise UsageError(f"transfer.models {tr.models} does not include the parent run's arch {parent_arch}",
                             fix=f"add {parent_arch} to transfer.models")
        splits = self.splits()
        train, test = splits["train"] + splits["val"], splits["test"]
        nets = {parent_arch: self.trained_model().eval()}
        for arch in tr.models:
            if arch not in nets:
                self.ctx.log(f"training target {ARCH_NAMES[arch]}")
                nets[arch], _ = self._fit_target(arch, splits, checkpoint=False)
                training.save_weights(nets[arch], run.path / "checkpoints" / f"target_{arch}.safetensors", {"arch": arch})
        for n in nets.values():
            for p in n.parameters():
                p.requires_grad_(False)
        x = self.images(test)
        y = torch.tensor([s.label for s in test])
        correct = {k: logits_of(n, x).argmax(1) == y for k, n in nets.items()}
        metrics: dict = {"n_test": len(test), "models": list(tr.models), "lam": self.m.attack.lam}
        metrics.update({f"clean_accuracy_{k}": float(v.float().mean()) for k, v in correct.items()})
        rows = []
        for src in tr.models:
            gan = None
            if "cycleadvgan" in tr.methods:
                self.ctx.log(f"CycleAdvGAN against {ARCH_NAMES[src]}")
                gan = self.fit_gan(nets[src], train, checkpoint=False)
            advs = self.attack_images(nets[src], gan, x, y, tr.methods)
            for method, adv in advs.items():
                atomic_write(run.path / "adv" / f"{src}_{method}.npy", _npy(_uint8(adv)))
                for tgt in tr.models:
                    ok = correct[tgt]
                    pred = logits_of(nets[tgt], adv).argmax(1)
                    asr = float(((pred != y) & ok)[ok].float().mean()) if ok.any() else float("nan")
                    metrics[f"asr_{method}_{src}_to_{tgt}"] = asr
                    rows.append({"method": method, "source": src, "target": tgt, "white_box": int(src == tgt),
                                 "asr": round(asr, 6), "n_attacked": int(ok.sum()),
                                 "paper_asr": PAPER_TRANSFER[self.m.dataset.name].get((src, tgt), "") if method == "cycleadvgan" else ""})
        clf.write_csv(run.path / "per_case.csv", rows)
        self._transfer_png(rows, tr)
        run.write_text("paper.md", self._paper_md(metrics, [self._transfer_table(rows, tr), _TRANSFER_NOTES],
                                                  "CycleAdvGAN transfer (source × target ASR)"))
        return metrics

    def _transfer_table(self, rows: list[dict], tr) -> str:
        out = []
        for method in tr.methods:
            body = []
            for src in tr.models:
                cells = []
                for tgt in tr.models:
                    r = next(r for r in rows if r["method"] == method and r["source"] == src and r["target"] == tgt)
                    paper = r["paper_asr"]
                    cells.append(f"{r['asr']:.4f}" + (f" (paper {paper:.4f})" if paper != "" else ""))
                body.append([ARCH_NAMES[src], *cells])
            out.append(f"### {METHOD_NAMES[method]}\n\n" + markdown_table(["source \\ target", *[ARCH_NAMES[t] for t in tr.models]], body))
        return "## Transfer ASR, Tables 3–4 (rows: source, columns: target; the diagonal is white-box)\n\n" + "\n\n".join(out)

    def _transfer_png(self, rows: list[dict], tr) -> None:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        k = len(tr.models)
        fig, axes = plt.subplots(1, len(tr.methods), figsize=(3.2 * len(tr.methods) + 1, 3.2), squeeze=False)
        for ax, method in zip(axes[0], tr.methods, strict=True):
            mat = np.array([[next(r["asr"] for r in rows if r["method"] == method and r["source"] == s and r["target"] == t)
                             for t in tr.models] for s in tr.models])
            ax.imshow(mat, vmin=0, vmax=1, cmap="viridis")
            for i in range(k):
                for j in range(k):
                    ax.text(j, i, f"{mat[i, j]:.2f}", ha="center", va="center", color="white" if mat[i, j] < 0.5 else "black")
            ax.set_xticks(range(k), tr.models, rotation=30, fontsize=7)
            ax.set_yticks(range(k), tr.models, fontsize=7)
            ax.set_title(METHOD_NAMES[method], fontsize=8)
            ax.set_xlabel("target")
            ax.set_ylabel("source")
        fig.tight_layout()
        out = self.ctx.run.path / "figures" / "transfer_matrix.png"
        save_figure(fig, out)

    # -- stage: sweep-lambda --------------------------------------------------------------------------------------
    def sweep_lambda(self) -> dict:
        """One ordinary attack run per λ (reused when complete), then the table and Fig. 2's plot."""
        from .. import runner

        sw, run = self.m.sweep_lambda, self.ctx.run
        if not sw.lambdas:
            raise UsageError("sweep_lambda.lambdas is empty", fix="-o 'sweep_lambda.lambdas=[0.1,0.3,0.5,0.7,0.9]'")
        runs_root = run.path.parent.parent
        parent_ref = str(self.ctx.parent.path) if self.ctx.parent is not None else None
        members, rows = [], []
        for lam in sw.lambdas:
            req = runner.Request(pipeline=self.ctx.spec.slug, stage="attack", manifest=run.path / "manifest.yaml",
                                 overrides=[f"attack.lam={lam}", f"attack.methods=[{','.join(sw.methods)}]"],
                                 fixture=self.ctx.fixture, runs_dir=runs_root, run_ref=parent_ref,
                                 checkpoint=self.ctx.checkpoint)
            p = runner.plan(req, log=self.ctx.log)
            self.ctx.log(f"λ {lam}: attack run {p.path}")
            result = runner.execute(p, log=self.ctx.log)
            m = result["metrics"]
            members.append(result["run_id"])
            rows.append({"lam": lam, "run_id": result["run_id"], **{k: m.get(k) for k in
                         ("asr_cycleadvgan", "ssim_cycleadvgan", "l2_cycleadvgan", "n_attacked", "clean_accuracy")}})
        run.update_info(members=members)
        clf.write_csv(run.path / "per_case.csv", rows)
        self._sweep_png(rows)
        metrics: dict = {"lambdas": list(sw.lambdas), "members": members}
        for r in rows:
            metrics[f"asr_cycleadvgan_lam{r['lam']}"] = r["asr_cycleadvgan"]
            metrics[f"ssim_cycleadvgan_lam{r['lam']}"] = r["ssim_cycleadvgan"]
        both = [r["lam"] for r in rows if (r["asr_cycleadvgan"] or 0) > 0.9 and (r["ssim_cycleadvgan"] or 0) > 0.9]
        metrics["lambdas_with_asr_and_ssim_above_0.9"] = both
        table = markdown_table(["λ", "ASR", "SSIM", "L2", "attacked", "run"],
                               [[r["lam"], r["asr_cycleadvgan"], r["ssim_cycleadvgan"], r["l2_cycleadvgan"], r["n_attacked"],
                                 f"`{r['run_id'][:12]}`"] for r in rows])
        run.write_text("paper.md", self._paper_md(metrics, [
            "## λ study (Fig. 2)\n\nThe paper picks λ = 0.7, where both ASR and SSIM exceed 0.9 (its Fig. 2, no table). "
            f"Here λ values with both above 0.9: {both or 'none'}.\n\n" + table, "![ASR and SSIM vs λ](figures/lambda_sweep.png)"],
            "CycleAdvGAN λ sweep"))
        return metrics

    def _sweep_png(self, rows: list[dict]) -> None:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(5, 3.5))
        lams = [r["lam"] for r in rows]
        ax.plot(lams, [r["asr_cycleadvgan"] for r in rows], marker="o", label="ASR")
        ax.plot(lams, [r["ssim_cycleadvgan"] for r in rows], marker="s", label="SSIM")
        ax.axhline(0.9, color="gray", lw=0.8, ls="--")
        ax.set_xlabel("λ")
        ax.set_ylim(0, 1.02)
        ax.legend()
        ax.set_title("CycleAdvGAN: ASR and SSIM vs λ")
        fig.tight_layout()
        out = self.ctx.run.path / "figures" / "lambda_sweep.png"
        save_figure(fig, out)


class _Scaled(torch.nn.Module):
    """F on raw 0–255 inputs (what the shared classification evaluation feeds)."""

    def __init__(self, net):
        super().__init__()
        self.net = net

    def forward(self, x):
        return self.net(x / 255.0)


_TRAIN_NOTES = """## Notes

- The paper reports no classifier metrics; test accuracy and AUROC of F are given for reference.
- The paper fine-tunes ImageNet weights; without `model.weights` the backbone starts from random init (nothing is
  downloaded). The epoch with the best validation AUROC is kept."""

_ATTACK_NOTES = """## Notes on the comparison

- L_adv uses the card's sign correction (AdvGAN margin loss toward misclassification); Eq. 4 as printed would
  train the generators to help F.
- ASR counts only test images F gets right when clean; SSIM is averaged over the same images (skimage, RGB,
  data_range 1). FGSM/PGD: ε 0.03 (L∞ on [0, 1]), PGD α 0.01, 10 steps, random start (captum).
- "uniform noise (same L2)" is uniform noise scaled to each image's CycleAdvGAN perturbation norm: an attack that
  merely adds energy would score like it.
- SMIA and HFC are not implemented; Inception-V3 needs torchvision (not installed). Their paper numbers are shown."""

_TRANSFER_NOTES = """## Notes on the comparison

- MedViT-S is not available; `vit_s` is a MONAI ViT-S/16 stand-in, and the paper's MedViT cells are compared with it.
- Inception-V3 needs torchvision (not installed), so its rows and columns are missing unless listed and available.
- Transfer ASR for a target counts test images that target classifies correctly when clean."""
