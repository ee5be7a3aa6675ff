"""fusing-forces' typed manifest (pydantic only) and the data folder it reads."""

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
    NonNegInt,
    PositiveFloat,
    Section,
    Seed,
    TrainSection,
)

Width = Literal["gamma", "mu", "min"]


class Data(DatasetSection):
    name: Literal["etmira"]
    depth_suffix: str = Field("depth", pattern=r"^[A-Za-z0-9_-]+$",
                              description="suffix of the depth TIFFs, <ID>/PS/<ID>_<side>_<suffix>.tif (undocumented)")
    test_mirrors: list[str] = Field(default_factory=lambda: ["ANSA-VI-1700_R", "ANSA-VI-1701_R", "wels-11944_R"],
                                    min_length=1, description="held-out sides; their patches are split into val/test")
    exclude: list[str] = Field(default_factory=list, description="sides left out entirely (the dot-style outlier)")
    hp_sigma_px: PositiveFloat = Field(16.0, description="σ (px) of the Gaussian subtracted for the high-pass")
    clip_std: PositiveFloat = Field(3.0, description="clip the high-pass to μ ± clip_std·σ over mirror pixels")
    tile_grid: Count = Field(5, description="tiles per axis with half-tile stride (5: a 5×5 grid of 2,988×2,240)")
    patch: Count = Field(512, description="patch side (px) cut from the depth map")
    net_size: int = Field(256, ge=32, description="network input side: patches are resized to it (multiple of 32)")
    patches_per_tile: Count = Field(10, description="random training patches per tile and epoch")
    min_mirror: Fraction = Field(0.5, description="val/test patches with less mirror than this are skipped")
    split_seed: Seed = Field(0, description="shuffle of the held-out patches before the val/test halves")

    @model_validator(mode="after")
    def _sizes(self):
        if self.net_size % 32:
            raise ValueError(f"dataset.net_size {self.net_size} must be a multiple of 32 (the UNet halves it 5 times)")
        return self


class Model(Section):
    backbone: str = Field("efficientnet-b6", pattern=r"^efficientnet-(b[0-8]|l2)$",
                          description="MONAI FlexibleUNet encoder (no pretrained weights)")
    decoder_channels: tuple[int, int, int, int, int] = Field((256, 128, 64, 32, 16), description="decoder widths")
    iter_inputs: Literal["x+delta+y", "x+delta", "x+y"] = Field("x+delta+y", description="f_iter's input channels "
                                                                "(Table 1: Y + Δ, Δ only, Y only)")
    y_as_logits: bool = Field(False, description="feed f_init's logits as Y instead of the binary mask (repo)")
    bn_momentum: float | None = Field(None, gt=0, lt=1, description="BatchNorm momentum (None: MONAI's EfficientNet "
                                      "default 0.01, which needs many steps before eval-mode statistics settle)")
    iter_warm_start: bool = Field(False, description="start f_iter from f_init's weights (X channel copied, Δ/Y "
                                                     "channels zero) instead of random init (paper: random)")
    init_ckpt: str | None = Field(None, description="f_init weights (a released checkpoint) instead of a "
                                                    "train-init run")


class Interaction(Section):
    """The simulated human: Alg. 1 statistics (paper values by default; `medrun stats` measures them) and Alg. 2–3."""

    mu: PositiveFloat = 6.19
    sigma: PositiveFloat = 1.49
    gamma_a: PositiveFloat = 49.13
    gamma_loc: float = -4.28
    gamma_scale: PositiveFloat = 0.21317
    erase_tolerance: NonNegInt = Field(9, description="dilation iterations of skel(Y*) for erase (round(μ + 2σ))")
    length: Count = Field(11, description="pixels of the sub-segment drawn (±5 around a random centre)")
    raster_subsegment: bool = Field(False, description="take consecutive raster-order pixels (repo), not the path")
    scale_to_net: bool = Field(True, description="scale widths by net_size/patch (strokes are drawn at network size)")
    train_width: Width = Field("gamma", description="width of training strokes: gamma ~ G, mu, or min = μ − 2σ")


class Loss(Section):
    kind: Literal["generalized_dice", "dice"] = Field("generalized_dice", description="Sudre et al. (paper) or Dice")


class Train(TrainSection):
    epochs: Epochs = Field(200, description="cap; early stopping on the validation score ends training before it")
    batch_size: BatchSize = 32
    lr: LearningRate = 3e-4
    lr_factor: PositiveFloat = 0.5
    lr_patience: NonNegInt = 3
    stop_patience: Count = 10
    stop_min_delta: float = Field(1e-3, ge=0)
    augment: bool = Field(True, description="rot90 and flips (shifts come from the random crop)")


class Eval(EvalSection):
    split: str = "test"
    metrics: list[str] = Field(default_factory=lambda: ["iou", "pfm", "pfm_delta"])
    repeats: Count = Field(5, description="runs with different random strokes (Table 1: 5)")
    widths: list[Width] = Field(default_factory=lambda: ["mu", "gamma"], min_length=1)
    overlays: NonNegInt = Field(4, description="before/after figures of the first N patches")


class Simulate(Section):
    mirrors: list[str] | None = Field(None, description="sides to run on (default: dataset.test_mirrors)")
    max_interactions: Count = 3000
    runs: Count = Field(10, description="repeats with different random strokes (paper: 10)")
    modes: list[Literal["both", "add", "erase"]] = Field(default_factory=lambda: ["both", "add", "erase"], min_length=1)
    width: Width = Field("min", description="stroke width (paper's final evaluation: μ − 2σ)")
    manual_hints: Literal["own", "interactive"] = Field(
        "own", description="manual curve: hints from Y^Δ's own errors (own) or replaying the interactive strokes")


class Refine(Section):
    side: str | None = Field(None, description="side key of the patch, e.g. ANSA-VI-1700_R")
    x: NonNegInt = Field(0, description="left of the patch (px, full resolution)")
    y: NonNegInt = Field(0, description="top of the patch (px, full resolution)")
    strokes: str | None = Field(None, description="PNG of patch×patch px: red = add, blue = erase (grey: >0 = add)")


class Prepare(Section):
    figures: NonNegInt = Field(4, description="figures of the first N sides")


class FusingForcesManifest(Manifest):
    pipeline: Literal["fusing-forces"] = "fusing-forces"
    dataset: Data
    model: Model = Field(default_factory=Model)
    interaction: Interaction = Field(default_factory=Interaction)
    loss: Loss = Field(default_factory=Loss)
    train_init: Train = Field(default_factory=Train)
    train: Train = Field(default_factory=Train)
    eval: Eval = Field(default_factory=Eval)
    simulate: Simulate = Field(default_factory=Simulate)
    refine: Refine = Field(default_factory=Refine)
    prepare: Prepare = Field(default_factory=Prepare)

    @model_validator(mode="after")
    def _patch_fits(self):
        if self.dataset.patch < self.dataset.net_size // 4:
            raise ValueError("dataset.patch must not be far smaller than dataset.net_size")
        return self


def data_paths(m: FusingForcesManifest) -> dict[str, Path]:
    root = Path(m.dataset.root)
    if root.exists():
        from medrun.datasets import etmira

        etmira.check_layout(root)
    return {m.dataset.name: root}
