"""pulmonary-av's typed manifest (pydantic only) and the data folder it reads."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator

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
    PositiveFloat,
    Section,
    TrainSection,
)


class Data(DatasetSection):
    name: Literal["pulmonary_av"]
    stored_offset: float = Field(0.0, description="stored value = HU + stored_offset (0: files in HU; 1024: int16 "
                                                  "HU+1024 exports, as the fixture)")
    label_map: dict[str, int] | None = Field(None, description="file value → 0 bg / 1 PA / 2 PV for other codings")
    folds: int = Field(3, ge=2, le=20, description="cross-validation folds (paper: 3); fold `fold` is the test set")
    fold: int = Field(0, ge=0, description="the test fold")
    val_cases: int = Field(1, ge=1, description="cases of the other folds kept for validation (paper 13:1:7)")
    gap_case: str | None = Field(None, description="a case kept out of the splits for refine's gap check (the "
                                                   "fixture's pav_gap)")


class Prior(Section):
    iso_levels: list[float] = Field(default_factory=lambda: [700.0, 800.0, 900.0, 1000.0],
                                    description="marching-cubes levels, in HU + intensity_offset")
    intensity_offset: float = Field(1024.0, description="the paper's levels read as HU+1024 (card ambiguity 2); 0: "
                                                        "as HU")
    fast_threshold: bool = Field(False, description="threshold at min(iso_levels) instead of the meshes")
    fill_axes: list[Literal[0, 1, 2]] = Field(default_factory=lambda: [2, 1, 0],
                                              description="per-slice hole filling after 3D (card: [2], axial only)")
    extrapulmonary: bool = Field(True, description="Stage 1b: P_out from the prior-net (false: P = P_in)")


class Model(Section):
    channels: list[Count] = Field(default_factory=lambda: [32, 64, 128, 256], description="EA-U-Net level widths")
    gate: Literal["scalar", "per-channel"] = Field("scalar", description="attention per voxel (1 channel) or per "
                                                                         "channel (C_l)")
    prior_channels: list[Count] = Field(default_factory=lambda: [32, 64, 128, 256],
                                        description="prior-net (MONAI AttentionUnet) widths")


class Train(TrainSection):
    stage: Literal["prior-net", "ea-unet"] = Field("ea-unet", description="which network this train run fits")
    epochs: Epochs = 200
    batch_size: BatchSize = 2
    lr: LearningRate = 1e-4
    min_lr: LearningRate = 1e-6
    patch: tuple[Count, Count, Count] = Field((176, 176, 76), description="training patch (x, y, z)")
    patches_per_epoch: Count = Field(200, description="random patches per epoch")
    foreground_ratio: Fraction = Field(0.67, description="share of patches centred on a vessel voxel")
    early_stop_patience: Count = Field(8, description="epochs without a lower val loss")
    lr_patience: Count = Field(2, description="epochs without a higher val Dice before lr ÷ 10")
    val_patches: Count = Field(4, description="fixed validation patches")
    hu_window: tuple[float, float] = Field((-1000.0, 600.0), description="HU clip before scaling to [0, 1] (ours)")
    flips: bool = Field(True, description="random flips (ours)")
    prior_epochs: Epochs | None = Field(None, description="epochs of the prior-net (default: epochs)")
    prior_patches_per_epoch: Count | None = None


class Eval(EvalSection):
    split: Literal["test", "val", "train"] = "test"
    metrics: list[str] = Field(default_factory=lambda: ["precision", "recall", "specificity", "dice", "hd", "hd95"])
    overlays: bool = True


class Inference(Section):
    roi_size: tuple[Count, Count, Count] | None = Field(None, description="window (default: train.patch)")
    sw_batch_size: Count = 1
    overlap: Fraction = Field(0.25, description="MONAI overlap (stride 64 of 176 ≈ 0.64 in-plane; one value here)")
    mode: Literal["constant", "gaussian"] = "gaussian"


class Refine(Section):
    t_deg: PositiveFloat = Field(10.0, description="T, degrees")
    k: Count = Field(5, description="nearest candidates")
    d_max: PositiveFloat = Field(15.0, description="largest gap bridged, mm (not stated; ours)")
    walk: Count = Field(3, description="skeleton nodes walked to K")
    window_mm: PositiveFloat = Field(10.0, description="window of R1/R2 (ours)")
    gap_threshold_hu: float = Field(-100.0, description="gap check: label voxels below this HU are what the network "
                                                        "misses")


class Count_(Section):
    input: str | None = Field(None, description="a folder of .nii.gz label maps (default: the dataset's labelsTr)")


class Predict(Section):
    input: str | None = Field(None, description="a folder with imagesTr/ and lungsTr/ (default: the eval split)")
    ase: bool = Field(True, description="apply ASE to the predictions")


class PulmonaryAvManifest(Manifest):
    pipeline: Literal["pulmonary-av"] = "pulmonary-av"
    dataset: Data
    prior: Prior = Field(default_factory=Prior)
    model: Model = Field(default_factory=Model)
    train: Train = Field(default_factory=Train)
    eval: Eval = Field(default_factory=Eval)
    inference: Inference = Field(default_factory=Inference)
    refine: Refine = Field(default_factory=Refine)
    count: Count_ = Field(default_factory=Count_)
    predict: Predict = Field(default_factory=Predict)
    loss_weight: NonNegFloat = Field(1.0, description="CE weight beside Dice (card: equal)")

    @model_validator(mode="after")
    def _checks(self):
        if self.dataset.fold >= self.dataset.folds:
            raise ValueError(f"dataset.fold {self.dataset.fold} must be below dataset.folds {self.dataset.folds}")
        if self.inference.roi_size is None:
            self.inference.roi_size = tuple(self.train.patch)
        if not self.prior.iso_levels:
            raise ValueError("prior.iso_levels needs at least one level")
        return self


def data_paths(m: PulmonaryAvManifest) -> dict[str, Path]:
    """The dataset folder, after a cheap layout check (a wrong folder fails before it is hashed)."""
    root = Path(m.dataset.root)
    if root.exists():
        from medrun.datasets import pulmonary_av

        pulmonary_av.read(root)
    return {m.dataset.name: root}
