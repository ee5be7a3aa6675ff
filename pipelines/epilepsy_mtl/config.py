"""epilepsy-mtl's typed manifest (pydantic only) and the data folder it reads."""

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
    LearningRate,
    Manifest,
    NonNegInt,
    Section,
    Seed,
    TrainSection,
)

TASK_METRICS = ("accuracy", "sensitivity", "specificity", "f1", "auroc")


class Data(DatasetSection):
    name: Literal["ncnp-ecog"]
    image_size: int | None = Field(227, ge=8, description="side every source image must have (the paper's 227×227); "
                                                          "null accepts any size")
    input_size: Count = Field(28, description="the model's input side (the paper resizes to 28×28)")
    test_fraction: float = Field(0.2, gt=0, lt=1, description="train stage: stratified hold-out per task (1200/300)")
    split_seed: Seed = Field(123, description="the paper's seed: splits, folds and the pairing")
    protocol: Literal["cv", "lopo"] = Field("cv", description="the folds of `medrun cv` / `ablate` and dataset.fold: "
                                                              "cv stratified k-fold per task; lopo leave patients out")
    folds: int = Field(5, ge=2, description="cv: number of folds")
    fold_file: str | None = Field(None, description="lopo: CSV patient,fold grouping patients into folds "
                                                    "(default: one fold per patient)")
    fold: NonNegInt | None = Field(None, description="hold out this fold (0-based) of the protocol as the test split "
                                                     "instead of the 80/20 hold-out; set by `medrun cv` and `ablate`")

    @model_validator(mode="after")
    def _fold_in_range(self):
        if self.protocol == "cv" and self.fold is not None and self.fold >= self.folds:
            raise ValueError(f"dataset.fold {self.fold} is not one of the {self.folds} folds (0 … {self.folds - 1})")
        return self


class Model(Section):
    task: Literal["both", "hfo", "ied"] = Field("both", description=(
        "both: the multitask model; hfo / ied: Table 2's single-task CNN baseline (one stream of the same backbone, "
        "one head, trained and scored on that task only; the stitch settings are unused)"))
    weights: str | None = Field(None, description=(
        "train: initial weights (.safetensors, or a state dict .pt/.pth loaded weights_only), e.g. a train run's "
        "model.safetensors; a single-task model takes its stream's keys (hfo.* / ied.*) and ignores the rest"))
    stitch: Literal["full", "channel"] = Field("full", description=(
        "full: square α over both streams' flattened maps (1,068,208 params); channel: Misra's 2×2 per channel"))
    n_stitch: Literal[0, 1, 2] = Field(2, description="0: independent nets, 1: after pool 1 only, 2: proposed")
    dropout: float = Field(0.8, ge=0, lt=1)
    bn_momentum: float = Field(0.01, gt=0, le=1, description="BatchNorm running-average momentum; Keras' 0.99 is 0.01")


class Train(TrainSection):
    epochs: Epochs = 200
    batch_size: BatchSize = Field(32, description="unstated in the paper; Keras' default")
    lr: LearningRate = 1e-3
    momentum: float = Field(0.0, ge=0, lt=1, description="SGD momentum (Keras' SGD default 0)")
    lr_decay_rate: float = Field(0.95, gt=0, le=1)
    lr_decay_steps: int = Field(500, ge=1, description="lr × rate every this many optimizer steps (staircase)")
    l1: float = Field(0.01, ge=0, description="L1 penalty on the conv kernels (Keras l1() default)")
    repair_each_epoch: bool = Field(False, description="reshuffle the IED partners of the training pairs every epoch "
                                                       "(default: one fixed pairing per fit, Keras' joint fit)")
    intra_op_threads: int | None = Field(1, ge=1, description=(
        "torch threads while fitting and scoring (the model is tiny: more threads cost more than they gain); "
        "null: torch's"))


class Eval(EvalSection):
    split: Literal["test", "train"] = "test"
    metrics: list[str] = Field(default_factory=lambda: [f"{m}_{t}" for m in TASK_METRICS for t in ("hfo", "ied")])
    repairings: int = Field(10, ge=0, description="random re-pairings of the test images, a diagnostic (the card)")


class Ablate(Section):
    n_stitch: list[Literal[0, 1, 2]] = Field(default_factory=lambda: [0, 1, 2], description=(
        "Fig. 5: every fold of dataset.protocol once per number of stitch units"))


class Explain(Section):
    split: Literal["test", "train"] = "test"
    methods: list[Literal["saliency", "integrated_gradients"]] = Field(
        default_factory=lambda: ["saliency", "integrated_gradients"])
    ig_steps: int = Field(50, ge=2, description="Integrated Gradients steps (zero-image baseline; captum's default)")
    max_pairs: int | None = Field(None, ge=1, description="explain only the first n test pairs")
    overlays: int = Field(4, ge=0, description="pairs drawn in figures/ per task (positives first)")


class Render(Section):
    fs: float | None = Field(None, gt=0, description="sampling rate (Hz) of .npy segments (.npz carry their own fs)")


class Predict(Section):
    hfo: str | None = Field(None, description="folder of HFO images to classify, subfolders included (with "
                                              "predict.ied; default: the eval split)")
    ied: str | None = Field(None, description="folder of IED images to classify, paired with the HFO images")


class EpilepsyMtlManifest(Manifest):
    pipeline: Literal["epilepsy-mtl"] = "epilepsy-mtl"
    dataset: Data
    model: Model = Field(default_factory=Model)
    train: Train = Field(default_factory=Train)
    eval: Eval = Field(default_factory=Eval)
    ablate: Ablate = Field(default_factory=Ablate)
    explain: Explain = Field(default_factory=Explain)
    predict: Predict = Field(default_factory=Predict)
    render: Render = Field(default_factory=Render)


def data_paths(m: EpilepsyMtlManifest) -> dict[str, Path]:
    """The image folder, after a cheap layout check (a wrong folder fails before it is hashed)."""
    from medrun.datasets import ncnp_ecog

    root = Path(m.dataset.root)
    if root.exists():
        ncnp_ecog.check_layout(root)
    return {"ncnp-ecog": root}
