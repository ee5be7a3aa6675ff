"""ad-lite's typed manifest (pydantic only) and the data folders it reads."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator, model_validator

from medrun.datasets import imagefolder
from medrun.manifests.schema import (
    BatchSize,
    Count,
    DatasetSection,
    Epochs,
    EvalSection,
    LearningRate,
    Manifest,
    PositiveFloat,
    Section,
    Seed,
    TrainSection,
)


class Data(imagefolder.Fields, DatasetSection):
    name: Literal["ad", "adni", "oasis", "merged", "imagefolder"]
    undersample: dict[str, Count] | None = Field(
        None, description="OASIS: cap per class, random.seed(50) as in the code"
    )
    undersample_seed: Seed = 50
    img_size: int = Field(224, description="square resize before any split; a multiple of 32")
    test_fraction: float = Field(0.2, gt=0, lt=1)
    val_fraction: float = Field(0.2, gt=0, lt=1)
    split_seed: Seed = 43
    folds: int = Field(10, ge=2, description="k of the k-fold protocol (`medrun cv`, Table 3)")
    fold: int | None = Field(None, ge=0, description="hold out this fold of `folds` (stratified, split_seed) as the "
                                                     "test split instead of the 80/20 split; set by `medrun cv`")

    @model_validator(mode="after")
    def _fold_in_range(self):
        if self.fold is not None and self.fold >= self.folds:
            raise ValueError(f"dataset.fold {self.fold} is not one of the {self.folds} folds (0 … {self.folds - 1})")
        return self

    @field_validator("img_size")
    @classmethod
    def _multiple_of_32(cls, v: int) -> int:
        if v < 32 or v % 32:
            raise ValueError("must be a multiple of 32 (the network pools five times)")
        return v


ARCHS = ("adlite", "densenet121", "mobilenet_v2", "vgg16", "xception")
Arch = Literal["adlite", "densenet121", "mobilenet_v2", "vgg16", "xception"]


class Model(Section):
    arch: Arch = Field("adlite", description="adlite (the paper's network) or a Table 1 baseline: densenet121 (MONAI), "
                                             "mobilenet_v2, vgg16, xception (random init unless model.weights)")
    weights: str | None = Field(None, description="train: initial weights (.safetensors, or a state dict .pt/.pth "
                                                  "loaded weights_only), e.g. torchvision ImageNet weights; a "
                                                  "classifier of another class count is left at random init")
    num_classes: int = Field(4, ge=2)
    tx: Literal["code", "paper"] = Field("code", description="Tx-layer: code −0.8·x, or paper Eq. 5 0.8·(255 − x)")
    pcb: bool = Field(True, description="the parallel concatenation block (False: Table 2 ablation)")
    bn_momentum: float = Field(0.01, gt=0, le=1, description="BatchNorm running-average momentum; Keras' 0.99 is 0.01")


class LrDecay(Section):
    from_epoch: int = Field(ge=0, description="0-indexed epoch from which lr is multiplied by factor every epoch")
    factor: float = Field(0.95, gt=0, le=1)


class Train(TrainSection):
    epochs: Epochs = 18
    batch_size: BatchSize = 64
    lr: LearningRate = 0.00095
    betas: tuple[float, float] = (0.9, 0.999)
    eps: PositiveFloat = 1e-7
    lr_decay: LrDecay | None = None


class Baselines(Section):
    archs: list[Arch] = Field(default_factory=lambda: list(ARCHS), min_length=1, description=(
        "`medrun baselines` (Table 1): one train run per model.arch"))
    weights: dict[Arch, str] = Field(default_factory=dict, description=(
        "initial weights per arch for `medrun baselines` (each child's model.weights), e.g. {vgg16: vgg16.pth}"))


class Predict(Section):
    input: str | None = Field(None, description="folder of images to classify (default: the eval split)")


class AdLiteManifest(Manifest):
    pipeline: Literal["ad-lite"] = "ad-lite"
    dataset: Data
    model: Model = Field(default_factory=Model)
    train: Train = Field(default_factory=Train)
    eval: EvalSection = Field(default_factory=EvalSection)
    predict: Predict = Field(default_factory=Predict)
    baselines: Baselines = Field(default_factory=Baselines)


def data_paths(m: AdLiteManifest) -> dict[str, Path]:
    """The folders to fingerprint, after a cheap layout check (so a wrong folder fails before it is hashed)."""
    from medrun.datasets import alzheimer

    root = Path(m.dataset.root)
    paths = (
        {"ad": root / "Alzheimer_s Dataset", "adni": root / "Axial"}
        if m.dataset.name == "merged"
        else {m.dataset.name: root}
    )
    for name, path in paths.items():
        if path.exists() and name == "imagefolder":
            imagefolder.check_layout(path, m.dataset.classes)
        elif path.exists():
            alzheimer.check_layout(name, path)
    return paths
