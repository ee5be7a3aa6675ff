"""svd-gradcam, the method (card: docs/papers/svd-gradcam.md).

Data: MURA v1.1, one study type (``XR_ELBOW``); ``train/`` trains, ``valid/`` is both the early-stopping monitor
and the evaluation split, as in the paper (the official test set is hidden). Labels come from the study folder
(``*_positive`` = abnormal = 1); the CSVs are not needed. Images are resized to ``img_size``² (224, no aspect
preservation), replicated to 3 channels, and normalised with the ImageNet mean/std inside the network.

Classifier (``models.camnet``): MONAI DenseNet-169 features → ReLU (the CAM target layer, 1664×7×7 at 224²) →
global average pool → Linear(1664, 1) (12,486,145 parameters), or the optional Linear-LeakyReLU-Linear head. The
features start from a user-supplied torchvision ``densenet169`` state dict (``model.weights``; nothing is
downloaded) or random init with a warning. Training: binary focal loss (MONAI ``FocalLoss``, sigmoid, α 0.25,
γ 2), Adam (default betas), lr 0.01 (the paper; 1e-4 is the card's alternative), batch 8, up to 65 epochs, early
stopping on the valid loss with patience 10 (the last epoch's weights are kept, like Keras' default), random
horizontal flip and ±10° rotation on training batches.

Explanations (``explain.py``, the methods in ``cams.py``): the class explained is the predicted one, Y^c = logit
for "abnormal" and −logit for "normal", y = σ(Y^c) (p or 1 − p). SVD-Grad-CAM with the card's variants (a)–(d),
rank n (default (d), n = 1), and the baselines CAM, Grad-CAM (checked against captum ``LayerGradCam``),
Grad-CAM++, Smooth-Grad-CAM (25 copies, σ = 0.15·(max − min)), Score-CAM, Ablation-CAM (captum feature ablation
of the target channels), Eigen-CAM. Each map is upsampled bilinearly to the input and min-max normalised to [0, 1].

Metrics (``metrics.saliency``, Poppi et al. as the card defines them) with E = x ⊙ L applied to the raw image
(masked pixels become black before the network's normalisation; the card leaves the space open); the class and
sign stay those of the original image; the CAM of E for coherency uses the same method. Average Drop and Average
Increase in percent, Coherency and Complexity ×100, ADCC from the averaged terms ×100, as in Table 2.

Choices where the card is silent or offers options:
- Gradients are taken before the target ReLU (``explain.gradient: pre_relu``): G^k = ∂Y^c/∂M^k · 1[M^k > 0].
  Taken literally at the ReLU output, a GAP + linear head gives every channel a constant gradient map (w_k/PQ),
  which has rank 1, so SVD-Grad-CAM would equal Grad-CAM (and CAM) for every n and the paper's Table 2 could not
  differ; Grad-CAM code run on torchvision's DenseNet (in-place final ReLU, hook on ``features.norm5``) sees exactly
  the pre-ReLU gradient with the post-ReLU activations. ``gradient: map`` gives the literal reading. Table 2's
  identical CAM and Grad-CAM rows are then not reproduced exactly (CAM ≠ Grad-CAM under pre-ReLU gradients).
- The train stage also runs two cheap checks on the valid split (``train.check_rank_full``): the largest
  difference between full-rank SVD-Grad-CAM and Grad-CAM maps, and, where the data carries lesion positions
  (the fixture's ``fixture_lesions.csv``), the pointing accuracy of SVD-Grad-CAM for the "abnormal" score on
  abnormal images (peak within the blob radius plus half a feature cell; ``pointing_chance`` is that disc's area
  over the image's). They make the card's smoke thresholds checkable by ``medrun smoke`` on the train stage.
- The card's verbs map onto stages and options: ``explain`` writes the ``cam-metrics`` table for every method in
  ``explain.methods`` (Table 2's seven by default; ``gradcampp`` can be added); ``sweep-n`` (Exp. 1) and the variant
  comparison (Exp. 2) are extra rows from ``explain.sweep_ranks`` and ``explain.variants``; ``--method/--n/--variant``
  are ``-o explain.methods=[svd] -o explain.rank=2 -o explain.variant=uv``; ``--literal-eq`` is ``explain.literal_eq``.
- Eigen-CAM is not centred (the original paper) and its sign is fixed so the projection sums to ≥ 0.
- Score-CAM's weight is σ(Y^c(x ⊙ M_k)) (the card), not a softmax difference to a baseline.
- CAM needs a single Linear head on the default target layer; with the MLP head it is left out with a note.
- Forward passes of eval, predict and explain run through the predictor on the manifest's hardware; the CAMs
  (gradients, masked copies) run in float32 on the same device.
- The fixture's tiny CNN (card: a 4-conv CNN for the learning test) has no BatchNorm and trains with batch 4,
  lr 0.003 for 3 epochs; with focal loss (α 0.25) it ranks well (AUROC) but its 0-logit threshold calls most
  images normal, so accuracy sits near 0.5 and the fixture's CAM metrics explain the "normal" class.
- Own images (``--dataset imagefolder``, the kit's ``OwnImages``): two class folders (``dataset.classes`` picks two
  of more, in label order), the second the positive class the one logit scores and the maps explain; a stratified
  ``dataset.valid_fraction`` is the valid split; every readable format with ``dataset.intensity``; no paper numbers.
- The explain stage's ``maps/<method>.npy`` hold the low-resolution maps (N, P, Q) before upsampling (the
  upsampled ones are a deterministic function of them and 32× larger at 224²).
"""

from __future__ import annotations

import math
from collections import Counter
from pathlib import Path

import lightning as L
import numpy as np
import torch
import torch.nn.functional as F

from medrun.datasets import mura
from medrun.errors import UsageError
from medrun.metrics import classification as cm
from medrun.models.camnet import CamNet, densenet169, load_torchvision_densenet, tiny_cnn

from .. import training
from ..report import confusion_axes, markdown_table, paper_note
from ..tasks import classification as clf
from ..tasks.supervised import Supervised


class TwoClass(torch.nn.Module):
    """One logit z → two logits (−z/2, z/2), whose softmax is (1 − σ(z), σ(z)): reuses the shared evaluation."""

    def __init__(self, net):
        super().__init__()
        self.net = net

    def forward(self, x):
        z = self.net(x)
        return torch.cat([-z / 2, z / 2], dim=1)


def augment(x: torch.Tensor, degrees: float) -> torch.Tensor:
    """Random horizontal flip (p = 0.5) and rotation in ±degrees per image (bilinear, zero fill)."""
    b = len(x)
    flip = torch.rand(b) < 0.5
    x = torch.where(flip[:, None, None, None], x.flip(-1), x)
    if degrees > 0:
        t = (torch.rand(b) * 2 - 1) * math.radians(degrees)
        theta = torch.zeros(b, 2, 3)
        theta[:, 0, 0], theta[:, 0, 1], theta[:, 1, 0], theta[:, 1, 1] = t.cos(), -t.sin(), t.sin(), t.cos()
        grid = F.affine_grid(theta.to(x), list(x.shape), align_corners=False)
        x = F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    return x


class LitBinary(L.LightningModule):
    """One-logit classifier with sigmoid focal loss and Adam."""

    def __init__(self, net: CamNet, lr: float, betas, alpha: float, gamma: float, augment_deg: float | None):
        super().__init__()
        from monai.losses import FocalLoss

        self.net, self.lr, self.betas, self.augment_deg = net, lr, tuple(betas), augment_deg
        self.loss = FocalLoss(gamma=gamma, alpha=alpha, use_softmax=False, reduction="mean")

    def _step(self, batch, prefix: str):
        x, y = batch
        if prefix == "train" and self.augment_deg is not None:
            x = augment(x, self.augment_deg)
        logits = self.net(x)
        loss = self.loss(logits, y.float()[:, None])
        acc = ((logits[:, 0] > 0).long() == y).float().mean()
        kw = {"on_step": False, "on_epoch": True, "prog_bar": True, "batch_size": len(y), "sync_dist": True}
        self.log(f"{prefix}_loss", loss, **kw)
        self.log(f"{prefix}_acc", acc, **kw)
        return loss

    def training_step(self, batch, batch_idx):
        return self._step(batch, "train")

    def validation_step(self, batch, batch_idx):
        self._step(batch, "val")

    def configure_optimizers(self):
        return torch.optim.Adam(self.parameters(), lr=self.lr, betas=self.betas)


class SvdGradCam(clf.OwnImages, Supervised):
    report_split = "valid"  # the paper evaluates on MURA's valid split (its test split is hidden)
    val_split = "valid"
    num_classes_expected = 2  # one logit: the second class folder is the positive ("abnormal") one the CAMs explain

    def class_count_fix(self, found: int) -> str:
        return ("keep two class folders, or name two in the manifest's dataset.classes (the second is the one the "
                "maps explain)")

    def classes(self) -> list[str]:
        if not self.own:
            return list(mura.CLASSES)
        if "_classes" not in self.__dict__:  # read once: predict and explain ask per row and per figure
            self._classes = self.trained_classes()
        return self._classes

    def build_model(self) -> CamNet:
        mm = self.m.model
        return densenet169(mm.head) if mm.arch == "densenet169" else tiny_cnn(mm.width, mm.head)

    def _initial_model(self) -> CamNet:
        net, mm = self.build_model(), self.m.model
        if mm.weights:
            if mm.arch != "densenet169":
                raise UsageError("model.weights initialises DenseNet-169 features",
                                 fix="set model.arch=densenet169 or drop model.weights")
            path = Path(mm.weights).expanduser()
            missing, wrong = load_torchvision_densenet(net, training.load_state(path))
            if missing or wrong:
                what = ", ".join(([f"{len(missing)} missing (e.g. {missing[0]})"] if missing else [])
                                 + ([f"{len(wrong)} with other shapes (e.g. {wrong[0]})"] if wrong else []))
                raise UsageError(f"weights in {path} do not fit DenseNet-169's features: {what}",
                                 fix="pass a torchvision densenet169 state dict (model.weights) or drop it for "
                                     "random init")
            self.ctx.log(f"features initialised from {path}")
        elif mm.arch == "densenet169":
            self.ctx.log("warning: no model.weights — DenseNet-169 starts from random init (the paper fine-tunes "
                         "ImageNet weights; pass a torchvision densenet169 .pth with -o model.weights=FILE)")
        return net

    # -- data -----------------------------------------------------------------------------------------------
    @property
    def root(self) -> Path:
        return self.ctx.data_roots[self.m.dataset.name]

    def samples(self, split: str) -> list:
        if self.own:  # a stratified valid share of the class folders (MURA has its own valid split), read once
            if "_own_split" not in self.__dict__:
                d = self.m.dataset
                train, valid = clf.stratified_split(self.read_own()[0], d.valid_fraction, d.split_seed)
                self._own_split = {"train": train, "valid": valid}
            return self._own_split[split]
        s = mura.read(self.root, split, self.m.dataset.study_type)
        counts = Counter(x.label for x in s)
        self.ctx.log(f"{split} {self.m.dataset.study_type}: {len(s)} images — normal {counts[0]}, "
                     f"abnormal {counts[1]}")
        return s

    def splits(self) -> dict:
        splits = {"train": self.samples("train"), "valid": self.samples("valid")}
        self.ctx.record_splits(splits)
        return splits

    def images(self, samples) -> torch.Tensor:
        """Raw 0–255 float images (N, 3, S, S); an unreadable file is a DataError naming it."""
        ds = clf.ImageSamples(samples, self.m.dataset.img_size, self.m.dataset.intensity)
        return torch.stack([ds[i][0] for i in range(len(ds))]) if len(ds) else torch.zeros(0, 3, 1, 1)

    # -- training: the template's hooks -------------------------------------------------------------------------
    def dataset(self, samples, train: bool):
        return clf.ImageSamples(samples, self.m.dataset.img_size, self.m.dataset.intensity)

    def lit_module(self, net):
        t = self.m.train
        return LitBinary(net, t.lr, t.betas, t.focal_alpha, t.focal_gamma, t.rotate_deg if t.augment else None)

    def trainer_kwargs(self) -> dict:
        from lightning.pytorch.callbacks import EarlyStopping

        p = self.m.train.patience
        self._stop = EarlyStopping(monitor="val_loss", patience=p, mode="min") if p else None
        return {"callbacks": [self._stop] if p else []}

    def fit(self, splits: dict, net=None, *, checkpoint: bool = True):
        return super().fit(splits, self._initial_model() if net is None else net, checkpoint=checkpoint)

    def weights_metadata(self) -> dict:
        return {"pipeline": "svd-gradcam", "arch": self.m.model.arch, **self.classes_metadata(self.classes())}

    def train(self) -> dict:
        metrics = super().train()
        stopped = self._stop.stopped_epoch if self._stop is not None else 0
        epochs = stopped + 1 if stopped else self.epochs
        metrics.update(epochs_run=epochs, secs_per_epoch=round(metrics["secs_per_epoch"] * self.epochs / epochs, 3))
        return metrics

    # -- evaluation --------------------------------------------------------------------------------------------
    def evaluate(self, net, samples):
        """Classifier metrics through the predictor; a train run adds the CAM checks (``train.check_rank_full``)."""
        classes = self.classes()
        metrics, rows = clf.evaluate(TwoClass(net), samples, self.m.dataset.img_size, classes,
                                     self.m.train.batch_size, self.predictor, self.m.dataset.intensity)
        y = np.array([classes.index(r["true"]) for r in rows])
        pred = np.array([classes.index(r["pred"]) for r in rows])
        metrics.update(auroc=metrics["auroc_macro"], kappa=cm.quadratic_kappa(y, pred))
        if self.ctx.stage == "train" and self.m.train.check_rank_full:
            from .explain import cam_checks

            self.checks = cam_checks(self, net, samples)
            metrics.update(self.checks)
        return metrics, rows

    def figures(self, net, samples, metrics, rows, split):
        with self.ctx.figure("confusion_matrix", figsize=(4.9, 4.2)) as (_, ax):
            confusion_axes(ax, np.asarray(metrics["confusion_matrix"]), self.classes(),
                           f"own images {split}" if self.own else f"MURA {self.m.dataset.study_type} {split}")

    def summary_line(self, split, metrics):
        return (f"{split}: AUROC {metrics['auroc']:.4f}  accuracy {metrics['accuracy']:.4f}  "
                f"kappa {metrics['kappa']:.4f}"
                + (f"  pointing(SVD-Grad-CAM) {metrics['pointing_svd']:.3f}" if "pointing_svd" in metrics else ""))

    def paper_sections(self, metrics):
        checks = getattr(self, "checks", None) or {}
        table = markdown_table(["check", "value"], [[k, v] for k, v in checks.items()])
        return [clf.per_class_table(metrics), *([f"## Explanation checks (this run)\n\n{table}"] if checks else []),
                paper_note(self.ctx.spec, "train")]

    def paper_kwargs(self, split, metrics):
        return {"title": "SVD-Grad-CAM classifier (DenseNet-169, MURA)", "expect": {}, "table": "",
                "setting": "the classifier the CAMs explain (the paper reports no classifier metrics)"}

    # -- prediction ----------------------------------------------------------------------------------------------
    def predict_items(self):
        src = self.m.predict.input
        if not src:
            return self.split_of(self.splits())
        if self.own:
            return [mura.Sample(p, -1, "", "") for p in self.ctx.predict_inputs(src, self.predict_suffixes())]
        if Path(src).expanduser().is_dir():  # MURA nests images in patient/study folders
            src = f"{Path(src).expanduser()}/**/*.png"
        return [mura.Sample(p, -1, "", "") for p in self.ctx.predict_inputs(src, (".png",), what="PNG images")]

    def predict_rows(self, net, samples):
        classes = self.classes()
        probs = clf.predict_probs(TwoClass(net), clf.ImageSamples(samples, self.m.dataset.img_size,
                                                                  self.m.dataset.intensity),
                                  self.m.train.batch_size, self.predictor)
        return [{"file": str(s.path), "pred": classes[int(p[1] >= 0.5)], f"prob_{classes[1]}": float(p[1])}
                for s, p in zip(samples, probs, strict=True)]

    def predict_summary(self, rows):
        classes, counts = self.classes(), Counter(r["pred"] for r in rows)
        self.ctx.log("predicted: " + ", ".join(f"{c} {counts[c]}" for c in classes))
        return {"predicted": {c: counts[c] for c in classes}}

    # -- explanations (Table 1, Table 2) --------------------------------------------------------------------
    def explain(self) -> dict:
        from .explain import explain

        return explain(self)

    # -- export ------------------------------------------------------------------------------------------------
    def bundle_parts(self) -> dict:
        """What `medrun export --format monai-bundle` needs: the classifier, preprocessing identical to eval's (PIL:
        RGB, bilinear resize to img_size, raw 0–255 floats, channels first) and σ(logit) as P(abnormal)."""
        mm, size = self.m.model, self.m.dataset.img_size
        net = ({"name": "camnet-densenet169", "head": mm.head} if mm.arch == "densenet169"
               else {"name": "camnet-tiny", "width": mm.width, "head": mm.head})
        return {
            "task": f"Normal / abnormal classification of one MURA {self.m.dataset.study_type} radiograph",
            "network_def": {"_target_": "medrun.models.create", **net},
            "classes": mura.CLASSES,
            "suffixes": [".png"],
            "preprocessing": [
                {"_target_": "LoadImage", "reader": "PILReader", "reverse_indexing": False, "image_only": True,
                 "converter": f"$lambda im: im.convert('RGB').resize(({size}, {size}), PIL.Image.BILINEAR)"},
                {"_target_": "EnsureChannelFirst", "channel_dim": -1},
                {"_target_": "EnsureType", "dtype": "$torch.float32", "track_meta": False},
            ],
            "predict": "$torch.no_grad()(lambda f: (lambda p: {'normal': 1 - p, 'abnormal': p})(torch.sigmoid("
                       "@network(@preprocessing(f)[None].to(@device)))[0, 0].item()))",
            "input": {"type": "image", "format": "magnitude", "modality": "XR", "num_channels": 3,
                      "spatial_shape": [size, size], "dtype": "float32", "value_range": [0, 255],
                      "is_patch_data": False, "channel_def": {"0": "R", "1": "G", "2": "B"}},
            "output": {"type": "probabilities", "format": "classes", "num_channels": 2, "spatial_shape": [1, 1],
                       "dtype": "float32", "value_range": [0, 1], "is_patch_data": False,
                       "channel_def": dict(enumerate(mura.CLASSES))},
            "readme": f"Input: one radiograph per PNG (any size; resized to {size}×{size}, RGB, raw 0–255 values). "
                      "Output: P(normal), P(abnormal) = σ(logit).",
        }
