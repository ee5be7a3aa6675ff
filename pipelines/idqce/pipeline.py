"""idqce, the method (card: docs/papers/idqce.md).

Data (``data.py`` picks the reader; NIH from ``datasets/nih.py``, shared with hamming-retrieval): NIH
ChestX-ray14's ``Data_Entry_2017*.csv``, ``images_0NN/images/*.png`` and the official ``train_val_list.txt`` /
``test_list.txt``. Pixels: 8 bits, colour averaged to grey, bilinear resize to ``dataset.img_size`` (224), decoded
once into a ``.npy`` under ``$MEDRUN_CACHE/idqce`` and memory-mapped. Pre-training (both stages) uses every image of
train_val_list without labels. The linear probe trains on train_val_list minus a patient-disjoint
``dataset.val_fraction`` (10 %) held out to pick the best epoch, and is scored on test_list. Labels: the 14 findings
(``dataset.labels``), multi-hot, "No Finding" all zeros.

Stage 1, ``train-vqvae`` (``models/idqce.py``): the card's shallow VQ-VAE on the grey image in [0, 1] (encoder
conv4×4/2-conv4×4/2-conv3×3 + 2 residual blocks, 256 channels, mirrored decoder, sigmoid), codebook K = 1024, D = 256,
nearest codeword by L2 with a straight-through copy; loss MSE + ‖sg[z_e] − e‖² + 0.25‖z_e − sg[e]‖² (λ not given),
Adam 1e-3, batch 16, 100 epochs. The codebook starts from K latent vectors of the first batch (``vqvae.init: data``, a
common remedy for dead codewords the paper does not mention; ``uniform`` is van den Oord's U(−1/K, 1/K)).
``vqvae.restart_every: n`` (0 in the paper's manifest, 10 on the fixture, whose flat synthetic images otherwise
settle on about 6 codewords) moves codewords unused for n steps to random latents of the current batch. Reported
on test_list: reconstruction MSE before and after training, its fall, and
the codebook perplexity (exp of the entropy of codeword use).

Stage 2, ``pretrain``: the VQ-VAE of the parent run, frozen (eval mode, ``requires_grad`` off, never in the optimiser:
its gradients are None, tested). ResNet-50 (torchvision's layout, built here: no torchvision in the environment) up
to global average pooling on the grey image repeated to 3 channels and normalised with ImageNet's mean/std; BYOL
projector and predictor 2048→4096→256 (BN, ReLU); p_θ the same MLP on GAP(z_q). z_q is computed on the
un-augmented image (Fig. 1; ``pretrain.code_input: view`` uses each online view instead). Loss (the card's reading of
Eq. 2): (2 − 2cos(z_θ, z_φ)) + (2 − 2cos(z_θ, z'_θ)) with z_θ the predictor's output, symmetrised over the two views
and averaged over the batch; ``pretrain.method: byol`` is the same code with the second term off. Views: random
resized crop (area ≥ ``crop_scale``, aspect 3/4–4/3) by an affine resampling, horizontal flip, brightness/contrast
jitter, drawn per sample from torch's global RNG on the batch (so exact resume restores them). LARS (η 0.001, wd
1.5e-6, biases and BN excluded), lr 0.02·B/256, 10-epoch linear warm-up then cosine decay per step; EMA μ from 0.996
cosine-increased to 1 (BYOL defaults, as the card says). NIH: batch 256, 500 epochs. The fixture manifest raises
the base lr to 0.5 and η to 0.02: at batch 16 the paper's values move a weight by ~1e-6 of its norm per step.
Reported: the mean SSL loss of the first and last quarter of the steps (at most 10 steps each; whole epochs
after a resume) and its fall, and the
mean |φ − θ| / mean |θ| of the encoder (EMA differs from online).

``linear-eval``: the pretrain run's f_θ frozen; its features are computed once (eval mode, no augmentation, through
the predictor), then one linear layer 2048→L per (encoder, label fraction, subset seed) is trained with
BCE-with-logits, Adam 1e-4, batch 256, 50 epochs (not given), keeping the epoch of best validation macro AUC
(Lightning ``ModelCheckpoint(monitor="val_auc")``). Subsets: a uniform random sample of the probe's training images,
``round(f·N)`` (at least one), seeds 0, 1, 2; the fraction 1.0 is trained once. Baselines in the same run: a
random-init trunk (``random``) and ImageNet init (``imagenet``) when ``linear.init_checkpoint`` names torchvision
ResNet weights (loaded with ``training.load_state``), otherwise skipped with a warning. AUC: mean over labels of
ROC-AUC on test_list, labels with a single class there skipped (``metrics.classification.multilabel_auroc``).
``auc`` is the SSL encoder's at the largest fraction; ``auc_<encoder>_<fraction>`` the mean over subset seeds.
Features instead of end-to-end passes are the usual linear-probe shortcut; without augmentation it is exact.

``explain``: Grad-CAM (captum ``LayerGradCam`` on ``layer4``, upsampled) of the probe trained with
``explain.fraction`` (1 %, Fig. 2) for the finding it scores highest (or ``explain.label``) on test images.
``predict``: the probabilities of the linear-eval run's full-label probe for images (or the test list).
``reproduce``: the three stages in a row as child runs (a sweep), the card's smoke run.

Card flags → manifest keys: ``--method`` → ``pretrain.method``, ``--fraction`` → ``linear.fractions``,
``--vq-axis`` → ``vqvae.axis``, ``--code-input`` → ``pretrain.code_input``, ``--init-checkpoint`` →
``linear.init_checkpoint``, ``--root`` → ``--data-dir``; ``make-fixture`` is ``medrun fixture NAME``. The other
datasets (``data.py``): ``mimic`` (MIMIC-CXR-JPG, frontal images, U-zeros, official train/validate/test), ``vindr``
(VinDr-CXR DICOM, PhysioNet or Kaggle layout), ``mured``, ``odir``, ``eyepacs`` (fundus photographs, read as grey);
cross-dataset tables (EyePACS → MuReD/ODIR, NIH → VinDr, MIMIC → NIH) probe one dataset with ``--run`` of another
dataset's pretrain run.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass
from pathlib import Path

import lightning as L
import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset

from medrun.datasets import nih
from medrun.models import idqce as M

from .. import training
from ..base import Pipeline
from ..report import paper_md, paper_note, read_series
from .data import image_array, read_split

MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


@dataclass
class Part:
    names: list[str]
    paths: list[Path]
    y: np.ndarray  # (N, L) multi-hot
    patients: list[str]

    def subset(self, idx) -> Part:
        idx = list(idx)
        return Part([self.names[i] for i in idx], [self.paths[i] for i in idx], self.y[idx],
                    [self.patients[i] for i in idx])


class Images(Dataset):
    def __init__(self, arr, y=None):
        self.arr, self.y = arr, y

    def __len__(self):
        return len(self.arr)

    def __getitem__(self, i):
        x = torch.from_numpy(np.asarray(self.arr[i], dtype=np.float32) / 255.0)[None]
        return (x, torch.from_numpy(self.y[i].astype(np.float32))) if self.y is not None else x


def to_trunk(x: torch.Tensor) -> torch.Tensor:
    """Grey (B, 1, H, W) in [0, 1] → 3 channels normalised with ImageNet's mean/std (the trunk's input)."""
    mean = torch.tensor(MEAN, device=x.device).view(1, 3, 1, 1)
    std = torch.tensor(STD, device=x.device).view(1, 3, 1, 1)
    return (x.expand(-1, 3, -1, -1) - mean) / std


class Trunk(torch.nn.Module):
    """ResNet trunk on grey [0, 1] input (normalisation inside), for feature extraction and Grad-CAM."""

    def __init__(self, net):
        super().__init__()
        self.net = net

    def forward(self, x):
        return self.net(to_trunk(x))


def augment(x: torch.Tensor, crop_scale: float) -> torch.Tensor:
    """A random view per sample: resized crop (area ∈ [crop_scale, 1], aspect 3/4–4/3), flip, brightness/contrast."""
    b, dev = x.shape[0], x.device
    area = torch.empty(b, device=dev).uniform_(crop_scale, 1.0)
    logr = torch.empty(b, device=dev).uniform_(math.log(3 / 4), math.log(4 / 3))
    sx = (area * logr.exp()).sqrt().clamp(max=1.0)
    sy = (area / logr.exp()).sqrt().clamp(max=1.0)
    tx = (torch.rand(b, device=dev) * 2 - 1) * (1 - sx)
    ty = (torch.rand(b, device=dev) * 2 - 1) * (1 - sy)
    flip = torch.where(torch.rand(b, device=dev) < 0.5, -1.0, 1.0)
    theta = torch.zeros(b, 2, 3, device=dev)
    theta[:, 0, 0], theta[:, 0, 2], theta[:, 1, 1], theta[:, 1, 2] = sx * flip, tx, sy, ty
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    v = F.grid_sample(x, grid, mode="bilinear", padding_mode="reflection", align_corners=False)
    bright = torch.empty(b, 1, 1, 1, device=dev).uniform_(-0.2, 0.2)
    contrast = torch.empty(b, 1, 1, 1, device=dev).uniform_(0.7, 1.3)
    mean = v.mean((2, 3), keepdim=True)
    return ((v - mean) * contrast + mean + bright).clamp(0, 1)


# -- LightningModules --------------------------------------------------------------------------------------------
class LitVQ(L.LightningModule):
    def __init__(self, net: M.VQVAE, lr: float, commitment: float, init: str = "data", restart_every: int = 0):
        super().__init__()
        self.net, self.lr, self.beta, self.init, self.restart = net, lr, commitment, init, restart_every
        self.register_buffer("usage", torch.zeros(net.codebook.k))
        self._z = None

    def on_train_batch_end(self, outputs, x, batch_idx):
        """Every ``restart_every`` steps, codewords no latent chose since the last check restart at random latents
        of this batch (dead-code restart; off by default, the paper has none)."""
        if not self.restart or self._z is None:
            return
        if self.global_step % self.restart == 0:
            dead = self.usage == 0
            if dead.any():
                with torch.no_grad():
                    flat = self.net.codebook._flat(self._z)
                    pick = flat[torch.randint(len(flat), (int(dead.sum()),), device=flat.device)]
                    self.net.codebook.embedding.weight[dead] = pick
            self.usage.zero_()

    def on_train_batch_start(self, x, batch_idx):
        if self.init == "data" and self.global_step == 0 and batch_idx == 0:  # a resumed run keeps its codebook
            with torch.no_grad():
                self.net.codebook.init_from(self.net.encoder(x))

    def training_step(self, x, _):
        z = self.net.encoder(x)
        q, cb, commit, idx = self.net.codebook(z)
        rec = self.net.decoder(q)
        if self.restart:
            self._z = z.detach()
            self.usage += torch.bincount(idx, minlength=self.net.codebook.k).to(self.usage)
        mse = F.mse_loss(rec, x)
        loss = mse + cb + self.beta * commit
        self.log_dict({"loss": loss, "recon_mse": mse,
                       "perplexity": M.perplexity(idx, self.net.codebook.k)}, on_step=False, on_epoch=True)
        return loss

    def configure_optimizers(self):
        return torch.optim.Adam(self.net.parameters(), lr=self.lr)


class LitSSL(L.LightningModule):
    """Stage 2: the online network learns, the target follows by EMA, the VQ encoder and codebook stay frozen."""

    def __init__(self, net: M.IDQCE, vq: M.VQVAE, p, steps_per_epoch: int, total_steps: int):
        super().__init__()
        self.net, self.vq, self.p = net, vq.eval(), p
        for q in self.vq.parameters():
            q.requires_grad_(False)
        self.steps_per_epoch, self.total_steps = steps_per_epoch, max(1, total_steps)
        self.step_losses: list[float] = []  # this process's steps (a resumed run: those after the resume)

    def train(self, mode: bool = True):
        super().train(mode)
        self.vq.eval()  # frozen: never in training mode
        return self

    def codes(self, x):
        with torch.no_grad():
            return self.vq.quantize(x)

    def ssl_loss(self, x):
        v1, v2 = augment(x, self.p.crop_scale), augment(x, self.p.crop_scale)
        if self.net.code_weight:
            if self.p.code_input == "view":
                zq1, zq2 = self.codes(v1), self.codes(v2)
            else:
                zq1 = zq2 = self.codes(x)
        else:
            zq1 = zq2 = None
        return self.net.loss(to_trunk(v1), to_trunk(v2), zq1, zq2)

    def training_step(self, x, _):
        loss, l_byol, l_code = self.ssl_loss(x)
        self.step_losses.append(float(loss.detach()))
        self.log_dict({"loss": loss, "loss_byol": l_byol, "loss_code": l_code}, on_step=False, on_epoch=True)
        return loss

    def on_train_batch_end(self, outputs, batch, batch_idx):
        self.net.update_target(M.ema_momentum(self.p.ema, self.global_step, self.total_steps))

    def configure_optimizers(self):
        p = self.p
        lr = p.base_lr * p.batch_size / 256
        opt = M.LARS(M.lars_groups(self.net), lr=lr, weight_decay=p.weight_decay, eta=p.eta)
        warm = p.warmup_epochs * self.steps_per_epoch

        def factor(step):
            if step < warm:
                return (step + 1) / warm
            return 0.5 * (1 + math.cos(math.pi * min(1.0, (step - warm) / max(1, self.total_steps - warm))))

        sched = torch.optim.lr_scheduler.LambdaLR(opt, factor)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}


class LitProbe(L.LightningModule):
    def __init__(self, dim: int, labels: int, lr: float):
        super().__init__()
        self.head, self.lr = torch.nn.Linear(dim, labels), lr

    def forward(self, f):
        return self.head(f)

    def training_step(self, batch, _):
        f, y = batch
        loss = F.binary_cross_entropy_with_logits(self.head(f), y)
        self.log("loss", loss, on_step=False, on_epoch=True)
        return loss

    def on_validation_epoch_start(self):
        self._val = []

    def validation_step(self, batch, _):
        f, y = batch
        self._val.append((torch.sigmoid(self.head(f)).detach().cpu(), y.cpu()))

    def on_validation_epoch_end(self):
        from medrun.metrics.classification import multilabel_auroc

        p, y = (torch.cat(t).numpy() for t in zip(*self._val, strict=True))
        auc = multilabel_auroc(y, p)
        self.log("val_auc", auc if math.isfinite(auc) else 0.5)

    def configure_optimizers(self):
        return torch.optim.Adam(self.head.parameters(), lr=self.lr)


def _first_last(losses: list[float]) -> tuple[float, float]:
    """Mean SSL loss of the first and of the last quarter of the steps (at most 10 each)."""
    if len(losses) < 2:
        return (losses[0], losses[0]) if losses else (math.nan, math.nan)
    k = max(1, min(10, len(losses) // 4))
    return float(np.mean(losses[:k])), float(np.mean(losses[-k:]))


# -- the pipeline ---------------------------------------------------------------------------------------------------
class Idqce(Pipeline):
    def build_model(self) -> M.IDQCE:
        mm, v = self.m.model, self.m.vqvae
        w = 0.0 if self.m.pretrain.method == "byol" else self.m.pretrain.code_weight
        return M.IDQCE(mm.backbone, 3, mm.hidden, mm.out, v.dim, w)

    def build_vq(self) -> M.VQVAE:
        v = self.m.vqvae
        return M.VQVAE(1, v.channels, v.dim, v.k, v.axis)

    @property
    def predictor(self):
        if not hasattr(self, "_pred"):
            self._pred = self.ctx.predictor()
        return self._pred

    # -- data -------------------------------------------------------------------------------------------------
    def splits(self) -> dict[str, Part]:
        if hasattr(self, "_splits"):
            return self._splits
        d = self.m.dataset
        split = read_split(d)

        def part(es):
            return Part([e.name for e in es], [e.path for e in es], nih.multi_hot(es, d.labels),
                        [e.patient for e in es])

        train_val = part(split["train_val"])
        test = part(split["test"])
        if "val" in split:  # the release's own validation split (MIMIC's validate)
            val = part(split["val"])
            self._splits = {"pretrain": train_val, "train": train_val, "val": val, "test": test}
        else:
            patients = sorted(set(train_val.patients))
            rng = np.random.default_rng(d.split_seed)
            held = set(rng.permutation(patients)[:max(1, round(d.val_fraction * len(patients)))].tolist())
            tr = [i for i, p in enumerate(train_val.patients) if p not in held]
            va = [i for i, p in enumerate(train_val.patients) if p in held]
            self._splits = {"pretrain": train_val, "train": train_val.subset(tr), "val": train_val.subset(va),
                            "test": test}
        self.ctx.record_splits({k: v.paths for k, v in self._splits.items()})
        self.ctx.log(" · ".join(f"{k} {len(v.names)}" for k, v in self._splits.items()))
        return self._splits

    def images(self, part: Part):
        d = self.m.dataset
        cache = None
        if self.ctx.cache_dir is not None:
            lock = json.loads((self.ctx.path / "data.lock.json").read_text())
            key = hashlib.sha256(json.dumps([lock.get("fingerprint"), d.img_size, part.names]).encode()).hexdigest()
            cache = Path(self.ctx.cache_dir) / "idqce" / f"{key[:32]}-{d.img_size}.npy"
        return image_array(d.name, part.paths, d.img_size, cache, self.ctx.log)

    # -- stage 1 ----------------------------------------------------------------------------------------------------
    def recon(self, net: M.VQVAE, arr) -> tuple[float, float, np.ndarray]:
        """(reconstruction MSE, codebook perplexity, first reconstructions) over ``arr`` through the predictor."""
        loader = DataLoader(Images(arr), batch_size=32)
        outs = self.predictor.map(net, loader)
        rec = torch.cat([o[0] for o in outs])
        x = torch.cat(list(loader))
        idx = torch.cat([o[3] for o in outs])
        return float(F.mse_loss(rec, x)), M.perplexity(idx, net.codebook.k), rec[:8, 0].numpy()

    def train_vqvae(self) -> dict:
        v, s = self.m.vqvae, self.splits()
        arr, test = self.images(s["pretrain"]), self.images(s["test"])
        net = self.build_vq()
        mse0, _, _ = self.recon(net, test)
        loader = training.ResumableLoader(Images(arr), v.batch_size, self.m.seed, drop_last=len(arr) > v.batch_size)
        trainer = training.make_trainer(self.ctx, v.epochs, **({"max_steps": v.max_steps} if v.max_steps else {}))
        training.fit(trainer, LitVQ(net, v.lr, v.commitment, v.init, v.restart_every).train(), train_dataloaders=loader,
                     ckpt_path=training.resume_checkpoint(self.ctx.run))
        training.save_weights(net, self.ctx.path / "checkpoints" / "model.safetensors", {"pipeline": "idqce",
                                                                                        "part": "vqvae"})
        self.ctx.learning_curves()
        mse, ppl, rec = self.recon(net, test)
        from . import figures

        figures.reconstructions(self.ctx, np.asarray(test[:8]), rec)
        idx = torch.cat([o[3] for o in self.predictor.map(net, DataLoader(Images(test), batch_size=32))])
        figures.codebook_usage(self.ctx, np.bincount(idx.numpy(), minlength=v.k))
        metrics = {"recon_mse_initial": mse0, "recon_mse": mse, "recon_mse_fall": 1 - mse / mse0 if mse0 else 0.0,
                   "perplexity": ppl, "codes_used": int((np.bincount(idx.numpy(), minlength=v.k) > 0).sum()),
                   **training.count_params(net)}
        self.ctx.write_text("paper.md", paper_md(self.ctx.spec, self.m, metrics, self.ctx,
                                                 title="IDQCE stage 1: VQ-VAE",
                                                 expect={}, keys=["recon_mse_initial", "recon_mse", "recon_mse_fall",
                                                                  "perplexity", "codes_used"],
                                                 sections=[paper_note(self.ctx.spec, "vqvae")]))
        return metrics

    # -- stage 2 ----------------------------------------------------------------------------------------------------
    def pretrain(self) -> dict:
        p, s = self.m.pretrain, self.splits()
        vq = self.trained_model(self.build_vq())
        arr = self.images(s["pretrain"])
        net = self.build_model()
        loader = training.ResumableLoader(Images(arr), p.batch_size, self.m.seed, drop_last=len(arr) > p.batch_size)
        steps = len(loader) * p.epochs if not p.max_steps else min(p.max_steps, len(loader) * p.epochs)
        module = LitSSL(net, vq, p, len(loader), steps).train()
        trainer = training.make_trainer(self.ctx, p.epochs, **({"max_steps": p.max_steps} if p.max_steps else {}))
        import time

        t0 = time.perf_counter()
        training.fit(trainer, module, train_dataloaders=loader, ckpt_path=training.resume_checkpoint(self.ctx.run))
        secs = time.perf_counter() - t0
        training.save_weights(net.encoder, self.ctx.path / "checkpoints" / "model.safetensors",
                              {"pipeline": "idqce", "part": "f_theta", "backbone": self.m.model.backbone})
        training.save_weights(net, self.ctx.path / "checkpoints" / "full.safetensors", {"pipeline": "idqce"})
        self.ctx.learning_curves()
        first, last = _first_last(module.step_losses)
        series = read_series(self.ctx.path / "logs" / "metrics.csv").get("loss", [])
        if len(series) > 1 and len(module.step_losses) < trainer.global_step:  # resumed: whole epochs instead
            first, last = series[0][1], series[-1][1]
        diff = sum(float((a - b).abs().sum()) for a, b in zip(net.encoder.parameters(),
                                                                net.target_encoder.parameters(), strict=True))
        norm = sum(float(a.abs().sum()) for a in net.encoder.parameters())
        metrics = {"method": p.method, "ssl_loss_first": first, "ssl_loss_last": last,
                   "ssl_loss_fall": 1 - last / first if first else 0.0, "ema_rel_diff": diff / norm,
                   "images_per_sec": trainer.global_step * p.batch_size / secs if secs else 0.0,
                   "steps": trainer.global_step, **training.count_params(net.encoder)}
        self.ctx.write_text("paper.md", paper_md(self.ctx.spec, self.m, metrics, self.ctx, expect={},
                                                 title=f"IDQCE stage 2: {p.method} pre-training",
                                                 keys=["ssl_loss_first", "ssl_loss_last", "ssl_loss_fall",
                                                       "ema_rel_diff", "images_per_sec"],
                                                 sections=[paper_note(self.ctx.spec, "pretrain")]))
        return metrics

    # -- linear evaluation, explain, predict, reproduce -------------------------------------------------------------
    def linear_eval(self) -> dict:
        from .linear import linear_eval

        return linear_eval(self)

    def explain(self) -> dict:
        from .explain import explain

        return explain(self)

    def predict(self) -> dict:
        from .linear import predict

        return predict(self)

    def reproduce(self) -> dict:
        from ..sweep import Child

        vq = self.ctx.sweep([Child("vqvae", stage="train-vqvae")], title="stage")[0]
        pre = self.ctx.sweep([Child("pretrain", stage="pretrain", run=str(vq.run_dir))], title="stage")[0]
        lin = self.ctx.sweep([Child("linear", stage="linear-eval", run=str(pre.run_dir))], title="stage")[0]
        keep = lambda d: {k: v for k, v in d.items() if isinstance(v, (int, float, str))}  # noqa: E731
        metrics = {**keep(vq.metrics), **keep(pre.metrics), **keep(lin.metrics),
                   "runs": {"train-vqvae": vq.run_id[:12], "pretrain": pre.run_id[:12], "linear-eval": lin.run_id[:12]}}
        for k in ("params_total", "params_trainable"):
            metrics.pop(k, None)
        self.ctx.write_text("paper.md", (lin.run_dir / "paper.md").read_text())
        return metrics
