"""endo-depth's typed manifest (pydantic only) and the data folders it reads."""

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
    NonNegFloat,
    PositiveFloat,
    Section,
    TrainSection,
)


class Data(DatasetSection):
    name: Literal["hamlyn", "scared"]
    size: int = Field(224, ge=8, description="square network input (resize after the crop); a multiple of 8 × patch")
    crop: float = Field(0.05, ge=0, lt=0.5, allow_inf_nan=False,
                        description="fraction of the width cut from the left and from the right border (Hamlyn's "
                                    "black rectification borders; card: 5 % per side)")
    # Hamlyn: videos by their NN of rectifiedNN; SCARED: subjects by their dataset_k number
    train: list[str] | None = Field(None, description="training videos / subjects (default: all others)")
    val: list[str] = Field(default_factory=list, description="validation videos / subjects (model selection)")
    test: list[str] = Field(default_factory=list, description="held-out test videos / subjects")
    max_depth: PositiveFloat | None = Field(None, description="score only GT depth ≤ this (mm); SCARED: 150")
    frame_step: Count = Field(1, description="use every n-th frame of val/test (consecutive frames are near-copies)")

    @field_validator("train", "val", "test", mode="before")
    @classmethod
    def _names(cls, v):
        return None if v is None else [str(x) for x in v]

    @model_validator(mode="after")
    def _disjoint(self):
        sets = {"val": set(self.val), "test": set(self.test), "train": set(self.train or ())}
        for a, b in (("train", "val"), ("train", "test"), ("val", "test")):
            both = sorted(sets[a] & sets[b])
            if both:
                raise ValueError(f"dataset.{a} and dataset.{b} share {both[0]}: splits must be disjoint")
        if not self.test:
            raise ValueError("dataset.test is empty: name the held-out videos (Hamlyn) or subjects (SCARED)")
        return self


class Model(Section):
    patch: Count = Field(4, description="patch stem p (card: 4, so 224 gives a 56×56 token grid)")
    dim: Count = Field(384, description="embedding width D (ViT-small: 384)")
    depth: int = Field(4, ge=4, description="transformer blocks, spread over the 4 stages (card: 4; ~12 for 22 M)")
    heads: Count = 6
    mlp_ratio: PositiveFloat = 4.0
    fusion: Literal["gated", "absdiff"] = Field("gated", description="gated: Concat(σ(W_l F_l)⊙F_l, σ(W_r F_r)⊙F_r); "
                                                                     "absdiff: |F_l − F_r| (Fig. 4 ablation)")
    decoder: tuple[int, int, int, int] = (256, 128, 64, 32)
    disp_scale: PositiveFloat = Field(0.3, description="disparity in pixels = σ-output × disp_scale × width")
    encoder_weights: str | None = Field(None, description="a timm-format ViT state dict; compatible tensors load")

    @model_validator(mode="after")
    def _heads(self):
        if self.dim % self.heads or self.dim % 4:
            raise ValueError(f"model.dim {self.dim} must be divisible by model.heads {self.heads} and by 4")
        return self


class Loss(Section):
    """y = SCL + smooth·ESL; SCL = α(1 − SSIM₃ₓ₃)/2 + β|I_l − Î_l|."""

    alpha: NonNegFloat = 0.85
    beta: NonNegFloat = 0.15
    smooth: NonNegFloat = Field(1.0, description="weight of the edge-aware smoothness (Eq. 1: 1; Monodepth2: 1e-3)")


class Train(TrainSection):
    epochs: Epochs = 60
    batch_size: BatchSize = 8
    lr: LearningRate = 1.95e-4
    weight_decay: NonNegFloat = Field(0.01, description="AdamW (torch default)")
    lr_step: Count = Field(5, description="StepLR: divide the lr by 1/lr_gamma every lr_step epochs")
    lr_gamma: PositiveFloat = 0.1
    mask_ratio: Fraction = Field(0.2, description="fraction of mask_patch×mask_patch input patches zeroed")
    mask_patch: Count = 16
    shear_prob: float = Field(0.5, ge=0, le=1, description="probability the right input is the sheared left view")
    shear_max: NonNegFloat = Field(10.0, description="training shear angle U(−max, max) in degrees")


class Eval(EvalSection):
    split: str = "test"
    metrics: list[str] = Field(default_factory=lambda: ["abs_rel", "sq_rel", "rmse", "rmse_log", "a1", "a2", "a3"])
    shear: float = Field(5.0, ge=-45, le=45, description="degrees: the 'right' input at inference is the left "
                                                         "view sheared by this")
    test_selected: bool = Field(True, description="also score the epoch with the best test AbsRel (the paper's "
                                                  "selection), evaluating the test split at every epoch")
    figures: int = Field(4, ge=0, description="depth figures of the first N evaluated frames")


class Predict(Section):
    input: str | None = Field(None, description="images: a file, folder or glob (default: the eval split)")
    mm_per_unit: PositiveFloat | None = Field(
        None, description="depth in mm = mm_per_unit / disparity; default: the train run's median scale")
    focal: PositiveFloat | None = Field(None, description="focal length in pixels for the point cloud (default: "
                                                          "the image width)")
    ply: bool = Field(True, description="write a coloured point cloud .ply per image (open3d)")


class EndoDepthManifest(Manifest):
    pipeline: Literal["endo-depth"] = "endo-depth"
    dataset: Data
    model: Model = Field(default_factory=Model)
    loss: Loss = Field(default_factory=Loss)
    train: Train = Field(default_factory=Train)
    eval: Eval = Field(default_factory=Eval)
    predict: Predict = Field(default_factory=Predict)

    @model_validator(mode="after")
    def _size(self):
        mult = 8 * self.model.patch
        if self.dataset.size % mult:
            raise ValueError(f"dataset.size {self.dataset.size} is not a multiple of {mult} (8 × model.patch)")
        return self


def data_paths(m: EndoDepthManifest) -> dict[str, Path]:
    """The folder to fingerprint, after a cheap layout check (a wrong folder fails before it is hashed)."""
    root = Path(m.dataset.root)
    if root.exists():
        if m.dataset.name == "hamlyn":
            from medrun.datasets import hamlyn

            hamlyn.check_layout(root)
        else:
            from medrun.datasets import scared

            scared.check_layout(root)
    return {m.dataset.name: root}
