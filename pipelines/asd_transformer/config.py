"""asd-transformer's typed manifest (pydantic only) and the data folder it reads."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator

from medrun.manifests.schema import (
    BatchSize,
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
    name: Literal["abide", "abide-pcp"]
    splits: str | None = Field(None, description="optional CSV subject,split (train/val/test) fixing the split "
                                                 "instead of the protocol's random ones (relative to root or absolute)")
    asd_label: Literal[0, 1] = Field(1, description="abide.npy: the label value meaning ASD (default 1; files "
                                                     "storing DX_GROUP − 1, as BrainGB's scripts write, have 0)")
    split_seed: Seed = Field(0, description="seed of the fixed stratified 70 % train split")
    train_fraction: float = Field(0.7, gt=0, lt=1)
    val_fraction: float = Field(1 / 3, gt=0, lt=1, description="share of the non-train subjects that go to val (7:1:2)")


class Preprocess(Section):
    combat: bool = Field(True, description="ComBat across sites on the upper-triangle FC (neuroCombat)")
    combat_fit: Literal["all", "train"] = Field("all", description="all: label-free, transductive (the paper); "
                                                                  "train: learn on the train split, apply to the rest")
    nle: bool = Field(True, description="scale each ROI's FC row by its nodal local efficiency")
    le_density: float = Field(0.2, gt=0, le=1, description="edge density of the binary graph of positive FC")
    le_mode: Literal["binary", "weighted"] = Field("binary", description="weighted needs bctpy (efficiency_wei)")


ARCHS = ("asd-transformer", "brainnetcnn", "fbnetgen", "bnt")
Arch = Literal["asd-transformer", "brainnetcnn", "fbnetgen", "bnt"]


class Model(Section):
    arch: Arch = Field("asd-transformer", description=(
        "asd-transformer (the paper's model) or a Table 1 baseline: brainnetcnn, fbnetgen (needs the time series), "
        "bnt (Brain Network Transformer); baselines take model.dim_feedforward and model.dropout where they apply"))
    bnt_clusters: int = Field(100, ge=1, description="bnt: OCRead's orthonormal cluster centres (BNT: 100; ≤ ROIs)")
    time_length: int = Field(100, ge=4, description=(
        "fbnetgen: the first time points used (fewer when a subject's series is shorter; a multiple of 4)"))
    nhead: int = Field(8, ge=1)
    dim_feedforward: int = Field(1024, ge=1)
    dropout: float = Field(0.1, ge=0, lt=1)
    clusters: int = Field(8, ge=1, description="OCRead cluster centres K")
    interaction: Literal["add", "concat", "none"] = Field(
        "add", description="add: the card's resolution; concat: the paper's literal reordering; none: Com-TF")


class Train(TrainSection):
    epochs: Epochs = 50
    batch_size: BatchSize = 64
    lr: LearningRate = 1e-4
    weight_decay: float = Field(1e-4, ge=0)
    lr_min: float = Field(1e-5, ge=0, description="cosine decay from lr to lr_min over the epochs")


class Protocol(Section):
    runs: int = Field(5, ge=1, description="repeats; each re-draws val/test (or the whole split), seed = seed + run")
    scheme: Literal["fixed-train", "resplit"] = Field(
        "fixed-train", description="fixed-train: the paper's fixed 70 % train set, val/test re-drawn per run; "
                                   "resplit: a fresh stratified 7:1:2 split per run")


class Eval(EvalSection):
    metrics: list[str] = Field(default_factory=lambda: ["accuracy", "auroc", "sensitivity", "specificity"])


class Predict(Section):
    split: Literal["all", "train", "val", "test"] = Field("all", description="subjects to score (run 1's split)")


ABLATION_VARIANTS = ("proposed", "with-nle", "with-interaction", "com-tf", "literal-concat")


class Ablation(Section):
    variants: list[Literal["proposed", "with-nle", "with-interaction", "com-tf", "literal-concat"]] = Field(
        default_factory=lambda: ["proposed", "with-nle", "with-interaction", "com-tf"],
        description="proposed: ComBat+Nle+add; with-nle: ComBat+Nle, no interaction (Table 2); with-interaction: "
                    "ComBat+add, no Nle (Table 2); com-tf: all off; literal-concat: ComBat+Nle+concat")

    @field_validator("variants")
    @classmethod
    def _unique(cls, v):
        if len(set(v)) != len(v) or not v:
            raise ValueError("list each variant once (at least one)")
        return v


class Baselines(Section):
    archs: list[Arch] = Field(default_factory=lambda: ["brainnetcnn", "fbnetgen", "bnt", "asd-transformer"],
                              min_length=1, description="`medrun baselines` (Table 1): one train run per model.arch")
    features: Literal["raw", "manifest"] = Field("raw", description=(
        "the baselines' input: raw, Pearson FC without ComBat or Nle as in their papers; manifest, the "
        "preprocess section's (the proposed model always uses the manifest's)"))

    @field_validator("archs")
    @classmethod
    def _unique_archs(cls, v):
        if len(set(v)) != len(v):
            raise ValueError("list each arch once")
        return v


class AsdTransformerManifest(Manifest):
    pipeline: Literal["asd-transformer"] = "asd-transformer"
    dataset: Data
    preprocess: Preprocess = Field(default_factory=Preprocess)
    model: Model = Field(default_factory=Model)
    train: Train = Field(default_factory=Train)
    protocol: Protocol = Field(default_factory=Protocol)
    eval: Eval = Field(default_factory=Eval)
    predict: Predict = Field(default_factory=Predict)
    ablate: Ablation = Field(default_factory=Ablation)
    baselines: Baselines = Field(default_factory=Baselines)


def data_paths(m: AsdTransformerManifest) -> dict[str, Path]:
    """The folder to fingerprint, after a cheap layout check (no data read)."""
    from medrun.datasets import abide

    root = Path(m.dataset.root)
    if root.exists():
        abide.check_layout(m.dataset.name, root)
    return {m.dataset.name: root}
