"""cycleadvgan's typed manifest (pydantic only) and the data folder it reads."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator

from medrun.datasets import imagefolder
from medrun.manifests.schema import (
    BatchSize,
    DatasetSection,
    Epochs,
    EvalSection,
    LearningRate,
    Manifest,
    Section,
    Seed,
    TrainSection,
)

Arch = Literal["resnet50", "densenet121", "inception_v3", "medvit_s", "vit_s", "resnet18", "small_cnn"]
Method = Literal["cycleadvgan", "fgsm", "pgd", "smia", "hfc", "noise"]


class Data(imagefolder.Fields, DatasetSection):
    name: Literal["isic2020", "chestxray", "imagefolder"]
    img_size: int = Field(224, ge=16, description="square Resize for everything (the card: 224); divisible by 4")
    test_fraction_folds: int = Field(5, ge=2, description="isic2020: the test part is 1/k of the patients "
                                                          "(StratifiedGroupKFold by patient_id, stratified by target); "
                                                          "imagefolder: 1/k of the images, stratified")
    split_seed: Seed = 0
    val_fraction: float = Field(0.1, gt=0, lt=1, description="stratified part of train that picks the best epoch (AUC)")


class Model(Section):
    arch: Arch = Field("resnet50", description="target classifier F; inception_v3 needs img_size ≥ 75, medvit_s a "
                                               "multiple of 32; resnet18/small_cnn are CPU stand-ins, vit_s a MONAI "
                                               "ViT-S/16 (an extra, not MedViT)")
    hidden: int = Field(512, ge=1, description="the card's two-FC head: Linear(feat→hidden) → ReLU → Dropout → "
                                               "Linear(→2)")
    dropout: float = Field(0.5, ge=0, lt=1)
    weights: str | None = Field(None, description="state dict (.pth/.pt/.safetensors) of the backbone (ImageNet); "
                                                  "none: random init with a warning")


class Train(TrainSection):
    epochs: Epochs = 20
    batch_size: BatchSize = 32
    lr: LearningRate = Field(1e-5, description="Adam (the paper)")
    augment: bool = Field(True, description="RandomResizedCrop + horizontal flip on training batches (the card)")


class Eval(EvalSection):
    split: Literal["test", "val", "train"] = "test"
    metrics: list[str] = Field(default_factory=lambda: ["accuracy", "auroc"])


class Predict(Section):
    input: str | None = Field(None, description="folder of images to classify (default: the eval split)")


class Attack(Section):
    """CycleAdvGAN (the card's defaults: CycleGAN's recipe) and the baselines on the same test images."""

    lam: float = Field(0.7, ge=0, le=1, description="λ: L = (1 − λ)[L_GM + L_GB + L_cyc] + λ·L_adv")
    lambda_cyc: float = Field(1.0, ge=0, description="cycle weight inside the bracket (the paper: none, so 1.0)")
    lambda_idt: float = Field(0.0, ge=0, description="identity loss weight inside the bracket (CycleGAN's; off)")
    adv_loss: Literal["margin", "ce-flip"] = Field("margin", description="margin: AdvGAN max(Z_y − max_j≠y Z_j, "
                                                                          "−κ); ce-flip: CE(F(x_fake), 1 − y)")
    kappa: float = Field(0.0, ge=0)
    recon_cls: bool = Field(False, description="also keep the reconstruction classified correctly (text, not Eq.)")
    gan_loss: Literal["bce", "lsgan"] = "bce"
    ngf: int = Field(64, ge=4)
    ndf: int = Field(64, ge=4)
    n_blocks: int | None = Field(None, ge=1, description="residual blocks; none: 9 from 256 px, else 6")
    lr: LearningRate = 2e-4
    betas: tuple[float, float] = (0.5, 0.999)
    batch_size: BatchSize = 1
    epochs: Epochs = Field(100, description="epochs at constant lr")
    decay_epochs: int = Field(100, ge=0, description="then epochs of linear decay to 0")
    pool_size: int = Field(50, ge=0)
    methods: list[Method] = Field(default_factory=lambda: ["cycleadvgan", "fgsm", "pgd", "smia", "hfc", "noise"],
                                  description="noise: uniform noise with CycleAdvGAN's per-image L2 norm")
    fgsm_eps: float = Field(0.03, gt=0)
    pgd_eps: float = Field(0.03, gt=0)
    pgd_alpha: float = Field(0.01, gt=0)
    pgd_steps: int = Field(10, ge=1)
    pgd_random_start: bool = True
    smia_beta: float = Field(0.5, ge=0, description="SMIA: weight of the stabilisation loss (ε, α, steps: pgd_*)")
    smia_sigma: float = Field(1.0, gt=0, description="SMIA: σ in pixels of the Gaussian smoothing the perturbation")
    hfc_weight: float = Field(1.0, ge=0, description="HFC: weight of the feature-density term (ε, α, steps: pgd_*)")
    hfc_components: int = Field(4, ge=1, description="HFC: Gaussian components per layer (diagonal covariance)")
    batch_eval: int = Field(32, ge=1, description="images per attack/evaluation batch")
    overlays: int = Field(6, ge=0, description="images drawn in figures/")


class Transfer(Section):
    models: list[Arch] = Field(default_factory=lambda: ["resnet50", "densenet121", "inception_v3", "medvit_s"],
                               description="sources and targets; the parent run's arch is reused, the others are "
                                           "trained here with the train section")
    methods: list[Literal["cycleadvgan", "fgsm", "pgd", "smia", "hfc"]] = Field(
        default_factory=lambda: ["cycleadvgan", "fgsm", "pgd", "smia", "hfc"])


class SweepLambda(Section):
    lambdas: list[float] = Field(default_factory=lambda: [0.1, 0.3, 0.5, 0.7, 0.9])
    methods: list[Method] = Field(default_factory=lambda: ["cycleadvgan"], description="attack.methods of each run")


class CycleAdvGanManifest(Manifest):
    pipeline: Literal["cycleadvgan"] = "cycleadvgan"
    dataset: Data
    model: Model = Field(default_factory=Model)
    train: Train = Field(default_factory=Train)
    eval: Eval = Field(default_factory=Eval)
    predict: Predict = Field(default_factory=Predict)
    attack: Attack = Field(default_factory=Attack)
    transfer: Transfer = Field(default_factory=Transfer)
    sweep_lambda: SweepLambda = Field(default_factory=SweepLambda)

    @model_validator(mode="after")
    def _size_fits_the_model(self):
        """Checked here for model.arch (every stage builds it); transfer.models are checked by the transfer stage."""
        problem = size_problem(self.model.arch, self.dataset.img_size)
        if problem:
            raise ValueError(problem)
        return self


def size_problem(arch: str, size: int) -> str | None:
    """Inception-V3 shrinks the image 32-fold with unpadded convolutions; MedViT halves it five times."""
    if arch == "inception_v3" and size < 75:
        return f"dataset.img_size {size} is too small for inception_v3 (at least 75; the card: 224)"
    if arch == "medvit_s" and size % 32:
        return f"dataset.img_size {size} must be a multiple of 32 for medvit_s"
    return None


def data_paths(m: CycleAdvGanManifest) -> dict[str, Path]:
    """The dataset folder, after a cheap layout check (a wrong folder fails before it is hashed)."""
    from medrun.datasets import chestxray, isic2020

    imagefolder.check_root(m, isic2020.layout if m.dataset.name == "isic2020" else chestxray.check_layout)
    return {m.dataset.name: Path(m.dataset.root)}
