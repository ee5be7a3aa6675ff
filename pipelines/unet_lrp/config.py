"""unet-lrp's typed manifest (pydantic only) and the data folder it reads."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator, model_validator

from medrun.datasets.imageio import Intensity
from medrun.manifests.schema import (
    BatchSize,
    Count,
    DatasetSection,
    Epochs,
    EvalSection,
    LearningRate,
    Manifest,
    NonNegInt,
    Section,
    TrainSection,
)


class Data(DatasetSection):
    name: Literal["montgomery", "shenzhen", "cityscapes", "pairs"]
    label: NonNegInt = Field(24, description="cityscapes: the foreground labelId (24 = person)")
    resize: tuple[Count, Count] = Field((623, 512), description="(H, W) every image and mask is resized to first")
    crop: int = Field(512, description="square training crops, sliding-window size, and the LRP input size")
    crops_per_image: int = Field(2, ge=1, description="random crops per image and epoch (author code: 2)")
    val_fraction: float = Field(0.2, gt=0, lt=1, description="the last 20 % of the sorted cases validate")
    limit: int | None = Field(None, ge=2, description="use only the first N cases (quick runs)")
    intensity: Intensity | None = Field(None, description="pairs: how stored values become 0–1 (window, percentile "
                                        "or scale; datasets/imageio.py); default: the stored type's range")

    @field_validator("crop")
    @classmethod
    def _multiple_of_16(cls, v: int) -> int:
        if v < 16 or v % 16:
            raise ValueError("must be a multiple of 16 (the U-Nets down-sample four times)")
        return v

    @model_validator(mode="after")
    def _crop_fits(self):
        if self.crop > min(self.resize):
            raise ValueError(f"crop {self.crop} is larger than the resized image {self.resize}")
        return self


class Model(Section):
    arch: Literal["unet", "resunet", "unetpp"] = "unet"
    norm: Literal["batch", "instance"] = "batch"
    in_channels: int = Field(1, ge=1, description="1 for X-ray, 3 for Cityscapes")
    features: list[Count] | None = Field(None, description="channel widths; default the card's full size per arch")
    width_div: int = Field(1, ge=1, description="divide the card's default widths by this (fixture runs: 4)")


class Train(TrainSection):
    epochs: Epochs = 100
    batch_size: BatchSize = Field(4, description="author code: 2 images × 2 crops")
    lr: LearningRate = 8e-4
    val_every: int = Field(3, ge=1, description="validate Dice every N epochs; the best epoch's weights are kept "
                                                "(Lightning's ModelCheckpoint on val_dice)")
    lrp_images: int = Field(4, ge=0, description="validation images the train run's LRP check explains (0: none)")


class Inference(Section):
    """Sliding-window inference of validation, eval and predict (MONAI's ``sliding_window_inference`` defaults, as
    the author code calls it)."""

    roi_size: tuple[Count, Count] | None = Field(None, description="window (H, W); default dataset.crop × dataset.crop")
    sw_batch_size: Count = 1
    overlap: float = Field(0.25, ge=0, lt=1)
    mode: Literal["constant", "gaussian"] = "constant"


class Predict(Section):
    input: str | None = Field(None, description="an image file, folder or glob to segment (default: the eval split)")


class LRP(Section):
    """What to explain and how (explain and lrp-stats stages; the train run's LRP check)."""

    object: str = Field("largest", description="'largest' connected component of the prediction, or its label number")
    epsilon: float = Field(1e-9, gt=0, description="ε of the ε-rule (Captum's default)")
    residual_fix: bool = Field(True, description="residual additions as Addition_Module LRP layers")
    thresh: float = Field(0.1, gt=0, description="t of the log transform (display)")
    dilate_px: int = Field(10, ge=0, description="focus: the object dilated by this many pixels")
    images: int | None = Field(None, ge=1, description="explain the first N validation images (default: all)")
    layer: str | None = Field(None, description="explain: relevance at this block's output (Captum LayerLRP) instead "
                                                "of the input, e.g. down_4 for the U-Net's bottleneck")

    @field_validator("object", mode="before")
    @classmethod
    def _object(cls, v) -> str:
        v = str(v) if isinstance(v, int) and not isinstance(v, bool) else v
        if not isinstance(v, str) or (v != "largest" and not (v.isdigit() and int(v) >= 1)):
            raise ValueError("must be 'largest' or a component number ≥ 1")
        return v


class Compare(Section):
    """``medrun compare``: one train run per architecture × norm (the paper's three nets, batch vs instance)."""

    archs: list[Literal["unet", "resunet", "unetpp"]] = Field(
        default_factory=lambda: ["unet", "resunet", "unetpp"], min_length=1, description="model.arch of the rows")
    norms: list[Literal["batch", "instance"]] = Field(
        default_factory=lambda: ["batch", "instance"], min_length=1, description="model.norm of the rows")


class UnetLrpManifest(Manifest):
    pipeline: Literal["unet-lrp"] = "unet-lrp"
    dataset: Data
    model: Model = Field(default_factory=Model)
    train: Train = Field(default_factory=Train)
    eval: EvalSection = Field(default_factory=lambda: EvalSection(split="val", metrics=["dice"]))
    inference: Inference = Field(default_factory=Inference)
    predict: Predict = Field(default_factory=Predict)
    # one section for the explain and lrp-stats stages (and the train run's LRP check): its name is a stage on a
    # finished run, so changing it never hides the train run from those stages (runner.train_key drops it)
    explain: LRP = Field(default_factory=LRP)
    compare: Compare = Field(default_factory=Compare)


def data_paths(m: UnetLrpManifest) -> dict[str, Path]:
    """The folder to fingerprint, after a cheap layout check (so a wrong folder fails before it is hashed)."""
    from medrun.datasets import cityscapes, montgomery, pairs, shenzhen

    root = Path(m.dataset.root)
    if root.exists():
        {"montgomery": montgomery, "shenzhen": shenzhen, "cityscapes": cityscapes,
         "pairs": pairs}[m.dataset.name].check_layout(root)
    return {m.dataset.name: root}
