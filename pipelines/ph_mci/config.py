"""ph-mci's typed manifest (pydantic only) and the data folder it reads.

The persistence settings live in a section named ``ph`` (not ``topo``): the runner leaves the sections named after
stages out of the key that finds a train run for eval, and these settings decide what was trained on.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator, model_validator

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

CLASSES = ("HC", "MCI", "EMCI", "LMCI")
NETWORKS = ("CB", "CO", "DMN", "FP", "OP", "SM")  # Dosenbach-2010 networks (ROI counts in datasets.adni_rsfmri)
Net = Literal["CB", "CO", "DMN", "FP", "OP", "SM"]
Cls = Literal["HC", "MCI", "EMCI", "LMCI"]


class Data(DatasetSection):
    name: Literal["adni-rsfmri"]
    classes: list[Cls] | None = Field(None, description="class folders topo and analyze read (default: all present)")
    networks: list[Net] = Field(list(NETWORKS), min_length=1, description="networks topo computes")


class Ph(Section):
    window: int = Field(3, ge=2, description="sliding-window length M+1 (M = 2, τ = 1): points in R^window")
    sw_drop_last: bool = Field(True, description="T−window windows as the authors' code (False: all T−window+1)")
    max_dim: int = Field(2, ge=0, le=2, description="highest homology dimension (Rips, Z/2)")
    order: float = Field(1.0, ge=1, description="Wasserstein order q (L∞ ground metric, infinite bars dropped)")
    workers: int = Field(1, ge=1, description="processes computing subjects in parallel (joblib)")


def _pair(v: list[str]) -> list[str]:
    if len(v) != 2 or v[0] == v[1]:
        raise ValueError("a comparison is two different classes, e.g. HC and MCI")
    return v


class Task(Section):
    classes: list[Cls] = Field(["HC", "MCI"], description="the comparison: [negative, positive] class")
    network: Net = "CO"
    dim: int = Field(0, ge=0, le=2, description="homology dimension of the PR matrix")
    subsample: dict[str, dict[Cls, int]] = Field(
        default_factory=dict, description="per comparison ('HC-MCI'), a cap per class: HC vs MCI used 50 of the HC")
    subsample_seed: Seed = 0

    @field_validator("classes")
    @classmethod
    def _classes(cls, v):
        return _pair(v)


class Model(Section):
    arch: Literal["prnet", "densenet121"] = Field(
        "prnet", description="prnet: the paper's two-branch network; densenet121: Table 2's baseline (`baseline`)")
    head: Literal["paper", "code"] = Field("paper", description="paper: FC128-64-32 + ReLU/dropout; code: FC128 → 2")
    dropout: float = Field(0.2, ge=0, lt=1)
    image_size: int = Field(224, ge=32, description="densenet121 input: the z-scored matrix as a size×size image "
                                                   "(nearest-neighbour, like the code's 224×224 PNG renderings)")


class Train(TrainSection):
    epochs: Epochs = 100
    batch_size: BatchSize = 64
    lr: LearningRate = 0.001
    test_fraction: float = Field(0.2, gt=0, lt=1)
    split_seed: Seed = Field(6, description="torch.random_split generator seed (the code's torch.manual_seed(6))")
    folds: int = Field(5, ge=2, description="k of the stratified k-fold protocol (`medrun cv`)")
    folds_seed: Seed = Field(0, description="seed of the stratified k-fold split")
    folds_file: str | None = Field(None, description="CSV with columns subject,fold fixing the folds (e.g. a published "
                                                     "split) instead of the stratified k-fold")
    fold: int | None = Field(None, ge=0, description="hold out this fold (0-based) as the test split instead of the "
                                                     "random 80/20 split; set by `medrun cv`")

    @model_validator(mode="after")
    def _fold_in_range(self):
        if self.fold is not None and self.folds_file is None and self.fold >= self.folds:
            raise ValueError(f"train.fold {self.fold} is not one of the {self.folds} folds (0 … {self.folds - 1})")
        return self


class Eval(EvalSection):
    split: Literal["test", "train"] = "test"


class Predict(Section):
    input: str | None = Field(None, description="<subject>.csv files of task.network (default: the test split)")


class Repeat(Section):
    seeds: list[Seed] = Field([0, 1, 2], min_length=1, description="each the split and model seed of one train run")


class Grid(Section):
    comparisons: list[list[Cls]] = Field([["HC", "MCI"], ["HC", "EMCI"], ["HC", "LMCI"], ["EMCI", "LMCI"]])
    networks: list[Net] = Field(list(NETWORKS))
    dims: list[int] = Field([0, 1, 2])

    @field_validator("comparisons")
    @classmethod
    def _pairs(cls, v):
        return [_pair(c) for c in v]


class Baseline(Section):
    models: list[Literal["rf", "densenet121", "proposed"]] = Field(
        ["rf", "densenet121", "proposed"], min_length=1,
        description="rf: a random forest fitted in the stage; densenet121 and proposed: train runs of their own")
    rf_trees: int = Field(500, ge=1, description="random forest on the flattened upper triangle of the PR matrix")
    epochs: Epochs | None = Field(None, description="DenseNet-121 epochs (default: train.epochs)")


class Analyze(Section):
    alpha: float = Field(0.01, gt=0, lt=1, description="Wilcoxon rank-sum significance, no correction (paper)")
    comparisons: list[list[Cls]] = Field([["HC", "EMCI"], ["HC", "LMCI"]])
    ps_rois: list[int] = Field([1], description="1-based ROIs of task.network whose PS matrix (subject × subject) is "
                                                 "computed; [] for none (costly: N² distances per ROI)")

    @field_validator("comparisons")
    @classmethod
    def _pairs(cls, v):
        return [_pair(c) for c in v]


class PhMciManifest(Manifest):
    pipeline: Literal["ph-mci"] = "ph-mci"
    dataset: Data
    ph: Ph = Field(default_factory=Ph)
    task: Task = Field(default_factory=Task)
    model: Model = Field(default_factory=Model)
    train: Train = Field(default_factory=Train)
    eval: Eval = Field(default_factory=Eval)
    predict: Predict = Field(default_factory=Predict)
    repeat: Repeat = Field(default_factory=Repeat)
    grid: Grid = Field(default_factory=Grid)
    analyze: Analyze = Field(default_factory=Analyze)
    baseline: Baseline = Field(default_factory=Baseline)

    @model_validator(mode="after")
    def _dims(self):
        for d in [self.task.dim, *self.grid.dims]:
            if d > self.ph.max_dim:
                raise ValueError(f"homology dimension {d} is above ph.max_dim {self.ph.max_dim}")
        return self


def data_paths(m: PhMciManifest) -> dict[str, Path]:
    from medrun.datasets import adni_rsfmri

    root = Path(m.dataset.root)
    if root.exists():
        adni_rsfmri.check_layout(root, m.dataset.classes)
    return {"data": root}
