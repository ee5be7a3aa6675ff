"""cycleadvgan ``attack``: CycleAdvGAN trained against a finished train run's frozen F, then the white-box attacks
on the test split.

CycleAdvGAN (the card's reading of Eq. 1–5): ResNet generators G_M (M → B), G_B (B → M) and 70×70 PatchGAN
discriminators D_B, D_M (``models.cyclegan``, CycleGAN's N(0, 0.02) init); generator objective
L = (1 − λ)[L_GAN(G_M) + L_GAN(G_B) + λ_cyc·L_cyc + λ_idt·L_idt] + λ·L_adv. The GAN terms use BCE-with-logits
(non-saturating for G; ``gan_loss: lsgan`` is CycleGAN's MSE); the discriminators minimise ½[BCE(D(real), 1) +
BCE(D(pool(fake)), 0)] with a history pool. L_adv carries the card's sign correction: the AdvGAN margin loss
mean(max(Z_y − max_{j≠y} Z_j, −κ)) on G_M(m) (y = M) and G_B(b) (y = B), or ``adv_loss: ce-flip`` =
CE(F(x_fake), 1 − y); ``recon_cls`` adds CE(F(G_B(G_M(m))), M) + CE(F(G_M(G_B(b))), B). F is frozen in eval
mode; gradients reach only the generators. Lightning with ``automatic_optimization = False`` and two optimisers.

The attacks: CycleAdvGAN (x_adv = G_M(x) for true label M, G_B(x) for B: one forward pass, no ε-ball), FGSM and
PGD from captum with a cross-entropy ``loss_func`` on logits and [0, 1] bounds (captum's default loss, −log of
the output, is for probabilities), SMIA and HFC, and uniform noise rescaled to each image's CycleAdvGAN L2 norm.

SMIA and HFC, from their papers' descriptions (the card: "their papers' settings"; the choices are ours): both run
PGD's iterations and budget (L∞ ε 0.03, α 0.01, 10 signed-gradient steps, random start, [0, 1]) so that their
SSIM compares with PGD's, on an objective of their own.
- SMIA (Qi et al. 2021): deviation loss CE(F(x + r), y) minus β ``smia_beta`` (0.5) times the stabilisation loss
  ‖F(x + r) − F(x + W∗r)‖² on the softmax predictions, W a Gaussian of σ ``smia_sigma`` (1 px, MONAI
  ``GaussianFilter``).
- HFC (Yao et al. 2021): CE(F(x + r), y) plus ``hfc_weight`` (1) times, summed over the backbone's stages
  (``HFC_LAYERS``: pooled stage outputs), the per-dimension log-likelihood of the adversarial features under a
  ``hfc_components``-component (4) diagonal Gaussian mixture (scikit-learn) fitted to the clean training images of
  the class the image is pushed to (1 − y). HFC's paper constrains the features of the attack's target class; an
  untargeted binary attack's target is the other class. Forward passes
(the generators, F on clean and adversarial images) run through the predictor on the manifest's hardware.
Outputs: ``adv/<method>.npy`` and ``adv/clean.npy`` (uint8 N×H×W×3), ``per_case.csv``, overlays in
``figures/``, the GAN's learning curves, the generators' weights, and ``paper.md`` beside Tables 1–2.
"""

from __future__ import annotations

import time
import warnings
from pathlib import Path

import lightning as L
import numpy as np
import torch
import torch.nn.functional as F

from medrun.errors import DataError
from medrun.metrics.attack import attack_success_rate
from medrun.models.cyclegan import CycleGAN, ImagePool, init_weights

from .. import training
from ..report import markdown_table, paper_data, paper_md, paper_note
from ..tasks import classification as clf

# F stays in eval mode inside the GAN's training, and captum notes that it sets requires_grad on the inputs
for _pattern in (".*module\\(s\\) in eval mode at the start of training.*",
                 ".*required_grads has been set automatically.*"):
    warnings.filterwarnings("ignore", message=_pattern)

ARCH_NAMES = {"resnet50": "ResNet-50", "densenet121": "DenseNet-121", "inception_v3": "Inception-V3",
              "medvit_s": "MedViT-S", "vit_s": "ViT-S/16 (MONAI, extra; not MedViT)",
              "resnet18": "ResNet-18 (stand-in)",
              "small_cnn": "small CNN (stand-in)"}
METHOD_NAMES = {"cycleadvgan": "CycleAdvGAN (ours)", "fgsm": "FGSM", "pgd": "PGD", "noise": "uniform noise (same L2)",
                "smia": "SMIA", "hfc": "HFC"}


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
        l_idt = ((F.l1_loss(g.g_m(b), b) + F.l1_loss(g.g_b(m), m)) if c.lambda_idt > 0
                 else torch.zeros((), device=m.device))
        z_b, z_m = self.f((fake_b + 1) / 2), self.f((fake_m + 1) / 2)
        l_adv = adv_loss(z_b, 1, c.adv_loss, c.kappa) + adv_loss(z_m, 0, c.adv_loss, c.kappa)
        if c.recon_cls:
            ones, zeros = (torch.full((len(v),), k, dtype=torch.long, device=m.device) for v, k in ((m, 1), (b, 0)))
            l_adv = (l_adv + F.cross_entropy(self.f((rec_m + 1) / 2), ones)
                     + F.cross_entropy(self.f((rec_b + 1) / 2), zeros))
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

        return [opt_g, opt_d], [torch.optim.lr_scheduler.LambdaLR(opt_g, rule),
                                torch.optim.lr_scheduler.LambdaLR(opt_d, rule)]


# -- inference and the baselines ----------------------------------------------------------------------------------
def _predictor(pred):
    from ..predictor import Predictor

    return pred or Predictor(accelerator="cpu")


def translate(gen: torch.nn.Module, x: torch.Tensor, batch: int = 32, pred=None) -> torch.Tensor:
    """A generator over [0, 1] images (it works in [−1, 1]), batch by batch through the predictor."""
    pred = _predictor(pred)
    g = pred.setup(gen)
    return torch.cat([(pred(g, x[i:i + batch] * 2 - 1) + 1) / 2 for i in range(0, len(x), batch)]).clamp(0, 1)


def logits_of(net: torch.nn.Module, x: torch.Tensor, batch: int = 32, pred=None) -> torch.Tensor:
    pred = _predictor(pred)
    f = pred.setup(net)
    return torch.cat([pred(f, x[i:i + batch]) for i in range(0, len(x), batch)])


def ssim(x: torch.Tensor, y: torch.Tensor) -> np.ndarray:
    """Per-image SSIM of [0, 1] images (N, 3, H, W): skimage, channel_axis=-1, data_range=1."""
    from skimage.metrics import structural_similarity

    a, b = x.permute(0, 2, 3, 1).double().numpy(), y.permute(0, 2, 3, 1).double().numpy()
    win = min(7, a.shape[1] - (1 - a.shape[1] % 2), a.shape[2] - (1 - a.shape[2] % 2))
    return np.array([structural_similarity(p, q, channel_axis=-1, data_range=1.0, win_size=win)
                     for p, q in zip(a, b, strict=True)])


def gradient_attack(net, x: torch.Tensor, y: torch.Tensor, method: str, a, seed: int) -> torch.Tensor:
    """FGSM / PGD from captum, untargeted, with cross-entropy on logits and [0, 1] bounds (on x's device)."""
    from captum.robust import FGSM, PGD

    net.eval()

    def loss(out, target):
        return F.cross_entropy(out, target, reduction="none")

    torch.manual_seed(seed)
    out = []
    for i in range(0, len(x), a.batch_eval):
        xb, yb = x[i:i + a.batch_eval], y[i:i + a.batch_eval]
        if method == "fgsm":
            adv = FGSM(net, loss_func=loss, lower_bound=0.0, upper_bound=1.0).perturb(xb, epsilon=a.fgsm_eps,
                                                                                      target=yb)
        else:
            adv = PGD(net, loss_func=loss, lower_bound=0.0, upper_bound=1.0).perturb(
                xb, radius=a.pgd_eps, step_size=a.pgd_alpha, step_num=a.pgd_steps, target=yb,
                random_start=a.pgd_random_start, norm="Linf")
        out.append(adv.detach())
    return torch.cat(out).clamp(0, 1)


def signed_ascent(net, x: torch.Tensor, y: torch.Tensor, objective, a, seed: int) -> torch.Tensor:
    """Maximise ``objective(net, x_adv, x, y)`` (per-image values, summed) by PGD's steps: ε-ball (L∞, ``pgd_eps``),
    step ``pgd_alpha`` along the gradient's sign, ``pgd_steps`` steps, ``pgd_random_start``, [0, 1] bounds."""
    g = torch.Generator().manual_seed(seed)
    out = []
    for i in range(0, len(x), a.batch_eval):
        xb, yb = x[i:i + a.batch_eval], y[i:i + a.batch_eval]
        adv = xb.clone()
        if a.pgd_random_start:
            adv = adv + (torch.rand(xb.shape, generator=g) * 2 - 1).to(xb) * a.pgd_eps
        adv = adv.clamp(0, 1)
        for _ in range(a.pgd_steps):
            adv.requires_grad_(True)
            (grad,) = torch.autograd.grad(objective(net, adv, xb, yb).sum(), adv)
            adv = adv.detach() + a.pgd_alpha * grad.sign()
            adv = (xb + (adv - xb).clamp(-a.pgd_eps, a.pgd_eps)).clamp(0, 1)
        out.append(adv.detach())
    return torch.cat(out)


def smia_objective(a, device="cpu"):
    """SMIA (Qi et al., ICLR 2021): the deviation loss CE(F(x + r), y) minus β times the stabilisation loss, the
    squared distance between F's predictions (softmax) on x + r and on x + W∗r, W a Gaussian kernel (σ
    ``smia_sigma``), so that the perturbation keeps working once smoothed. On logits the stabilisation term
    outgrew the deviation loss on a confident F and the attack stopped attacking (ASR 0 on the fixture)."""
    from monai.networks.layers import GaussianFilter

    smooth = GaussianFilter(2, a.smia_sigma).to(device)

    def objective(net, adv, x, y):
        z = net(adv)
        z_smooth = net((x + smooth(adv - x)).clamp(0, 1))
        stabilisation = (z.softmax(1) - z_smooth.softmax(1)).pow(2).sum(1)
        return F.cross_entropy(z, y, reduction="none") - a.smia_beta * stabilisation

    return objective


# the layers whose pooled outputs HFC keeps in the clean features' high-density region, per target architecture
HFC_LAYERS = {"resnet50": [f"features.layer{i}" for i in range(1, 5)],
              "resnet18": [f"features.layer{i}" for i in range(1, 5)],
              "densenet121": [f"features.features.denseblock{i}" for i in range(1, 5)],
              "inception_v3": ["features.Mixed_5d", "features.Mixed_6e", "features.Mixed_7c"],
              "medvit_s": [f"features.features.{i}" for i in (2, 6, 16, 19)],
              "vit_s": [f"features.vit.blocks.{i}" for i in (3, 7, 11)],
              "small_cnn": [f"features.{i}" for i in (3, 7, 11, 15)]}


class LayerTaps:
    """Forward hooks collecting the named layers' outputs, pooled to vectors (mean over space or tokens)."""

    def __init__(self, net: torch.nn.Module, names: list[str]):
        mods = dict(net.named_modules())
        self.out: list[torch.Tensor] = []
        self.hooks = [mods[n].register_forward_hook(lambda _m, _i, o: self.out.append(self.pool(o))) for n in names]

    @staticmethod
    def pool(o) -> torch.Tensor:
        o = o[0] if isinstance(o, tuple) else o
        return o.mean((2, 3)) if o.dim() == 4 else o.mean(1) if o.dim() == 3 else o

    def __call__(self, net, x) -> tuple[torch.Tensor, list[torch.Tensor]]:
        self.out = []
        return net(x), self.out

    def close(self):
        for h in self.hooks:
            h.remove()


def fit_feature_density(net, taps: LayerTaps, x: torch.Tensor, y: torch.Tensor, a, seed: int) -> dict:
    """Per class and layer, a diagonal Gaussian mixture (scikit-learn) of the clean images' pooled features; x stays
    where it is, each batch goes to the network's device."""
    from sklearn.mixture import GaussianMixture

    dev = next(net.parameters()).device
    with torch.no_grad():
        feats = [torch.cat(f).cpu() for f in zip(*(taps(net, x[i:i + a.batch_eval].to(dev))[1]
                                                   for i in range(0, len(x), a.batch_eval)), strict=True)]
    dens = {}
    for c in (0, 1):
        for layer, f in enumerate(feats):
            fc = f[y.cpu() == c].double().numpy()
            gm = GaussianMixture(min(a.hfc_components, len(fc)), covariance_type="diag", reg_covar=1e-4,
                                 random_state=seed).fit(fc)
            dens[c, layer] = tuple(torch.tensor(v, dtype=torch.float32)
                                   for v in (np.log(gm.weights_), gm.means_, gm.covariances_))
    return dens


def hfc_objective(a, taps: LayerTaps, dens: dict):
    """HFC (Yao et al., MICCAI 2021): the attack loss CE(F(x + r), y) plus ``hfc_weight`` times the mean per-dimension
    log-likelihood, summed over layers, of the adversarial features under the clean features' mixture of the class
    the image is pushed to (1 − y): the features stay where real images of that class lie."""

    def loglik(f, log_w, mu, var):  # (N, D) → (N,), per dimension
        log_w, mu, var = log_w.to(f), mu.to(f), var.to(f)
        ll = -0.5 * (((f[:, None] - mu) ** 2 / var) + torch.log(2 * torch.pi * var)).sum(-1)
        return torch.logsumexp(ll + log_w, 1) / f.shape[1]

    def objective(net, adv, x, y):
        z, feats = taps(net, adv)
        density = sum(torch.where(y == 1, loglik(f, *dens[0, k]), loglik(f, *dens[1, k]))
                      for k, f in enumerate(feats))
        return F.cross_entropy(z, y, reduction="none") + a.hfc_weight * density

    return objective


def same_l2_noise(x: torch.Tensor, ref: torch.Tensor, seed: int) -> torch.Tensor:
    """Uniform noise scaled per image to ||ref − x||₂, added and clipped to [0, 1]."""
    g = torch.Generator().manual_seed(seed)
    u = torch.rand(x.shape, generator=g) * 2 - 1
    norm = (ref - x).flatten(1).norm(dim=1)
    u = u * (norm / u.flatten(1).norm(dim=1).clamp_min(1e-12)).view(-1, 1, 1, 1)
    return (x + u).clamp(0, 1)


def uint8(x: torch.Tensor) -> np.ndarray:
    """[0, 1] images (N, 3, H, W) → uint8 (N, H, W, 3), as saved in ``adv/``."""
    return (x.permute(0, 2, 3, 1).numpy() * 255).round().astype(np.uint8)


def whitebox(spec, dataset: str, arch: str) -> dict[str, tuple[float, float]]:
    """Tables 1–2 for one dataset and target: {method: (ASR, SSIM)} (empty when the paper has no such column)."""
    return {r[2]: (r[3], r[4]) for r in paper_data(spec)["tables"]["whitebox"]["rows"] if r[:2] == [dataset, arch]}


# -- CycleAdvGAN training ----------------------------------------------------------------------------------------
def build_gan(p) -> CycleGAN:
    a = p.m.attack
    blocks = a.n_blocks or (9 if p.m.dataset.img_size >= 256 else 6)
    return init_weights(CycleGAN(a.ngf, a.ndf, blocks), generator=torch.Generator().manual_seed(p.m.seed))


def gan_domains(p, samples) -> tuple[list, list]:
    """All images of the minority domain and a seeded same-size sample of the majority: (M, B)."""
    m = [s for s in samples if s.label == 1]
    b = [s for s in samples if s.label == 0]
    if not m or not b:
        raise DataError(f"CycleAdvGAN needs images of both classes in the training split (M {len(m)}, B {len(b)})",
                        fix="check the dataset's labels")
    rng = np.random.default_rng(p.m.seed)
    if len(m) < len(b):
        b = [b[i] for i in sorted(rng.choice(len(b), len(m), replace=False))]
    elif len(b) < len(m):
        m = [m[i] for i in sorted(rng.choice(len(m), len(b), replace=False))]
    return m, b


def fit_gan(p, target, samples) -> CycleGAN:
    """CycleAdvGAN against the frozen ``target``, resumable from this run's ``last.ckpt``."""
    a = p.m.attack
    m_s, b_s = gan_domains(p, samples)
    gan = build_gan(p)
    module = LitCycleAdvGAN(gan, target, a, p.m.seed)
    ds = PairedDomains(p.images(m_s), p.images(b_s))
    p.ctx.log(f"CycleAdvGAN: {len(m_s)} M + {len(b_s)} B images, λ {a.lam}, {a.epochs}+{a.decay_epochs} epochs "
              f"of {-(-len(ds) // a.batch_size)} steps (batch {a.batch_size})")
    trainer = training.make_trainer(p.ctx, a.epochs + a.decay_epochs)
    training.fit(trainer, module, train_dataloaders=clf.loader(ds, a.batch_size, True, seed=p.m.seed),
                 ckpt_path=training.resume_checkpoint(p.ctx.run))
    return gan.eval()


def attack_images(p, net, gan, x: torch.Tensor, y: torch.Tensor, methods, train=None) -> dict[str, torch.Tensor]:
    """Each method's adversarial images of (x, y); HFC fits its feature densities on the ``train`` samples."""
    a, pred, out, dev = p.m.attack, p.predictor, {}, p.predictor.device
    if "cycleadvgan" in methods or "noise" in methods:
        to_b, to_m = translate(gan.g_m, x, a.batch_eval, pred), translate(gan.g_b, x, a.batch_eval, pred)
        out["cycleadvgan"] = torch.where((y == 1).view(-1, 1, 1, 1), to_b, to_m)
    for method in ("fgsm", "pgd"):
        if method in methods:
            out[method] = gradient_attack(net.to(dev), x.to(dev), y.to(dev), method, a, p.m.seed).cpu()
    if "smia" in methods:
        out["smia"] = signed_ascent(net.to(dev), x.to(dev), y.to(dev), smia_objective(a, dev), a, p.m.seed).cpu()
    if "hfc" in methods:
        taps = LayerTaps(net, HFC_LAYERS.get(p.m.model.arch, ["features"]))
        try:
            m_s, b_s = gan_domains(p, train)  # balanced and bounded by the minority class, as the GAN's data
            xt, yt = p.images(m_s + b_s), torch.tensor([1] * len(m_s) + [0] * len(b_s))
            objective = hfc_objective(a, taps, fit_feature_density(net.to(dev), taps, xt, yt, a, p.m.seed))
            out["hfc"] = signed_ascent(net, x.to(dev), y.to(dev), objective, a, p.m.seed).cpu()
        finally:
            taps.close()
    if "noise" in methods:
        out["noise"] = same_l2_noise(x, out["cycleadvgan"], p.m.seed)
    return {k: v for k, v in out.items() if k in methods}


# -- the stage -------------------------------------------------------------------------------------------------
def attack(p) -> dict:
    a, ctx = p.m.attack, p.ctx
    net = p.trained_model().eval()
    for prm in net.parameters():
        prm.requires_grad_(False)
    splits = p.splits()
    train, test = splits["train"] + splits["val"], splits["test"]
    gan = fit_gan(p, net, train) if ("cycleadvgan" in a.methods or "noise" in a.methods) else None
    if gan is not None:
        training.save_weights(gan.g_m, ctx.path / "checkpoints" / "g_m.safetensors", {"maps": "M->B"})
        training.save_weights(gan.g_b, ctx.path / "checkpoints" / "g_b.safetensors", {"maps": "B->M"})
        ctx.learning_curves()
    x = p.images(test)
    y = torch.tensor([s.label for s in test])
    t0 = time.perf_counter()
    advs = attack_images(p, net, gan, x, y, a.methods, train)
    clean = logits_of(net, x, a.batch_eval, p.predictor).argmax(1)
    correct = clean == y
    classes = p.classes()
    rows = [{"file": Path(s.path).resolve().relative_to(p.root.resolve()).as_posix(), "label": classes[s.label],
             "clean_pred": classes[int(c)], "clean_correct": int(ok)} for s, c, ok in zip(test, clean, correct,
                                                                                         strict=True)]
    metrics: dict = {"arch": p.m.model.arch, "lam": a.lam, "n_test": len(test), "n_attacked": int(correct.sum()),
                     "clean_accuracy": float(correct.float().mean())}
    sel = correct.numpy()
    for method, adv in advs.items():
        pred = logits_of(net, adv, a.batch_eval, p.predictor).argmax(1)
        success = (pred != y) & correct
        s = ssim(x, adv)
        l2 = (adv - x).flatten(1).norm(dim=1)
        linf = (adv - x).flatten(1).abs().max(1).values
        nan = float("nan")
        metrics[f"asr_{method}"] = attack_success_rate(y, clean, pred)["asr"]
        metrics[f"ssim_{method}"] = float(s[sel].mean()) if sel.any() else nan
        metrics[f"l2_{method}"] = float(l2[correct].mean()) if sel.any() else nan
        metrics[f"linf_{method}"] = float(linf[correct].mean()) if sel.any() else nan
        ctx.write_npy(f"adv/{method}.npy", uint8(adv))
        for i, r in enumerate(rows):
            r.update({f"pred_{method}": classes[int(pred[i])], f"success_{method}": int(success[i]),
                      f"ssim_{method}": float(s[i]), f"l2_{method}": float(l2[i])})
        ctx.log(f"{METHOD_NAMES[method]}: ASR {metrics[f'asr_{method}']:.4f}  SSIM {metrics[f'ssim_{method}']:.4f}"
                f"  (L2 {metrics[f'l2_{method}']:.3f}, L∞ {metrics[f'linf_{method}']:.3f})")
    if "cycleadvgan" in advs and "noise" in advs:
        metrics["asr_gain_over_noise"] = metrics["asr_cycleadvgan"] - metrics["asr_noise"]
    metrics["attack_seconds"] = round(time.perf_counter() - t0, 3)
    ctx.write_npy("adv/clean.npy", uint8(x))
    ctx.write_csv("per_case.csv", rows)
    overlays(p, test, x, advs, correct)
    d, arch = p.m.dataset.name, p.m.model.arch
    ref_arch = arch if whitebox(ctx.spec, d, arch) else "resnet50"
    ref = whitebox(ctx.spec, d, ref_arch)
    expect = {f"{k}_{m}": v for m, pair in ref.items() for k, v in zip(("asr", "ssim"), pair, strict=True)}
    ctx.write_text("paper.md", paper_md(ctx.spec, p.m, metrics, ctx, present_only=True, expect=expect,
                                        title=f"CycleAdvGAN white-box attack on {ARCH_NAMES[arch]}",
                                        table="Tables 1–2",
                                        setting=f"{d}, white-box {ARCH_NAMES[ref_arch]}, λ = 0.7",
                                        sections=sections(p, metrics, ref, ref_arch)))
    return metrics


def sections(p, metrics: dict, ref: dict, ref_arch: str) -> list[str]:
    arch, a = p.m.model.arch, p.m.attack
    rows = []
    for method in ("fgsm", "pgd", "smia", "hfc", "cycleadvgan", "noise"):
        ours, theirs = (metrics.get(f"asr_{method}"), metrics.get(f"ssim_{method}")), ref.get(method, (None, None))
        if ours != (None, None) or theirs != (None, None):
            rows.append([METHOD_NAMES[method], *ours, *theirs])
    note = "" if ref_arch == arch else (f" (this run's F is {ARCH_NAMES[arch]}; the paper's column is "
                                        f"{ARCH_NAMES[ref_arch]})")
    table = markdown_table(["method", "ASR (run)", "SSIM (run)", "ASR (paper)", "SSIM (paper)"], rows)
    return [f"## White-box ASR / SSIM, Tables 1–2{note}\n\nASR over the {metrics['n_attacked']} of "
            f"{metrics['n_test']} test images F classifies correctly (clean accuracy {metrics['clean_accuracy']:.4f}); "
            f"λ {a.lam}, λ_cyc {a.lambda_cyc}, λ_idt {a.lambda_idt}, adversarial loss {a.adv_loss}.\n\n" + table,
            paper_note(p.ctx.spec, "attack")]


def overlays(p, samples, x, advs: dict, correct) -> None:
    n = p.m.attack.overlays
    if not n or not advs:
        return
    classes, names = p.classes(), list(advs)
    cols = 1 + 2 * len(names)
    for i in [i for i in range(len(samples)) if correct[i]][:n]:
        with p.ctx.figure(f"overlay_{Path(samples[i].path).stem}", ncols=cols, figsize=(2.0 * cols, 2.4),
                          squeeze=False, dpi=90) as (_, axes):
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
