"""cmu-net's typed manifest (pydantic only) and the data folder it reads."""

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
    Seed,
    TrainSection,
)

ModelName = Literal["cmunet", "unet", "umamba", "unet-cbam", "segresnet", "unetr", "swinunetr"]


class Data(DatasetSection):
    name: Literal["sekh-mito", "luo-er", "luo-mito"]
    test_fraction: float = Field(0.2, gt=0, lt=1, description="held-out share of imagesTr when there is no labelsTs")
    split_seed: Seed = Field(0, description="seed of the 80/20 train/test split (the card: fixed split, seed 0)")
    cases: str | None = Field(None, description="regular expression: keep only the case ids it matches (re.search)")
    exclude: list[str] = Field(default_factory=list, description="case ids to leave out")


class Model(Section):
    name: ModelName = Field("cmunet", description="cmunet and its ablation variants, or a MONAI baseline")
    channels: list[Count] = Field([32, 64, 128, 256, 512], min_length=2,
                                  description="per-stage widths (5 stages, 4 pools)")
    d_state: int = Field(16, ge=1)
    expand: int = Field(2, ge=1)
    mamba_residual: bool = False
    cbam_reduction: int = Field(16, ge=1)
    deep_supervision: bool = True
    scan: Literal["auto", "chunked", "ssd", "sequential"] = Field(
        "ssd", description="ssd: fastest on CPU; auto: mamba_ssm on CUDA")
    chunk_size: int = Field(64, ge=1, description="chunk length of the CPU selective scan")
    num_classes: int = Field(2, ge=2)


class Augment(Section):
    flip: bool = True
    rotate_prob: float = Field(0.2, ge=0, le=1, description="random rotation in [-180°, 180°] (nnU-Net 2D)")
    elastic_prob: float = Field(0.2, ge=0, le=1)


class Train(TrainSection):
    epochs: Epochs = 150
    iters_per_epoch: int = Field(250, ge=1, description="nnU-Net epoch = 250 iterations")
    batch_size: BatchSize = 12
    patch_size: int = Field(256, ge=16, description="square training patch (nnU-Net auto-configures it)")
    lr: LearningRate = 0.01
    lr_min: float = Field(1e-5, ge=0, description="cosine annealing floor")
    momentum: Fraction = 0.99
    nesterov: bool = True
    weight_decay: NonNegFloat = 3e-5
    grad_clip: PositiveFloat | None = Field(12.0, description="nnU-Net clips the gradient norm at 12")
    augment: Augment = Field(default_factory=Augment)


class Eval(EvalSection):
    metrics: list[str] = Field(default_factory=lambda: ["f1", "iou", "miou"])
    overlays: int = Field(4, ge=0, description="overlay PNGs of the first N cases")


class Inference(Section):
    """Sliding-window inference of eval / predict / morphology (MONAI ``SlidingWindowInferer``)."""

    roi_size: list[Count] | None = Field(None, min_length=2, max_length=2,
                                         description="window (H, W); default the training patch")
    sw_batch_size: Count = 4
    overlap: float = Field(0.5, ge=0, lt=1, description="overlap of neighbouring windows")
    mode: Literal["gaussian", "constant"] = "gaussian"


class Morphology(Section):
    split: str = "test"


class Predict(Section):
    input: str | None = Field(None, description="images: a file, folder or glob (default: the eval split)")


class Ablation(Section):
    """Table 5: one train run per variant (``model.name``); the paper's rows are in ``paper.yaml``."""

    variants: list[ModelName] = Field(default_factory=lambda: ["unet", "umamba", "unet-cbam", "cmunet"])


class CmuNetManifest(Manifest):
    pipeline: Literal["cmu-net"] = "cmu-net"
    dataset: Data
    model: Model = Field(default_factory=Model)
    train: Train = Field(default_factory=Train)
    eval: Eval = Field(default_factory=Eval)
    inference: Inference = Field(default_factory=Inference)
    morphology: Morphology = Field(default_factory=Morphology)
    predict: Predict = Field(default_factory=Predict)
    ablate: Ablation = Field(default_factory=Ablation)

    @model_validator(mode="after")
    def _patch_fits(self):
        down = 2 ** (len(self.model.channels) - 1)
        if self.model.name in ("cmunet", "unet", "umamba", "unet-cbam") and self.train.patch_size % down:
            raise ValueError(f"train.patch_size {self.train.patch_size} must be a multiple of {down} "
                             f"({len(self.model.channels) - 1} poolings)")
        return self

    @field_validator("ablate")
    @classmethod
    def _unique(cls, v: Ablation) -> Ablation:
        if len(set(v.variants)) != len(v.variants):
            raise ValueError("ablate.variants lists a model twice")
        return v


def data_paths(m: CmuNetManifest) -> dict[str, Path]:
    """The folder to fingerprint, after a cheap layout check (so a wrong folder fails before it is hashed)."""
    from medrun.datasets import nnunet_raw

    root = Path(m.dataset.root)
    if root.exists():
        nnunet_raw.check_layout(root)
    return {"data": root}
