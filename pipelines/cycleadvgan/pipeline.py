"""cycleadvgan, the method (card: docs/papers/cycleadvgan.md).

Data: ISIC 2020 (``datasets.isic2020``; an 80/20 split grouped by ``patient_id``, stratified by ``target``) or the
Kermany chest X-rays (``datasets.chestxray``; the official train/test, a Kaggle ``val/`` folded into train). Domains:
M = malignant / PNEUMONIA (label 1), B = benign / NORMAL (label 0). Every image is converted to RGB and resized to
``img_size``² (bilinear); all attacks work in [0, 1] pixel space and the ImageNet mean/std normalisation sits inside
the classifier (``models.attack_targets``).

Stages:
- ``train``: the target classifier F (ResNet-50, DenseNet-121, Inception-V3, MedViT-S, an extra MONAI ViT-S/16,
  or the CPU stand-ins) with the card's two-FC head, Adam lr 1e-5, batch 32, 20 epochs, RandomResizedCrop + flip on
  training batches, the epoch with the best validation AUC kept (a stratified ``val_fraction`` of train): Lightning's
  ``ModelCheckpoint`` on ``val_select`` = AUC − 10⁻⁹·min(loss, 1000) in float64, i.e. the best AUC with ties
  going to the lower validation loss (the fixture's F reaches AUC 1 in its first epoch). Test metrics.
- ``eval`` / ``predict``: on a finished train run (``--run``/``--checkpoint``), through the predictor.
- ``attack`` (``attack.py``) on a finished train run: trains CycleAdvGAN against the frozen F, then attacks the
  test split with CycleAdvGAN, FGSM (ε 0.03), PGD (ε 0.03, α 0.01, 10 steps, random start), SMIA and HFC (PGD's
  budget; see ``attack.py``) and uniform noise with each image's CycleAdvGAN L2 norm (the card's sanity baseline).
- ``transfer`` (``sweeps.py``): the source × target ASR matrix as a sweep: one train run per model of
  ``transfer.models`` other than the parent's (``model.arch``, random init), one attack run per source, then each
  source's saved adversarial images are fed to every target.
- ``sweep-lambda`` (``sweeps.py``): one attack run per λ of ``sweep_lambda.lambdas``, then a table and the
  ASR/SSIM-vs-λ plot (Fig. 2). The children of both sweeps are ordinary runs, reused when complete.

CycleAdvGAN follows the card's reading of Eq. 1–5 with its **sign correction** of Eq. 4 (``attack.py``): λ = 0.7,
λ_cyc = 1 (no weight in the paper), λ_idt = 0, CycleGAN's recipe (Adam lr 2e-4, β (0.5, 0.999), batch 1, 100
constant + 100 linearly decaying epochs, a 50-image history pool; the paper gives none).

Choices where the card is silent or offers options:
- GAN training data: all non-test images of the minority domain and a seeded same-size sample of the majority;
  an epoch pairs them in a fixed order shuffled per epoch (CycleGAN draws an unaligned partner at random).
- ASR counts test images F classifies correctly when clean (``n_attacked``); clean accuracy is logged beside it.
  SSIM (skimage, ``channel_axis=-1``, ``data_range=1``) is averaged over the same images.
- Resuming an interrupted attack run restores generators, discriminators and optimisers from ``last.ckpt`` but
  starts the history pools empty (they are not checkpointed).
- F's training drops the last partial batch of an epoch (BatchNorm cannot train on a batch of one).
- ``predict`` without ``predict.input`` predicts the eval split; transfer's extra targets start from random init
  (``model.weights`` is the parent architecture's backbone).
- Inception-V3 is ``models.inception_v3`` (torchvision's layout and parameter count, no auxiliary head: the card
  runs it at 224 px); MedViT-S is ``models.medvit``, written from its paper (no Patch Moment Changer augmentation).
  Both start from random init unless ``model.weights`` is given. ``vit_s`` (MONAI ViT-S/16), once the MedViT
  stand-in, stays as an extra model with its own name and no paper cells.
- SMIA and HFC have no recipe in the card beyond "their papers' settings"; both use PGD's budget so that their SSIM
  is comparable (``attack.py`` lists the rest).
- The fixture smoke (``<dataset>.fixture.yaml``) runs at 32² with the 4-conv CNN as F and a tiny CycleAdvGAN
  (ngf = ndf = 8, 2 blocks, 120 steps, lr 1e-3, λ_cyc 10, λ_idt 2): the card's size (ResNet-18 at 64², ngf 16,
  3 blocks, ~400 steps) gave FGSM ASR 0.375 and SSIM 0.549 on the ISIC fixture, below or at its thresholds. The
  smoke requires CycleAdvGAN's ASR to beat same-L2 uniform noise by at least 0.3 (the card: "higher than" noise,
  no number). Noise of the GAN's L2 norm flips every benign fixture image (their class signal is the absence of
  high-frequency texture, which noise adds) and no malignant one, so the gain is at most the malignant share of
  the attacked images (about 0.46; measured 0.46 with the GAN after 3 of 10 epochs: ASR 1.0 against noise 0.54);
  0.3 fails a GAN that fools fewer than about 84 %. SMIA and HFC, like FGSM and PGD, must reach ASR 0.5.
- Own images (``--dataset imagefolder``, the kit's ``OwnImages``): two class folders (``dataset.classes`` picks
  two of more, in label order), the first B (0) and the second M (1), the attacked domain; a stratified 1/k test
  part (``test_fraction_folds``), every readable format with ``dataset.intensity``. ``attack`` needs nothing
  dataset-specific and runs on them (no paper numbers to compare).
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import lightning as L
import numpy as np
import torch
import torch.nn.functional as F

from medrun.datasets import chestxray, isic2020
from medrun.errors import UsageError
from medrun.metrics import classification as cm
from medrun.models import attack_targets

from .. import training
from ..report import confusion_axes, paper_note, read_series
from ..tasks import classification as clf
from ..tasks.supervised import Supervised
from .attack import ARCH_NAMES


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
    """F with cross-entropy and Adam; inputs arrive as raw 0–255 values and are scaled to [0, 1] here. Logs the
    validation AUROC and ``val_select`` (the AUROC with ties broken by the lower loss) for ``ModelCheckpoint``."""

    def __init__(self, net, lr: float, augment: bool):
        super().__init__()
        self.net, self.lr, self.augment = net, lr, augment
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
        self.log("val_loss", F.cross_entropy(logits, y), on_step=False, on_epoch=True, prog_bar=True,
                 batch_size=len(y))
        self._val.append((torch.softmax(logits, 1)[:, 1].detach().cpu(), y.cpu(),
                          F.cross_entropy(logits, y, reduction="none").detach().cpu()))

    def on_validation_epoch_end(self):
        p, y, losses = (torch.cat(t).numpy() for t in zip(*self._val, strict=True))
        self._val = []
        loss = float(losses.mean())
        auc = cm.auroc(y, np.stack([1 - p, p], 1), average="macro") if len(set(y.tolist())) == 2 else float("nan")
        self.log("val_auc", float(auc), prog_bar=True)
        self.log("val_acc", float(((p >= 0.5).astype(int) == y).mean()))
        # distinct AUCs differ by ≥ 1/(n_pos·n_neg) ≫ 1e-6, so this orders epochs by AUC, then by lower loss
        self.log("val_select", torch.tensor(float(auc) - 1e-9 * min(loss, 1e3), dtype=torch.float64))

    def configure_optimizers(self):
        return torch.optim.Adam(self.parameters(), lr=self.lr)


class _Scaled(torch.nn.Module):
    """F on raw 0–255 inputs (what the shared classification evaluation feeds)."""

    def __init__(self, net):
        super().__init__()
        self.net = net

    def forward(self, x):
        return self.net(x / 255.0)


class CycleAdvGan(clf.OwnImages, Supervised):
    report_split = "test"
    val_split = "val"

    def build_model(self, arch: str | None = None):
        mm = self.m.model
        return attack_targets.build(arch or mm.arch, self.m.dataset.img_size, mm.hidden, mm.dropout)

    # -- data -----------------------------------------------------------------------------------------------
    @property
    def root(self) -> Path:
        return self.ctx.data_roots[self.m.dataset.name]

    num_classes_expected = 2  # the card's two-FC head ends in Linear(→2): B and M

    def class_count_fix(self, found: int) -> str:
        return "keep two class folders, or name two in the manifest's dataset.classes (the second is the attacked M)"

    def classes(self) -> list[str]:
        if self.own:
            return self.trained_classes()
        return isic2020.CLASSES if self.m.dataset.name == "isic2020" else chestxray.CLASSES

    def splits(self) -> dict[str, list]:
        d = self.m.dataset
        if self.own:
            train, test = clf.stratified_split(self.read_own()[0], 1 / d.test_fraction_folds, d.split_seed)
        elif d.name == "isic2020":
            train, test = isic2020.split(isic2020.read(self.root), d.split_seed, d.test_fraction_folds)
        else:
            train, test = chestxray.read(self.root, "train"), chestxray.read(self.root, "test")
        fit, val = clf.stratified_split(train, d.val_fraction, d.split_seed)
        splits = {"train": fit, "val": val, "test": test}
        self.ctx.record_splits(splits)
        return splits

    def images(self, samples) -> torch.Tensor:
        """[0, 1] float tensor (N, 3, S, S); an unreadable file is a DataError naming it."""
        ds = clf.ImageSamples(samples, self.m.dataset.img_size, self.m.dataset.intensity)
        return torch.stack([ds[i][0] for i in range(len(ds))]) / 255.0 if len(ds) else torch.zeros(0, 3, 1, 1)

    # -- train: the template's hooks ------------------------------------------------------------------------------
    def dataset(self, samples, train: bool):
        return clf.ImageSamples(samples, self.m.dataset.img_size, self.m.dataset.intensity)

    def train_loader(self, splits: dict):
        """Shuffled by (seed, epoch) and resumable; the last partial batch is dropped (BatchNorm cannot train on a
        batch of one, which a small split can leave)."""
        t, ds = self.m.train, self.dataset(splits["train"], True)
        return training.ResumableLoader(ds, t.batch_size, self.m.seed, drop_last=len(ds) > t.batch_size,
                                        num_workers=t.num_workers, persistent_workers=t.num_workers > 0)

    def lit_module(self, net):
        return LitTarget(net, self.m.train.lr, self.m.train.augment)

    def trainer_kwargs(self) -> dict:
        self._best = training.ModelCheckpoint(dirpath=self.ctx.path / "checkpoints", filename="best",
                                              monitor="val_select", mode="max", save_top_k=1, save_weights_only=True,
                                              enable_version_counter=False)
        return {"callbacks": [self._best]}

    def fit(self, splits: dict, net=None, *, checkpoint: bool = True):
        """F from its initial weights; then the weights of the best validation epoch (``checkpoints/best.ckpt``)."""
        net, secs = super().fit(splits, self._initial_model() if net is None else net, checkpoint=checkpoint)
        best = Path(self._best.best_model_path)
        epoch = torch.load(best, map_location="cpu", weights_only=True)["epoch"]
        auc = dict(read_series(self.ctx.path / "logs" / "metrics.csv").get("val_auc", []))
        self.best = {"best_epoch": epoch + 1, "best_val_auc": auc.get(float(epoch), float("nan"))}
        return training.load_weights(net, best, prefix="net.").eval(), secs

    def _initial_model(self):
        arch, mm = self.m.model.arch, self.m.model
        net = self.build_model()
        if mm.weights:
            state = training.load_state(Path(mm.weights).expanduser())
            own = net.features.state_dict()
            usable = {k.removeprefix("features."): v for k, v in state.items()}
            usable = {k: v for k, v in usable.items() if k in own and tuple(own[k].shape) == tuple(v.shape)}
            if len(usable) < len(own) // 2:
                raise UsageError(f"model.weights {mm.weights} fit only {len(usable)} of {len(own)} backbone "
                                 f"tensors of {arch}", fix="pass a state dict of the same architecture")
            net.features.load_state_dict(usable, strict=False)
            missing = sorted(set(own) - set(usable))
            self.ctx.log(f"model.weights: loaded {len(usable)} of {len(own)} backbone tensors of {arch}"
                         + (f"; {len(missing)} left at random init (first: {missing[0]})" if missing else ""))
            self.ctx.run.update_info(weights_loaded=len(usable), weights_missing=len(missing))
        elif arch not in ("resnet18", "small_cnn"):
            self.ctx.log(f"{arch}: no model.weights given, starting from random init (the paper fine-tunes "
                         "ImageNet weights)")
        return net

    def weights_metadata(self) -> dict:
        return {"pipeline": "cycleadvgan", "arch": self.m.model.arch, **self.classes_metadata(self.classes())}

    def train(self) -> dict:
        metrics = super().train()
        metrics.update(self.best)
        return metrics

    # -- evaluation and prediction ---------------------------------------------------------------------------------
    def evaluate(self, net, samples):
        metrics, rows = clf.evaluate(_Scaled(net), samples, self.m.dataset.img_size, self.classes(),
                                     self.m.train.batch_size, self.predictor, self.m.dataset.intensity)
        metrics.update(auroc=metrics["auroc_macro"], arch=self.m.model.arch)
        return metrics, rows

    def figures(self, net, samples, metrics, rows, split):
        with self.ctx.figure("confusion_matrix", figsize=(4.9, 4.2)) as (_, ax):
            confusion_axes(ax, np.asarray(metrics["confusion_matrix"]), self.classes(),
                           f"{self.m.dataset.name} {split}")

    def summary_line(self, split, metrics):
        return f"{split}: accuracy {metrics['accuracy']:.4f}  AUROC {metrics['auroc']:.4f}"

    def paper_sections(self, metrics):
        return [clf.per_class_table(metrics), paper_note(self.ctx.spec, "train")]

    def paper_kwargs(self, split, metrics):
        return {"title": f"CycleAdvGAN target classifier F ({ARCH_NAMES[self.m.model.arch]})", "expect": {},
                "table": "", "setting": "the target classifier F (the paper reports no classifier metrics)"}

    def predict_items(self):
        if self.m.predict.input:
            return [isic2020.Sample(p, -1) for p in self.ctx.predict_inputs(self.m.predict.input,
                                                                             self.predict_suffixes())]
        return super().predict_items()

    def predict_rows(self, net, samples):
        classes = self.classes()
        probs = clf.predict_probs(_Scaled(net), clf.ImageSamples(samples, self.m.dataset.img_size,
                                                                 self.m.dataset.intensity),
                                  self.m.train.batch_size, self.predictor)
        return [{"file": str(s.path), "pred": classes[int(p.argmax())],
                 **{f"prob_{c}": float(p[j]) for j, c in enumerate(classes)}} for s, p in zip(samples, probs,
                                                                                            strict=True)]

    def predict_summary(self, rows):
        counts = Counter(r["pred"] for r in rows)
        self.ctx.log("predicted: " + ", ".join(f"{c} {counts[c]}" for c in self.classes()))
        return {"predicted": {c: counts[c] for c in self.classes()}}

    # -- the attack stages ------------------------------------------------------------------------------------------
    def attack(self) -> dict:
        from .attack import attack

        return attack(self)

    def transfer(self) -> dict:
        from .sweeps import transfer

        return transfer(self)

    def sweep_lambda(self) -> dict:
        from .sweeps import sweep_lambda

        return sweep_lambda(self)

    # -- export ------------------------------------------------------------------------------------------------
    def bundle_parts(self) -> dict:
        """What `medrun export --format monai-bundle` needs: the target classifier F, preprocessing identical to
        eval's (PIL: RGB, bilinear resize to img_size, channels first, 0–255 scaled to [0, 1]) and softmax scores."""
        mm, size, classes = self.m.model, self.m.dataset.img_size, self.classes()
        return {
            "task": f"The target classifier F of CycleAdvGAN: {' / '.join(classes)} from one image",
            "network_def": {"_target_": "medrun.models.create", "name": "attack-target", "arch": mm.arch,
                            "img_size": size, "hidden": mm.hidden, "dropout": mm.dropout},
            "classes": classes,
            "suffixes": [".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff"],
            "preprocessing": [
                {"_target_": "LoadImage", "reader": "PILReader", "reverse_indexing": False, "image_only": True,
                 "converter": f"$lambda im: im.convert('RGB').resize(({size}, {size}), PIL.Image.BILINEAR)"},
                {"_target_": "EnsureChannelFirst", "channel_dim": -1},
                {"_target_": "EnsureType", "dtype": "$torch.float32", "track_meta": False},
                {"_target_": "ScaleIntensityRange", "a_min": 0.0, "a_max": 255.0, "b_min": 0.0, "b_max": 1.0},
            ],
            "predict": "$torch.no_grad()(lambda f: dict(zip(@classes, torch.softmax(@network(@preprocessing(f)[None]"
                       ".to(@device)), 1)[0].tolist())))",
            "input": {"type": "image", "format": "magnitude", "modality": "XR" if self.m.dataset.name == "chestxray"
                      else "dermoscopy", "num_channels": 3, "spatial_shape": [size, size], "dtype": "float32",
                      "value_range": [0, 1], "is_patch_data": False, "channel_def": {"0": "R", "1": "G", "2": "B"}},
            "output": {"type": "probabilities", "format": "classes", "num_channels": len(classes),
                       "spatial_shape": [1, 1], "dtype": "float32", "value_range": [0, 1], "is_patch_data": False,
                       "channel_def": dict(enumerate(classes))},
            "readme": f"Input: one image per file (any size; resized to {size}×{size}, RGB, scaled to [0, 1]). "
                      f"Output: softmax scores over {', '.join(classes)}. The attack's generators are not "
                      "part of the bundle (they need the true label to pick G_M or G_B).",
        }
