"""dense-unet-teachers' typed manifest (pydantic only) and the data folder it reads."""

from __future__ import annotations

import re
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
    Section,
    TrainSection,
)

ALPHA = re.compile(r"^(eq5|ramp|const:(0(\.\d+)?|1(\.0+)?))$")


class Data(DatasetSection):
    name: Literal["iseg2017", "mrbrains13"]
    val_subject: Count = Field(8, description="the held-out validation subject's number (iSEG released config: 8; "
                                              "MRBrainS13: the left-out subject of leave-one-out)")
    train_subjects: list[Count] | None = Field(None, description="training subjects (default: all others)")


class Model(Section):
    base: Count = Field(32, description="filters of the first level (F); level i has F·2^i")
    depth: int = Field(3, ge=2, le=5, description="encoder levels")
    heads: Count = Field(2, description="heads of the bottom self-attention block")
    up_attention: bool = Field(True, description="attention up-sampling blocks in the decoder (paper); false: plain "
                                                 "transposed convolutions (released code)")
    dropout: Fraction = Field(0.5, description="dropout before the output 1×1×1 convolution")
    attn_dropout: Fraction = Field(0.5, description="dropout on the attention matrices while training")


class Train(TrainSection):
    epochs: Epochs = Field(100, description="epochs of each phase (teacher T1, teacher T2, fusion) unless "
                                            "teacher.epochs / fusion.epochs say otherwise")
    batch_size: BatchSize = 8
    lr: LearningRate = 3e-5
    patch_size: Count = Field(32, description="side of the random cubic training patches")
    patches_per_epoch: Count = Field(2000, description="random patches drawn per epoch (the paper's 'iteration')")
    l2: NonNegFloat = Field(3e-5, description="weight decay l2·Σ‖w‖²/2 over convolution kernels (released code)")
    val_patches: Count = Field(16, description="fixed random patches of the validation subject: val loss/accuracy "
                                               "each epoch and α's P and L")


class Teacher(Section):
    modality: Literal["t1", "t2"] = Field("t1", description="t1 or t2 (MRBrainS13: t2 = T2-FLAIR)")
    epochs: Epochs | None = Field(None, description="default: train.epochs")


class Fusion(Section):
    every: Count | None = Field(None, description="optimizer steps between fusion events (default: one epoch, the "
                                                  "validation cycle, as the released code)")
    alpha: str = Field("eq5", description="eq5 (α = (P+1)/(1/L+N), clamped to [0, 1]; 0.01 before the first "
                                          "validation), ramp (0.01 → 1 linearly over the events) or const:<v>")
    op: Literal["sum", "mean"] = Field("sum", description="teacher term of Eq. 4: W¹ + W² (paper) or their mean")
    epochs: Epochs | None = Field(None, description="default: train.epochs")

    @field_validator("alpha")
    @classmethod
    def _alpha(cls, v: str) -> str:
        if not ALPHA.match(v):
            raise ValueError(f"'{v}' is not eq5, ramp or const:<v> with 0 ≤ v ≤ 1 (e.g. const:0.6)")
        return v


class Eval(EvalSection):
    split: Literal["val"] = "val"
    metrics: list[str] = Field(default_factory=lambda: ["dice_csf", "dice_gm", "dice_wm", "mean_dice", "accuracy"])
    overlays: bool = Field(True, description="three-plane overlay of the validation subject")


class Inference(Section):  # sliding window of eval / predict (the predictor's settings)
    roi_size: tuple[Count, Count, Count] | None = Field(None, description="window; default: the training patch")
    sw_batch_size: Count = 4
    overlap: Fraction = Field(0.75, description="window overlap (0.75 of 32 = the card's step 8)")
    mode: Literal["constant", "gaussian"] = Field("constant", description="constant: plain average of the softmax")


class Predict(Section):
    input: str | None = Field(None, description="a folder of test subjects in the dataset's layout (iSEG: "
                                                "subject-N-T1/-T2.hdr; default: <root>/iSeg-2017-Testing, else the "
                                                "validation subject)")


class Loo(Section):
    subjects: list[Count] | None = Field(None, description="held-out subjects (default: every labelled subject)")


class DenseUnetTeachersManifest(Manifest):
    pipeline: Literal["dense-unet-teachers"] = "dense-unet-teachers"
    dataset: Data
    model: Model = Field(default_factory=Model)
    train: Train = Field(default_factory=Train)
    teacher: Teacher = Field(default_factory=Teacher)
    fusion: Fusion = Field(default_factory=Fusion)
    eval: Eval = Field(default_factory=Eval)
    inference: Inference = Field(default_factory=Inference)
    predict: Predict = Field(default_factory=Predict)
    loo: Loo = Field(default_factory=Loo)

    @model_validator(mode="after")
    def _shapes(self):
        m = 2 ** (self.model.depth - 1)
        if self.train.patch_size % m:
            raise ValueError(f"train.patch_size {self.train.patch_size} must be divisible by {m} "
                             f"(2^(model.depth − 1))")
        if self.inference.roi_size is None:
            p = self.train.patch_size
            self.inference.roi_size = (p, p, p)
        elif any(s % m for s in self.inference.roi_size):
            raise ValueError(f"inference.roi_size {self.inference.roi_size} must be divisible by {m}")
        if self.model.base * 2 ** (self.model.depth - 1) % self.model.heads:
            raise ValueError(f"model.heads {self.model.heads} must divide the bottom's channels")
        return self


def data_paths(m: DenseUnetTeachersManifest) -> dict[str, Path]:
    """The dataset folder, after a cheap layout check (a wrong folder fails before it is hashed)."""
    root = Path(m.dataset.root)
    if root.exists():
        if m.dataset.name == "iseg2017":
            from medrun.datasets import iseg2017

            iseg2017.training_dir(root)
        else:
            from medrun.datasets import mrbrains13

            mrbrains13.training_dir(root)
    return {m.dataset.name: root}
