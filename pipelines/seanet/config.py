"""seanet's typed manifest (pydantic only) and the data folder it reads."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator, model_validator

from medrun.manifests.schema import (
    BatchSize,
    Count,
    DatasetSection,
    Epochs,
    EvalSection,
    Fraction,
    LearningRate,
    Manifest,
    NonNegInt,
    Section,
    Seed,
    TrainSection,
)

ARCHS = ("seanet", "seanet2", "ctformer", "redcnn", "unet")


def _grid(size: int, kernel: int, dilation: int = 1, stride: int = 1) -> int:
    return (size - dilation * (kernel - 1) - 1) // stride + 1


class Data(DatasetSection):
    name: Literal["mayo"]
    series: str = Field("3mm", pattern=r"^[A-Za-z0-9_.-]+$",
                        description="reads <patient>/quarter_<series>/ and full_<series>/ (3mm; 1mm for thin slices)")
    test_patients: list[str] = Field(default_factory=lambda: ["L506"], min_length=1,
                                     description="patients scored by eval (the paper: L506); the others train")
    patients: list[str] | None = Field(None, description="use only these patients (default: every patient found)")
    val_fraction: float = Field(0.1, ge=0, lt=1, description="training slices held out for validation (card: 10 %)")
    split_seed: Seed = Field(0, description="seed of the validation hold-out")
    npy_units: Literal["normalized", "hu"] = Field(
        "normalized", description=".npy layout: (HU + 1024) / 4096 as CTformer's prep writes, or HU")


class Model(Section):
    arch: Literal["seanet", "seanet2", "ctformer", "redcnn", "unet"] = Field(
        "seanet", description="seanet (CTformer + SRU), seanet2 (RED-CNN + SRU), ctformer, redcnn, unet")
    token_dim: Count = Field(64, description="CTformer token dimension (the SRU's C)")
    embed_dim: Count = Field(64, description="bottleneck width E (card ambiguity 1: 64; CTformer's class: 768)")
    depth: Count = Field(12, description="bottleneck ViT blocks")
    heads: Count = Field(8, description="bottleneck attention heads (must divide embed_dim)")
    mlp_ratio: float = Field(2.0, gt=0)
    kernel_ratio: float = Field(0.5, gt=0, le=1, description="Token-Performer random features per dimension")
    dilation: tuple[Count, Count, Count, Count] = Field((2, 1, 1, 2), description="[DM1, DM2, IDM2, IDM1] (Eq. 5)")
    sru_global: float = Field(0.7, ge=0, le=1, description="SRU split: global share (3L7G = 0.7, 4L6G 0.6, 5L5G 0.5)")
    fourier: Literal["none", "encoder", "decoder", "both"] = Field(
        "none", description="Table 2's 'Fourier E / D / E-D': Fourier units replace the performers' MLPs")
    drop_rate: Fraction = Field(0.1, description="CTformer's dropout")
    attn_drop_rate: Fraction = Field(0.1, description="bottleneck attention dropout")
    drop_path_rate: Fraction = Field(0.1, description="stochastic depth over the bottleneck blocks")
    performer_drop: Fraction = Field(0.1, description="Token-Performer dropouts")
    zero_output: bool = Field(False, description="start the noise estimate at 0 (zero the last decoder unit's "
                                                 "value path); CTformer's own initialisation when false")
    redcnn_channels: Count = Field(96, description="RED-CNN / SEANet² feature maps")
    unet_features: tuple[Count, Count, Count, Count, Count, Count] = Field(
        (32, 32, 64, 128, 256, 32), description="arch=unet: MONAI BasicUNet widths")


class Train(TrainSection):
    epochs: Epochs = 200
    batch_size: BatchSize = Field(16, description="slices per batch; each gives patch_n patches (CTformer: 16 × 4)")
    lr: LearningRate = 1e-5
    patch: Count = Field(64, description="training patch side; also the transformer's input size")
    patch_n: Count = Field(4, description="random patches per slice (CTformer's patch_n)")
    rotate: bool = Field(True, description="random rotation by a multiple of 90° (the paper: 'random rotation')")
    decay_iters: NonNegInt = Field(0, description="halve the learning rate every N optimiser steps (CTformer's "
                                                  "--decay_iters, 8000); 0: constant (the paper states none)")
    repeats: Count = Field(1, description="visits of every training slice per epoch (fixture: short epochs)")
    val_every: Count = Field(1, description="validate every N epochs")
    select: Literal["best_val", "last"] = Field("best_val", description="weights kept: the epoch with the lowest "
                                                                       "validation RMSE (card) or the last")


class Eval(EvalSection):
    split: str = "test"
    metrics: list[str] = Field(default_factory=lambda: ["psnr", "delta_psnr", "ssim", "rmse", "mape"])
    window: tuple[float, float] = Field((-160.0, 240.0), description="HU window scored (CTformer's trunc)")
    figures: NonNegInt = Field(4, description="slice / difference-map figures of the first N scored slices")

    @field_validator("window")
    @classmethod
    def _window(cls, v):
        if not v[0] < v[1]:
            raise ValueError("window must be [low, high] with low < high")
        return v


class Inference(Section):
    """Sliding-window inference over whole slices (MONAI ``SlidingWindowInferer``)."""

    roi_size: list[Count] | None = Field(None, min_length=2, max_length=2, description="default: the training patch")
    sw_batch_size: Count = 16
    overlap: float = Field(0.5, ge=0, lt=1)
    mode: Literal["gaussian", "constant"] = "gaussian"


class Denoise(Section):
    input: str | None = Field(None, description="LDCT slices: a DICOM (.IMA/.dcm) or .npy file, folder or glob "
                                                "(default: the eval split)")
    npy_units: Literal["normalized", "hu"] | None = Field(None, description="units of .npy inputs (default: "
                                                                          "dataset.npy_units); outputs keep them")


class SpectralMap(Section):
    split: str = "test"
    slices: Count = Field(2, description="slices shown (the first N of the split)")


class SeanetManifest(Manifest):
    pipeline: Literal["seanet"] = "seanet"
    dataset: Data
    model: Model = Field(default_factory=Model)
    train: Train = Field(default_factory=Train)
    eval: Eval = Field(default_factory=Eval)
    inference: Inference = Field(default_factory=Inference)
    denoise: Denoise = Field(default_factory=Denoise)
    spectral_map: SpectralMap = Field(default_factory=SpectralMap)

    @model_validator(mode="after")
    def _shapes(self):
        mm, p = self.model, self.train.patch
        if self.inference.roi_size is None:
            self.inference.roi_size = [p, p]
        if mm.arch in ("seanet", "ctformer"):
            if self.inference.roi_size != [p, p]:
                raise ValueError(f"inference.roi_size {self.inference.roi_size} must be the training patch [{p}, {p}] "
                                 f"for {mm.arch} (a fixed token grid)")
            if mm.embed_dim % mm.heads:
                raise ValueError(f"model.embed_dim {mm.embed_dim} is not divisible by model.heads {mm.heads} "
                                 "(card ambiguity 1: use 64/8 or 768/12)")
            d1, d2, d3, d4 = mm.dilation
            if (d1, d2) != (d4, d3):
                raise ValueError(f"model.dilation {list(mm.dilation)}: the decoder must mirror the encoder "
                                 "([r1, r2, r2, r1])")
            g2 = _grid(_grid(_grid(p, 7, stride=2), 3, d1), 3, d2)
            if g2 < 1:
                raise ValueError(f"train.patch {p} with model.dilation {list(mm.dilation)} leaves no tokens")
        elif mm.arch in ("redcnn", "seanet2") and p <= 20:
            raise ValueError(f"train.patch {p}: RED-CNN's ten unpadded 5×5 layers need more than 20 pixels")
        elif mm.arch == "unet" and p % 16:
            raise ValueError(f"train.patch {p} must be a multiple of 16 for the UNet")
        return self


def data_paths(m: SeanetManifest) -> dict[str, Path]:
    """The folder to fingerprint, after a cheap layout check (so a wrong folder fails before it is hashed)."""
    root = Path(m.dataset.root)
    if root.exists():
        from medrun.datasets import mayo

        mayo.layout(root, m.dataset.series)
    return {"mayo": root}
