"""idqce's typed manifest (pydantic only) and the data folder it reads."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, ValidationInfo, field_validator, model_validator

from medrun.manifests.schema import (
    BatchSize,
    Count,
    DatasetSection,
    Epochs,
    EvalSection,
    Fraction,
    LearningRate,
    Manifest,
    NonNegFloat,
    NonNegInt,
    PositiveFloat,
    Section,
    Seed,
    TrainSection,
)

NIH_FINDINGS = ("Atelectasis", "Cardiomegaly", "Effusion", "Infiltration", "Mass", "Nodule", "Pneumonia",
                "Pneumothorax", "Consolidation", "Edema", "Emphysema", "Fibrosis", "Pleural_Thickening", "Hernia")


class Data(DatasetSection):
    name: Literal["nih", "mimic", "vindr", "mured", "odir", "eyepacs"]
    labels_csv: str | None = Field(None, description="NIH only: label CSV in the root (default Data_Entry_2017.csv, "
                                                     "else the one Data_Entry_2017*.csv there)")
    labels: list[str] | None = Field(None, min_length=1, validate_default=True,
                                     description="the labels the linear probe predicts (multi-label; default: all "
                                                 "of the dataset's: NIH 14 findings, MIMIC 14 CheXpert labels, VinDr "
                                                 "14 pathologies, MuReD 20, ODIR 8, EyePACS the 5 DR grades)")
    img_size: int = Field(224, ge=32, le=1024, description="square resize of every image (card: 224)")
    val_fraction: float = Field(0.1, gt=0, lt=1, description="patients of the training split held out to pick the "
                                                             "linear probe's best epoch (MIMIC: its validate split)")
    split_seed: Seed = 0

    @field_validator("labels")
    @classmethod
    def _known(cls, v: list[str] | None, info: ValidationInfo) -> list[str]:
        from .data import labels as dataset_labels

        name = info.data.get("name", "nih")
        known = dataset_labels(name)
        if v is None:
            return list(known)
        bad = [x for x in v if x not in known]
        if bad:
            raise ValueError(f"unknown {name} label(s) {bad}; use {list(known)}")
        if len(set(v)) != len(v):
            raise ValueError("a label is listed twice")
        return v


class VQ(Section):
    """Stage 1, the VQ-VAE (train-vqvae)."""

    k: int = Field(1024, ge=2, le=65536, description="codebook size K (paper: 512, 1024, 4096; main results 1024)")
    dim: Count = Field(256, description="codeword size D")
    channels: Count = Field(256, description="hidden channels of encoder and decoder")
    axis: Literal["spatial", "channel"] = Field("spatial", description="spatial: each latent position's D-vector "
                                                "is a codeword; channel: each channel's H·W map is (needs H·W = D)")
    init: Literal["data", "uniform"] = Field("data", description="codebook start: K latent vectors of the first "
                                             "batch, or U(-1/K, 1/K) (van den Oord)")
    restart_every: NonNegInt = Field(0, description="every n steps, move codewords unused since the last check to "
                                                    "random latents of the batch (0: never; the paper: never)")
    commitment: NonNegFloat = Field(0.25, description="λ of the commitment term (not given; VQ-VAE's 0.25)")
    epochs: Epochs = 100
    batch_size: BatchSize = 16
    lr: LearningRate = 1e-3
    max_steps: NonNegInt = Field(0, description="stop after this many optimiser steps (0: all epochs)")


class Model(Section):
    backbone: Literal["resnet50", "resnet18"] = Field("resnet50", description="f_θ / f_φ (paper: ResNet-50)")
    hidden: Count = Field(4096, description="hidden width of g, q and p (paper: 4096)")
    out: Count = Field(256, description="output width of g, q and p (paper: 256)")


class Pretrain(Section):
    """Stage 2, the SSL pre-training (pretrain)."""

    method: Literal["idqce", "byol"] = Field("idqce", description="byol: the same code with the code loss off")
    code_input: Literal["image", "view"] = Field("image", description="what f_ξ sees: the un-augmented image "
                                                 "(Fig. 1) or each online view")
    code_weight: NonNegFloat = Field(1.0, description="weight of the code term (Eq. 2: 1)")
    epochs: Epochs = 500
    batch_size: BatchSize = 256
    base_lr: LearningRate = Field(0.02, description="LARS lr = base_lr · batch / 256, cosine decay")
    weight_decay: NonNegFloat = 1.5e-6
    eta: PositiveFloat = Field(1e-3, description="LARS trust coefficient")
    warmup_epochs: NonNegInt = 10
    ema: Fraction = Field(0.996, description="μ at the start, cosine-increased to 1")
    crop_scale: float = Field(0.08, gt=0, le=1, description="smallest area of the random resized crop")
    max_steps: NonNegInt = Field(0, description="stop after this many optimiser steps (0: all epochs)")


class Linear(Section):
    """Linear evaluation (linear-eval): a linear layer on frozen features, one per label fraction and subset seed."""

    fractions: list[float] = Field(default_factory=lambda: [0.01, 0.1, 1.0], min_length=1,
                                   description="fractions of the downstream training split with labels")
    subset_seeds: list[Seed] = Field(default_factory=lambda: [0, 1, 2], min_length=1,
                                     description="random label subsets per fraction below 1 (card: 3 seeds)")
    encoders: list[Literal["ssl", "random", "imagenet"]] = Field(
        default_factory=lambda: ["ssl", "random", "imagenet"], min_length=1,
        description="ssl: the pretrain run's f_θ; random: a random-init trunk; imagenet: init_checkpoint's weights "
                    "(skipped with a warning without them)")
    init_checkpoint: str | None = Field(None, description="torchvision ResNet ImageNet weights (state dict, "
                                                          ".pth/.pt/.safetensors) for the imagenet baseline")
    epochs: Epochs = 50
    batch_size: BatchSize = 256
    lr: LearningRate = 1e-4
    feature_batch: BatchSize = 64

    @field_validator("fractions")
    @classmethod
    def _fractions(cls, v: list[float]) -> list[float]:
        if any(not 0 < f <= 1 for f in v):
            raise ValueError("each fraction must be in (0, 1]")
        return v


class Explain(Section):
    fraction: float = Field(0.01, gt=0, le=1, description="the probe explained (paper Fig. 2: the 1 % models)")
    n_images: Count = Field(8, description="test images shown with their Grad-CAM heat maps")
    label: str | None = Field(None, description="the finding explained (default: each image's top-scored one)")


class Predict(Section):
    input: str | None = Field(None, description="images to label (file, folder or glob; default: the test list)")
    batch_size: BatchSize = 64


class IdqceManifest(Manifest):
    pipeline: Literal["idqce"] = "idqce"
    dataset: Data
    vqvae: VQ = Field(default_factory=VQ)
    model: Model = Field(default_factory=Model)
    pretrain: Pretrain = Field(default_factory=Pretrain)
    linear: Linear = Field(default_factory=Linear)
    train: TrainSection = Field(default_factory=TrainSection)
    eval: EvalSection = Field(default_factory=lambda: EvalSection(split="test", metrics=["auc"]))
    explain: Explain = Field(default_factory=Explain)
    predict: Predict = Field(default_factory=Predict)

    @model_validator(mode="after")
    def _channel_axis_fits(self):
        side = self.dataset.img_size // 4
        if self.vqvae.axis == "channel" and side * side != self.vqvae.dim:
            raise ValueError(f"vqvae.axis channel quantizes each channel's {side}×{side} latent map as one codeword, "
                             f"so vqvae.dim must be {side * side} "
                             f"(or dataset.img_size {4 * round(self.vqvae.dim ** 0.5)})")
        if self.dataset.img_size % 4:
            raise ValueError("dataset.img_size must be a multiple of 4 (the VQ-VAE halves it twice)")
        return self


def data_paths(m: IdqceManifest) -> dict[str, Path]:
    """The folder to fingerprint, after checking the label CSV(s) against the images (every label a known one,
    every image named a file), so bad data fails before a run opens."""
    root = Path(m.dataset.root)
    if root.exists():
        from .data import check

        check(m.dataset)
    return {m.dataset.name: root}
