"""sm-safe's typed manifest (pydantic only) and the data folders it reads (one per MSD task)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from medrun.manifests.schema import (
    BatchSize,
    Count,
    DatasetSection,
    Epochs,
    EvalSection,
    LearningRate,
    Manifest,
    Section,
    Seed,
    TrainSection,
)


class Data(DatasetSection):
    name: Literal["msd"]
    tasks: list[str] | Literal["all"] = Field(
        default_factory=lambda: ["Task01_BrainTumour"],
        description="task folders under dataset.root (Task01_BrainTumour, Task01, 01 or BrainTumour), or 'all'")
    folds: int = Field(5, ge=2, description="patient-level k-fold CV on imagesTr (test labels are hidden)")
    fold: int = Field(0, ge=0, description="the held-out fold of train/eval (cv runs them all)")
    split_seed: Seed = Field(0, description="seed of the fold assignment")
    exclude: list[str] = Field(default_factory=list, description="case ids to leave out (e.g. BRATS_001)")
    max_cases: int | None = Field(None, ge=1, description="use only the first N training cases per task (quick runs)")
    spacing: tuple[float, float, float] | None = Field(None, description="target spacing in mm; default: the "
                                                                         "task's median")
    ct_percentiles: tuple[float, float] = Field((0.5, 99.5), description="CT clip range: percentiles of foreground HU")

    @model_validator(mode="after")
    def _fold_in_range(self):
        if self.fold >= self.folds:
            raise ValueError(f"fold must be < folds ({self.folds}), got {self.fold}")
        return self


class Model(Section):
    variant: Literal["sm-safe", "amf-net", "unet"] = Field(
        "sm-safe", description="sm-safe: stems+AMF+ASE+U-Net; amf-net: no ASE; unet: the U-Net on the raw channels")
    modalities: int = Field(4, ge=1, description="input channels when no task is at hand (--dry-run, show); "
                                                 "a run takes them from each task's dataset.json")
    num_classes: int = Field(4, ge=2, description="output classes when no task is at hand (as modalities)")
    fusion_channels: int = Field(32, ge=1, description="channels of each modality stem and of the fused map")
    unet_channels: list[Count] = Field(default_factory=lambda: [32, 64, 128, 256, 320])
    num_res_units: int = Field(2, ge=0)
    ase_layers: int = Field(3, ge=1, le=3, description="ASE layers at 1/4, 1/8, 1/16 of the patch")
    concat_raw: bool = Field(False, description="also feed the raw images to the U-Net ('spatial cues')")
    amf_levels: Literal[1, 2] = Field(1, description="2: also fuse after a stride-2 stage, added at U-Net level 2")

    @model_validator(mode="after")
    def _levels_need_amf(self):
        if self.amf_levels == 2 and self.variant == "unet":
            raise ValueError("amf_levels 2 needs AMF: use variant sm-safe or amf-net")
        return self

    @field_validator("unet_channels")
    @classmethod
    def _levels(cls, v: list[int]) -> list[int]:
        if len(v) < 2:
            raise ValueError("needs at least two U-Net levels")
        return v


class Train(TrainSection):
    epochs: Epochs = 300
    steps_per_epoch: int = Field(250, ge=1, description="iterations per epoch (patches are sampled per step)")
    batch_size: BatchSize = 8
    accumulate: int = Field(1, ge=1, description="gradient accumulation (batch 8 as 2×4 when memory is short)")
    lr: LearningRate = 1e-3
    optimizer: Literal["adam", "sgd"] = "adam"
    betas: tuple[float, float] = (0.9, 0.999)
    weight_decay: float = Field(1e-5, ge=0)
    momentum: float = Field(0.99, ge=0, lt=1, description="sgd only (nesterov)")
    poly_power: float = Field(0.9, ge=0, description="lr × (1 − step/steps)^power")
    patch_size: tuple[int, int, int] = (96, 96, 96)
    pos_neg: tuple[float, float] = Field((1.0, 1.0), description="RandCropByPosNegLabeld pos:neg")

    @field_validator("patch_size")
    @classmethod
    def _positive(cls, v):
        if min(v) < 8:
            raise ValueError("every patch side must be ≥ 8")
        return v


class Eval(EvalSection):
    split: Literal["test"] = Field("test", description="the held-out fold of dataset.fold")
    metrics: list[str] = Field(default_factory=lambda: ["dice", "iou", "hd95"])
    overlays: int = Field(1, ge=0, description="overlay PNGs per task")


class Inference(Section):  # sliding window of eval, predict and fuse-maps (the predictor's settings)
    roi_size: tuple[int, int, int] | None = Field(None, description="window; default: train.patch_size")
    sw_batch_size: int = Field(1, ge=1)
    overlap: float = Field(0.5, ge=0, lt=1)
    mode: Literal["gaussian", "constant"] = Field("gaussian", description="blending of overlapping windows")


class Predict(Section):
    input: str | None = Field(None, description="a .nii.gz file, a folder of them or a glob (default: each task's "
                                                "imagesTs)")


class Ablate(Section):
    variants: dict[str, dict[str, Any]] = Field(
        default_factory=dict, description="name → {dotted.key: value} overrides of this manifest, one trained each")


class SmSafeManifest(Manifest):
    pipeline: Literal["sm-safe"] = "sm-safe"
    dataset: Data
    model: Model = Field(default_factory=Model)
    train: Train = Field(default_factory=Train)
    eval: Eval = Field(default_factory=Eval)
    inference: Inference = Field(default_factory=Inference)
    predict: Predict = Field(default_factory=Predict)
    ablate: Ablate = Field(default_factory=Ablate)

    @model_validator(mode="after")
    def _window(self):
        if self.inference.roi_size is None:  # the training patch, as the card's inference
            self.inference.roi_size = self.train.patch_size
        return self


def data_paths(m: SmSafeManifest) -> dict[str, Path]:
    """One folder per selected task (so only those are fingerprinted), after a cheap layout check."""
    from medrun.datasets import msd

    root = Path(m.dataset.root)
    if not root.exists():
        return {"data": root}  # the runner reports the missing folder
    return {p.name: p for p in msd.resolve_tasks(root, m.dataset.tasks)}
