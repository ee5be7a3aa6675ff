"""hybrid-seg's typed manifest (pydantic only) and the data folders it reads."""

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
    NonNegInt,
    PositiveFloat,
    Section,
    Seed,
    TrainSection,
)

Fusion = Literal["none", "input", "film", "token", "gated"]


class Data(DatasetSection):
    name: Literal["pannuke", "consep"]
    rotation: Literal[1, 2, 3] = Field(1, description="PanNuke fold rotation: train/val/test = 1/2/3, 2/1/3, 3/2/1")
    limit: int | None = Field(None, ge=1, description="keep the first N patches (images for CoNSeP) of each fold/part")
    metadata_csv: str | None = Field(None, description="optional CSV (image_id + numeric/categorical columns) "
                                                       "joined to the tissue one-hot")
    tile: Count = Field(256, description="CoNSeP: training crops of tile² …")
    overlap: NonNegInt = Field(64, description="… overlapping by this many pixels")
    val_fraction: float = Field(0.2, gt=0, lt=1, description="CoNSeP: Train images held out for validation")
    split_seed: Seed = 0

    @model_validator(mode="after")
    def _tile(self):
        if self.tile % 16:
            raise ValueError(f"dataset.tile {self.tile} must be a multiple of 16 (HybridNet halves the input 4 times)")
        if self.overlap >= self.tile:
            raise ValueError(f"dataset.overlap {self.overlap} must be smaller than dataset.tile {self.tile}")
        return self


class Model(Section):
    arch: Literal["hybrid", "cnn", "swin"] = Field(
        "hybrid", description="hybrid (transformer bottleneck), cnn (the CNN-only ablation) or swin (SwinUNETR)")
    widths: tuple[Count, Count, Count, Count] = (32, 64, 128, 256)
    d_model: Count = 256
    heads: Count = 8
    layers: Count = 4
    mlp: Count = 1024
    dropout: Fraction = 0.1
    fusion: Fusion = Field("none", description="metadata fusion: none | input | film | token | gated")
    meta_embed: Count = 128
    swin_feature_size: Count = 24

    @model_validator(mode="after")
    def _consistent(self):
        if self.d_model % self.heads:
            raise ValueError(f"model.d_model {self.d_model} must be divisible by model.heads {self.heads}")
        if self.arch == "swin" and self.fusion != "none":
            raise ValueError("model.fusion needs arch hybrid or cnn (SwinUNETR takes no metadata)")
        if self.arch == "cnn" and self.fusion in ("token", "gated"):
            raise ValueError(f"model.fusion {self.fusion} adds a transformer token: use arch hybrid")
        return self


class Loss(Section):
    """HoVer-Net loss (MONAI ``HoVerNetLoss``): CE + Dice on NP, MSE + MSGE on HV, CE + Dice on NC."""

    np_ce: NonNegFloat = 1.0
    np_dice: NonNegFloat = 1.0
    hv_mse: NonNegFloat = 1.0
    hv_msge: NonNegFloat = 2.0
    nc_ce: NonNegFloat = 1.0
    nc_dice: NonNegFloat = 1.0


class Train(TrainSection):
    epochs: Epochs = 100
    batch_size: BatchSize = 16
    lr: LearningRate = 1e-4
    weight_decay: NonNegFloat = 1e-4
    warmup_epochs: NonNegInt = 5
    augment: bool = True
    repeats: Count = Field(1, description="passes over the training set per epoch (augmented differently)")
    select: Literal["val_pq", "last"] = Field("val_pq", description="keep the epoch of best validation bPQ or the last")


class Post(Section):
    """Instance post-processing (card): markers from the HV Sobel map, watershed on the smoothed energy."""

    np_threshold: Fraction = 0.5
    marker_threshold: Fraction = 0.4
    min_size: NonNegInt = 10
    smooth_sigma: NonNegFloat = 1.0


class Eval(EvalSection):
    split: str = "test"
    metrics: list[str] = Field(default_factory=lambda: ["np_dice", "bpq", "mpq", "aji", "ap50"])
    overlays: NonNegInt = Field(4, description="overlay PNGs (instance outlines) of the first N cases")
    batch_size: BatchSize = 8


class Predict(Section):
    input: str | None = Field(None, description="PNG/JPEG images: a file, folder or glob (default: the eval split)")


class Fusions(Section):
    modes: list[Fusion] = Field(default_factory=lambda: ["none", "input", "film", "token", "gated"], min_length=1)
    archs: list[Literal["hybrid", "cnn"]] = Field(default_factory=lambda: ["cnn"],
                                                  description="extra rows: these archs at fusion none")


class Explain(Section):
    images: Count = Field(4, description="test images explained")
    ig_steps: Count = 32
    blur_sigma: PositiveFloat = Field(5.0, description="IG baseline and deletion/insertion filler: Gaussian blur σ")
    window: Count = 16
    stride: Count = 8
    step_fraction: float = Field(0.05, gt=0, le=0.5, description="deletion/insertion: pixels per step")
    instances: NonNegInt = Field(3, description="InstanceContrast-IG: nuclei per image")
    neighbour_px: PositiveFloat = 20.0


class Gen(Section):
    kind: Literal["ddpm", "pix2pix"] = "ddpm"
    size: Count = Field(256, description="generated side (crops/resizes of the training patches)")
    block_out: list[Count] = Field(default_factory=lambda: [64, 128, 256, 256], min_length=2)
    layers_per_block: Count = 2
    timesteps: Count = 1000
    epochs: Epochs = 100
    batch_size: BatchSize = 16
    lr: LearningRate = 1e-4
    ddim_steps: Count = 50
    samples: Count = Field(16, description="pairs `generate` writes (and synth-train draws from)")
    l1_weight: NonNegFloat = 100.0
    base: Count = Field(64, description="pix2pix generator width")
    rebalance: bool = Field(True, description="copy-paste rare-class nuclei into the conditions")


class SynthTrain(Section):
    rho: Fraction = Field(0.25, description="ρ: share of each batch drawn from the generator's pairs (in expectation)")


class Adapt(Section):
    mode: Literal["full", "lora"] = "lora"
    shots: Count = 5
    steps: Count = 200
    lr: LearningRate = 1e-4
    rank: Count = 8
    alpha: PositiveFloat = 16
    lora_dropout: Fraction = 0.05
    target_root: str | None = Field(None, description="CoNSeP folder (Train/Test) to adapt to; with "
                                                       "--fixture and none given, the generated CoNSeP fixture")
    projections: Count = 128


class Compress(Section):
    prune: list[Fraction] = Field(default_factory=lambda: [0.3, 0.5])
    finetune_epochs: NonNegInt = 5
    finetune_lr_factor: PositiveFloat = Field(0.1, description="fine-tuning lr = train.lr × this")
    quant: list[Literal["dynamic"]] = Field(default_factory=lambda: ["dynamic"], description="static FX PTQ: not done")


class Bench(Section):
    runs: Count = 50
    warmup: NonNegInt = 10
    threads: Count = 2
    size: Count | None = Field(None, description="input side (default: the data's patch side)")


class HybridSegManifest(Manifest):
    pipeline: Literal["hybrid-seg"] = "hybrid-seg"
    dataset: Data
    model: Model = Field(default_factory=Model)
    loss: Loss = Field(default_factory=Loss)
    train: Train = Field(default_factory=Train)
    post: Post = Field(default_factory=Post)
    eval: Eval = Field(default_factory=Eval)
    predict: Predict = Field(default_factory=Predict)
    fusions: Fusions = Field(default_factory=Fusions)
    explain: Explain = Field(default_factory=Explain)
    gen: Gen = Field(default_factory=Gen)
    synth_train: SynthTrain = Field(default_factory=SynthTrain)
    adapt: Adapt = Field(default_factory=Adapt)
    compress: Compress = Field(default_factory=Compress)
    bench: Bench = Field(default_factory=Bench)


def data_paths(m: HybridSegManifest) -> dict[str, Path]:
    """The folders to fingerprint after a cheap layout check (a wrong folder fails before it is hashed)."""
    root = Path(m.dataset.root)
    if root.exists():
        if m.dataset.name == "pannuke":
            from medrun.datasets import pannuke

            pannuke.check_layout(root)
        else:
            from medrun.datasets import consep

            consep.check_layout(root)
    out = {m.dataset.name: root}
    if m.dataset.metadata_csv:
        out["metadata"] = Path(m.dataset.metadata_csv).parent
    return out
