"""transnet-oct's typed manifest (pydantic only) and the data folder it reads."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import Field, model_validator

from medrun.manifests.schema import (
    BatchSize,
    Count,
    DatasetSection,
    Epochs,
    EvalSection,
    LearningRate,
    Manifest,
    NonNegFloat,
    PositiveFloat,
    Section,
    Seed,
    TrainSection,
)


class Data(DatasetSection):
    name: Literal["oct-layers"]
    img_size: int = Field(256, ge=32, description="B-scans resized to img_size² (a multiple of 32)")
    folds: int | None = Field(None, ge=2, description="k of the patient-wise k-fold; null = leave-one-patient-out")
    fold: int = Field(0, ge=0, description="the held-out fold of a train run (set by `medrun cv`)")
    split_seed: Seed = Field(0, description="shuffle of patients into folds (KFold random_state)")
    train_stacks: Literal["fovea", "annotated"] = Field(
        "fovea", description="training stacks: fovea ±2 only (the paper) or every centre B-scan that is annotated")

    @model_validator(mode="after")
    def _checks(self):
        if self.img_size % 32:
            raise ValueError(f"img_size {self.img_size} must be a multiple of 32 (ResNet-50 downsamples 32×)")
        if self.folds is not None and self.fold >= self.folds:
            raise ValueError(f"dataset.fold {self.fold} is not one of the {self.folds} folds (0 … {self.folds - 1})")
        return self


class Prior(Section):
    """Algorithm 1 (card defaults; the paper gives none)."""

    tolerance: PositiveFloat = Field(0.04, description="λ: intensity tolerance on [0, 1] min–max B-scans")
    max_window: int = Field(11, ge=3, description="Ω: largest search window (odd)")
    mid_label_source: Literal["gt", "model"] = Field(
        "gt", description="labels of the fovea B-scan M_L: gt (the oracle; the MGRF step is not rebuilt) or model "
                          "(the fovea slice of a no-prior TransNetOCT's output, weights in prior.mid_model)")
    mid_model: str | None = Field(None, description="mid_label_source model: checkpoints/model.safetensors of a "
                                                    "train run of this pipeline with model.prior false")

    @model_validator(mode="after")
    def _odd(self):
        if self.max_window % 2 == 0:
            raise ValueError(f"max_window {self.max_window} must be odd")
        if self.mid_label_source == "model" and not self.mid_model:
            raise ValueError("mid_label_source model needs prior.mid_model (a no-prior run's model.safetensors)")
        return self


class Model(Section):
    prior: bool = Field(True, description="9-channel input with the 4 prior maps; false: the 5 B-scans only")
    baseline: Literal["unet", "fpn"] | None = Field(None, description="a baseline instead of TransNetOCT")
    dim: Count = Field(512, description="transformer width D")
    depth: Count = Field(4, description="transformer layers M")
    heads: Count = Field(8)
    mlp_ratio: PositiveFloat = 4.0
    head_channels: Count = Field(16, description="channels per slice before the 3D head")
    unet_features: tuple[int, int, int, int, int, int] = (32, 32, 64, 128, 256, 32)

    @model_validator(mode="after")
    def _heads(self):
        if self.dim % self.heads:
            raise ValueError(f"dim {self.dim} must be divisible by heads {self.heads}")
        return self


class Train(TrainSection):
    epochs: Epochs = 100
    batch_size: BatchSize = 8
    lr: LearningRate = 1e-4
    weight_decay: NonNegFloat = Field(1e-2, description="AdamW (torch default)")
    encoder_weights: str | None = Field(None, description="ImageNet ResNet-50 state dict (torchvision names, "
                                                         ".pth or .safetensors) for the encoder; null = random init")


class Eval(EvalSection):
    split: str = "test"
    metrics: list[str] = Field(default_factory=lambda: ["dsc", "assd", "masd", "sens"])
    overlays: int = Field(3, ge=0, description="overlay figures of the first N evaluated patients")


class Cv(Section):
    variants: dict[str, dict[str, Any]] = Field(
        default_factory=lambda: {"prior": {}, "no_prior": {"model.prior": False}},
        description="name → dotted overrides (model.*, train.*) of each variant; each is run on every fold")


class Predict(Section):
    input: str | None = Field(None, description="a patient folder or a folder of them (default: the eval split)")


class TransNetOctManifest(Manifest):
    pipeline: Literal["transnet-oct"] = "transnet-oct"
    dataset: Data
    prior: Prior = Field(default_factory=Prior)
    model: Model = Field(default_factory=Model)
    train: Train = Field(default_factory=Train)
    eval: Eval = Field(default_factory=Eval)
    cv: Cv = Field(default_factory=Cv)
    predict: Predict = Field(default_factory=Predict)

    @model_validator(mode="after")
    def _variants(self):
        for name, overrides in self.cv.variants.items():
            for key in overrides:
                section, _, fld = key.partition(".")
                if section not in ("model", "train", "prior") or not fld or "." in fld:
                    raise ValueError(f"cv.variants.{name}: '{key}' is not a key of model, train or prior")
                if fld not in type(getattr(self, section)).model_fields:
                    raise ValueError(f"cv.variants.{name}: {section} has no '{fld}'")
        return self


def data_paths(m: TransNetOctManifest) -> dict[str, Path]:
    """The folder to fingerprint, after a cheap layout check (so a wrong folder fails before it is hashed)."""
    root = Path(m.dataset.root)
    if root.exists():
        from medrun.datasets import oct_layers

        oct_layers.read(root)
    return {m.dataset.name: root}
