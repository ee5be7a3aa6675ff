"""counterfactual-ldm: CDCT, counterfactual trajectories with a latent diffusion model for concept discovery (card:
docs/papers/counterfactual-ldm.md).

The chain, each stage a run of its own on the run before it (``medrun reproduce`` runs them all in order)::

    train-classifier → train-concepts → caption → finetune-ldm → generate → train-vae → discover
                                                              └──→ eval (Table 1: MEL↔NV on the test split)

Data: ISIC in its public layout (``datasets/isic2019``; more years as extra ``dataset.sources``). Splits come from
``splits.csv`` when present, otherwise the card's default: a stratified 81 % train share (seed ``split_seed``), the
rest halved, stratified, into val and test.

Choices (the card's defaults where the paper is silent, plus ours):

- f_φ: MONAI's 2D ResNet50 (stem stride 2 as torchvision's), 8-way softmax, Adam 1e-4, batch 32, 30 epochs, random
  flips and 90° rotations; the epoch with the best validation balanced accuracy is kept (Lightning
  ``ModelCheckpoint(monitor="val_bacc")``). The network takes images in [0, 1] and resizes + normalises inside, so
  the guidance gradient flows through its preprocessing. ImageNet weights cannot be downloaded: random init, or
  ``classifier.weights``.
- Concept classifiers: one copy of the trained f_φ with a six-output head fine-tuned with a masked BCE (blank
  labels ignored) instead of six separate copies (same backbone start, one sixth of the cost; a deviation).
- Captions: "dermoscopic image of <diagnosis> with <concepts present>"; annotation where known, else the concept
  head with p > ``concepts.threshold``.
- LDM: diffusers' ``AutoencoderKL``, ``UNet2DConditionModel``, ``PNDMScheduler(skip_prk_steps=True)`` for sampling
  and ``DDPMScheduler`` for the ε-MSE fine-tuning (AdamW, batch 8, 15K steps, lr 1e-5). With ``finetune_ldm.sd_path``
  the parts load from a local diffusers-format SD 2.1 folder (local files only; text encoder and VAE frozen). Without
  it, the card's tiny configs at random init: AutoencoderKL (32, 64, 64) with 4 latent channels (4× down), a UNet
  (32, 64) with cross-attention width 32, and a word-level embedding text tower built from the caption vocabulary;
  on that path the AutoencoderKL is first trained for ``vae_steps`` steps (SD's is pretrained) and the text tower
  trains with the UNet.
- Guided generation exactly as the card's Step 1b (see ``generate.py``): ``num_inference_steps`` 50, the last
  ``guided_steps`` (10) of the PNDM grid guided, λ_c 4, guidance scale 1, no L1/perceptual proximity term,
  z̃ = z − g (DiME's Σ-scaling with ``scale_by_sigma``). The same noise per source for every target and every λ.
- Concept VAE and Algorithm 1 as the card (``concept_vae.py``, ``discover.py``): replacement values −3…3, top-K
  10 by Δ̄ on the val split; success rate on test images not already predicted as the class.
- Table 1 (``eval``, on the ``finetune-ldm`` run): it generates its own MEL→NV and NV→MEL counterfactuals of the
  test split (``generate``'s settings; ``generate.subset`` per pair); L1 and L2 on [0, 1] images at the LDM
  resolution; FR by f_φ (p > 0.5); FID between the factual and counterfactual sets only with a user TorchScript
  Inception-v3 (``eval.inception_weights``), otherwise "unavailable".
- PNDM's first step is two UNet calls (diffusers' own PLMS start), so a T = 10 trajectory costs 57 calls (card: 55).
- Earlier models are found by walking up the chain of parent runs, each file checked against its run's
  MANIFEST.sha256; ``reproduce`` runs the chain as child runs (one ``ctx.sweep`` per stage, reused when complete).
- The concept VAE's perceptual term needs VGG19 weights (``vae.vgg19_weights``): without them the stage stops
  (exit 4) unless ``vae.perceptual: false`` (the fixture's setting).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from medrun.datasets import isic2019
from medrun.errors import UsageError

from .. import training
from ..base import Pipeline
from ..report import markdown_table, paper_md, paper_note

CLASSES = isic2019.CLASSES
NAMES = {"NV": "nevus", "SCC": "squamous cell carcinoma", "BKL": "benign keratosis", "AK": "actinic keratosis",
         "BCC": "basal cell carcinoma", "MEL": "melanoma", "DF": "dermatofibroma", "VASC": "vascular lesion"}
CONCEPT_WORDS = {"streaks": "streaks", "pigment_network": "pigment network", "dots_globules": "dots and globules",
                 "blue_whitish_veil": "blue-whitish veil", "regression_structures": "regression structures",
                 "vascular_structures": "vascular structures"}


class Classifier(nn.Module):
    """f_φ: images in [0, 1] (any size) → logits; resize and ImageNet normalisation inside (differentiable)."""

    def __init__(self, arch: str = "resnet50", size: int = 224, num_classes: int = len(CLASSES)):
        super().__init__()
        from monai.networks.nets import resnet18, resnet50

        make = {"resnet50": resnet50, "resnet18": resnet18}[arch]
        self.size = size
        self.net = make(spatial_dims=2, n_input_channels=3, num_classes=num_classes, conv1_t_stride=2)
        self.register_buffer("mean", torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1), persistent=False)

    def forward(self, x):
        if x.shape[-1] != self.size or x.shape[-2] != self.size:
            x = F.interpolate(x, size=(self.size, self.size), mode="bilinear", align_corners=False, antialias=False)
        return self.net((x - self.mean) / self.std)


def balanced_accuracy(y: np.ndarray, pred: np.ndarray, n: int = len(CLASSES)) -> float:
    from sklearn.metrics import balanced_accuracy_score

    return float(balanced_accuracy_score(y, pred)) if len(y) else float("nan")


def augment(x: torch.Tensor) -> torch.Tensor:
    if torch.rand(()) < 0.5:
        x = x.flip(-1)
    if torch.rand(()) < 0.5:
        x = x.flip(-2)
    return torch.rot90(x, int(torch.randint(0, 4, ())), dims=(-2, -1))


def lit_module(net, lr: float, loss: str = "ce", aug: bool = True, mask_value: float = -1.0):
    """A LightningModule around ``net`` (inputs 0–255 floats from ``ImageSamples``): cross-entropy for f_φ
    (val: balanced accuracy) or a masked BCE for the concept head (labels −1 = unknown)."""
    import lightning as L

    class Lit(L.LightningModule):
        def __init__(self):
            super().__init__()
            self.net, self._val = net, []

        def _loss(self, x, y):
            out = self.net(x / 255.0)
            if loss == "ce":
                return F.cross_entropy(out, y), out
            known = y != mask_value
            return F.binary_cross_entropy_with_logits(out[known], y[known].float()) if known.any() else \
                out.sum() * 0, out

        def training_step(self, batch, i):
            x, y = batch
            value, _ = self._loss(augment(x) if aug else x, y)
            self.log("train_loss", value, on_epoch=True, on_step=False, prog_bar=True)
            return value

        def validation_step(self, batch, i):
            x, y = batch
            value, out = self._loss(x, y)
            self.log("val_loss", value, on_epoch=True, on_step=False)
            if loss == "ce":
                self._val.append((y.cpu(), out.argmax(1).cpu()))

        def on_validation_epoch_end(self):
            if loss == "ce" and self._val:
                y, p = (torch.cat(t).numpy() for t in zip(*self._val, strict=True))
                self.log("val_bacc", balanced_accuracy(y, p), prog_bar=True)
                self._val = []

        def configure_optimizers(self):
            return torch.optim.Adam(self.net.parameters(), lr=lr)

    return Lit()


class ConceptSamples(torch.utils.data.Dataset):
    def __init__(self, samples, size: int, labels: dict):
        from ..tasks.classification import ImageSamples

        self.images, self.labels = ImageSamples(samples, size), labels
        self.ids = [s.id for s in samples]

    def __len__(self):
        return len(self.ids)

    def __getitem__(self, i):
        y = [-1.0 if v is None else v for v in self.labels[self.ids[i]]]
        return self.images[i][0], torch.tensor(y)


class CounterfactualLdm(Pipeline):
    # -- data ----------------------------------------------------------------------------------------------------
    @property
    def root(self) -> Path:
        return Path(self.ctx.data_roots["isic"])

    def splits(self) -> dict:
        d = self.m.dataset
        samples = isic2019.read(self.root, d.sources)
        where = self.root / d.splits if d.splits else None
        if where is not None and where.is_file():
            of = isic2019.read_splits(where, [s.id for s in samples])
            out = {k: [s for s in samples if of.get(s.id) == k] for k in ("train", "val", "test")}
        else:
            from ..tasks.classification import stratified_split

            train, rest = stratified_split(samples, 1 - d.train_fraction, d.split_seed)
            val, test = stratified_split(rest, 0.5, d.split_seed)
            out = {"train": train, "val": val, "test": test}
        if not out["train"]:
            raise UsageError(f"no training images in {self.root}", fix="check splits.csv (image,split rows)")
        return out

    def concept_labels(self) -> dict:
        d = self.m.dataset
        path = self.root / d.concepts if d.concepts else None
        return isic2019.read_concepts(path) if path is not None and path.is_file() else {}

    def images(self, samples, size: int) -> torch.Tensor:
        """(N, 3, size, size) float images in [0, 1]."""
        from medrun.datasets.images import read_rgb

        if not samples:
            return torch.zeros(0, 3, size, size)
        return torch.from_numpy(np.stack([read_rgb(s.path, size) for s in samples])).permute(0, 3, 1, 2).float() / 255

    # -- runs up the chain ---------------------------------------------------------------------------------------
    def ancestor(self, stage: str):
        """The run of ``stage`` this run builds on (its parent, or the parent's parent …)."""
        from medrun.artifacts import RunDir

        run = self.ctx.parent
        while run is not None:
            info = run.info()
            if info.get("stage") == stage:
                return run
            run = RunDir(Path(info["parent_dir"])) if info.get("parent_dir") else None
        raise UsageError(f"stage '{self.ctx.stage}' needs a {stage} run up its chain of parents",
                         fix=f"run `medrun {stage} counterfactual-ldm ...` and the stages after it, or `medrun "
                             f"reproduce counterfactual-ldm ...`")

    def ancestor_file(self, stage: str, rel: str) -> Path:
        from medrun.artifacts import sha256_file
        from medrun.errors import DataError

        run = self.ancestor(stage)
        path, recorded = run.path / rel, run.recorded_hashes().get(rel)
        if recorded is None or sha256_file(path) != recorded:
            raise DataError(f"{path} is missing from or does not match its run's MANIFEST.sha256",
                            fix="run that stage again with --force")
        return path

    # -- f_φ -----------------------------------------------------------------------------------------------------
    def build_model(self) -> Classifier:
        c = self.m.classifier
        return Classifier(c.arch, c.size)

    def classifier(self) -> Classifier:
        """f_φ from ``classifier.weights`` or the chain's train-classifier run, frozen, eval mode."""
        net = self.build_model()
        path = Path(self.m.classifier.weights).expanduser() if self.m.classifier.weights else \
            self.ancestor_file("train-classifier", "checkpoints/model.safetensors")
        training.load_weights(net, path)
        return net.eval().requires_grad_(False)

    def probs(self, net, x: torch.Tensor, batch: int = 64) -> torch.Tensor:
        pred = self.ctx.predictor()
        if not len(x):
            return torch.zeros(0, len(CLASSES))
        return torch.cat([torch.softmax(pred(net, x[i:i + batch]), 1) for i in range(0, len(x), batch)])

    def _fit(self, module, train_ds, val_ds, epochs: int, batch: int, monitor: str | None):
        from lightning.pytorch.callbacks import ModelCheckpoint
        from torch.utils.data import DataLoader

        cbs = [ModelCheckpoint(dirpath=self.ctx.path / "checkpoints", filename="best", monitor=monitor, mode="max",
                               save_top_k=1, enable_version_counter=False)] if monitor else []
        trainer = training.make_trainer(self.ctx, epochs, callbacks=cbs)
        val = DataLoader(val_ds, batch_size=batch) if val_ds is not None and len(val_ds) else None
        training.fit(trainer, module, train_dataloaders=training.ResumableLoader(train_ds, batch, self.m.seed),
                     **({"val_dataloaders": val} if val is not None else {}),
                     ckpt_path=training.resume_checkpoint(self.ctx.run))
        best = cbs[0].best_model_path if cbs else ""
        if best:
            state = torch.load(best, map_location="cpu", weights_only=True)["state_dict"]
            module.load_state_dict(state)
        return module.net

    def train_classifier(self) -> dict:
        from ..tasks.classification import ImageSamples

        c, splits = self.m.classifier, self.splits()
        self.ctx.record_splits(splits)
        self.ctx.log(" · ".join(f"{k} {len(v)}" for k, v in splits.items()))
        net = self.build_model()
        if c.weights:
            training.load_weights(net, Path(c.weights).expanduser())
        ds = {k: ImageSamples(v, c.size) for k, v in splits.items()}
        net = self._fit(lit_module(net, c.lr, "ce", c.augment), ds["train"], ds["val"], c.epochs, c.batch_size,
                        "val_bacc" if len(ds["val"]) else None)
        training.save_weights(net, self.ctx.path / "checkpoints" / "model.safetensors",
                              {"pipeline": "counterfactual-ldm", "classes": ",".join(CLASSES), "arch": c.arch})
        self.ctx.learning_curves()
        net.eval()
        x = self.images(splits["test"], c.size)
        p = self.probs(net, x)
        y = np.array([s.label for s in splits["test"]])
        pred = p.argmax(1).numpy()
        self.ctx.write_csv("per_case.csv", [{"image": s.id, "label": CLASSES[s.label], "pred": CLASSES[k],
                                             **{f"p_{n}": float(v) for n, v in zip(CLASSES, q.tolist(), strict=True)}}
                                            for s, k, q in zip(splits["test"], pred, p, strict=True)])
        from ..report import confusion_axes

        cm = np.zeros((len(CLASSES), len(CLASSES)), int)
        for a, b in zip(y, pred, strict=True):
            cm[a, b] += 1
        with self.ctx.figure("confusion_matrix", figsize=(7, 6)) as (_, ax):
            confusion_axes(ax, cm, list(CLASSES), "f_φ on the test split")
        metrics = {"accuracy": float((pred == y).mean()) if len(y) else float("nan"),
                   "balanced_accuracy": balanced_accuracy(y, pred), "split": "test", **training.count_params(net)}
        self.ctx.log(f"f_φ test: accuracy {metrics['accuracy']:.3f}  balanced {metrics['balanced_accuracy']:.3f}")
        self.ctx.write_text("paper.md", paper_md(self.ctx.spec, self.m, metrics, self.ctx, title="CDCT: f_φ",
                                                 expect={}, keys=["accuracy", "balanced_accuracy"],
                                                 sections=["The paper gives no classifier numbers."]))
        return metrics

    # -- concept classifiers and captions ------------------------------------------------------------------------
    def concept_net(self) -> Classifier:
        net = self.build_model()
        net.net.fc = nn.Linear(net.net.fc.in_features, len(isic2019.CONCEPTS))
        return net

    def train_concepts(self) -> dict:
        c, splits, labels = self.m.concepts, self.splits(), self.concept_labels()
        net = self.build_model()
        training.load_weights(net, self.ancestor_file("train-classifier", "checkpoints/model.safetensors"))
        head = self.concept_net()
        head.net.load_state_dict({k: v for k, v in net.net.state_dict().items() if not k.startswith("fc.")},
                                 strict=False)
        labels = {k: v for k, v in labels.items() if any(x is not None for x in v)}
        known = {k: [s for s in v if s.id in labels] for k, v in splits.items()}
        if not known["train"]:
            raise UsageError(f"no training image has a concept annotation ({self.root / str(self.m.dataset.concepts)})",
                             fix="write concepts.csv (image," + ",".join(isic2019.CONCEPTS) + ")")
        size = self.m.classifier.size
        ds = {k: ConceptSamples(v, size, labels) for k, v in known.items()}
        head = self._fit(lit_module(head, c.lr, "bce", self.m.classifier.augment), ds["train"], ds["val"], c.epochs,
                         c.batch_size, None)
        training.save_weights(head, self.ctx.path / "checkpoints" / "model.safetensors",
                              {"pipeline": "counterfactual-ldm", "concepts": ",".join(isic2019.CONCEPTS)})
        self.ctx.learning_curves()
        metrics = {"n_annotated_train": len(known["train"])}
        rows = []
        test = known["test"] or known["val"]
        p = torch.sigmoid(self.ctx.predictor()(head.eval(), self.images(test, size))) if test else None
        for j, name in enumerate(isic2019.CONCEPTS):
            pairs = [(labels[s.id][j], float(p[i, j])) for i, s in enumerate(test) if labels[s.id][j] is not None]
            acc = float(np.mean([(q > c.threshold) == (t > 0.5) for t, q in pairs])) if pairs else float("nan")
            rows.append({"concept": name, "n": len(pairs), "accuracy": acc})
            metrics[f"acc_{name}"] = acc
        self.ctx.write_csv("per_case.csv", rows)
        return metrics

    def caption(self) -> dict:
        splits, labels, thr = self.splits(), self.concept_labels(), self.m.concepts.threshold
        head = self.concept_net()
        training.load_weights(head, self.ctx.parent_file("checkpoints/model.safetensors"))
        rows, filled = [], 0
        for split, samples in splits.items():
            p = torch.sigmoid(self.ctx.predictor()(head.eval(), self.images(samples, self.m.classifier.size))) \
                if samples else None
            for i, s in enumerate(samples):
                ann = labels.get(s.id, [None] * len(isic2019.CONCEPTS))
                present = []
                for j, name in enumerate(isic2019.CONCEPTS):
                    v = ann[j]
                    if v is None:
                        filled += 1
                        v = float(p[i, j] > thr)
                    if v > 0.5:
                        present.append(CONCEPT_WORDS[name])
                rows.append({"image": s.id, "split": split, "label": CLASSES[s.label],
                             "caption": caption_text(CLASSES[s.label], present)})
        self.ctx.write_csv("captions.csv", rows)
        self.ctx.log(f"{len(rows)} captions ({filled} concept labels filled in by the concept head)")
        return {"n_captions": len(rows), "n_filled": filled}

    # -- the stages in their own modules -------------------------------------------------------------------------
    def finetune_ldm(self) -> dict:
        from .ldm import finetune

        return finetune(self)

    def generate(self) -> dict:
        from .generate import generate_stage

        return generate_stage(self)

    def train_vae(self) -> dict:
        from .concept_vae import train_vae

        return train_vae(self)

    def discover(self) -> dict:
        from .discover import discover

        return discover(self)

    def eval(self) -> dict:
        from .evaluate import evaluate

        return evaluate(self)

    def reproduce(self) -> dict:
        from .reproduce import reproduce

        return reproduce(self)


def caption_text(cls: str, present: list[str]) -> str:
    return f"dermoscopic image of {NAMES[cls]}" + (f" with {', '.join(present)}" if present else "")


__all__ = ["CounterfactualLdm", "Classifier", "caption_text", "markdown_table", "paper_note"]
