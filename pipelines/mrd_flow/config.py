"""mrd-flow's typed manifest (pydantic only) and the data folder it reads."""

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

MARKERS = ["TIME", "FSC-A", "FSC-W", "SSC-A", "CD20", "CD10", "CD45", "CD34", "CD19", "CD38", "SY41"]
ARCH = Literal["mlp", "mlp-mean", "mlp-max", "mlp-pma", "pointnet", "pointnet-adapted", "st", "st-noatt", "reluformer",
               "st-fps", "gcn", "gat", "gin", "gat-asap", "gin-asap", "gat-st-fps", "gin-st-fps"]
# the rows of Tables 2–5 → the overrides that make each model (GAT rows get dropout and weight decay 0.2 by default)
ZOO: dict[str, dict] = {
    "MLP": {"model.arch": "mlp"}, "MLP-mean": {"model.arch": "mlp-mean"}, "MLP-max": {"model.arch": "mlp-max"},
    "MLP-pma": {"model.arch": "mlp-pma"}, "PointNet": {"model.arch": "pointnet"},
    "PointNet-adapted": {"model.arch": "pointnet-adapted"}, "ST-No-Att": {"model.arch": "st-noatt"},
    "ST": {"model.arch": "st"}, "ST-150I": {"model.arch": "st", "model.inducing": 150},
    "reluFormer": {"model.arch": "reluformer"}, "ST-FPS": {"model.arch": "st-fps"}, "GCN": {"model.arch": "gcn"},
    "GAT": {"model.arch": "gat"}, "GIN": {"model.arch": "gin"}, "GIN-3": {"model.arch": "gin", "model.knn_k": 3},
    "GAT-3": {"model.arch": "gat", "model.knn_k": 3}, "GAT-ASAP": {"model.arch": "gat-asap"},
    "GIN-ASAP": {"model.arch": "gin-asap"}, "GAT-ST-FPS": {"model.arch": "gat-st-fps"},
    "GIN-ST-FPS": {"model.arch": "gin-st-fps"},
}


class Data(DatasetSection):
    name: Literal["vie", "bln", "bue"]
    markers: list[str] = Field(default_factory=lambda: list(MARKERS), min_length=1,
                               description="the feature vector, in order (absent markers are filled with 0)")
    filter_gates: list[str] = Field(default_factory=lambda: ["Intact"], description="keep events in any of these")
    blast_gates: list[str] = Field(default_factory=lambda: ["blast34", "blastother", "blast"],
                                   description="an event in any of these gates is a blast (label 1)")
    channels: dict[str, str | None] = Field(default_factory=dict,
                                            description="FCS channel (stain or detector name) → marker; "
                                                        "null ignores it")
    scale: Literal["none", "minmax", "arcsinh"] = Field("none", description="pickles are pre-scaled; FCS: arcsinh")
    arcsinh_cofactor: PositiveFloat = 150.0
    clean_spillover: float | None = Field(None, ge=0, lt=0.5,
                                          description="drop events within this fraction of spillover_range's ends "
                                                      "(the official config's 0.001; not in the paper)")
    spillover_range: tuple[float, float] = (0.0, 4.5)
    splits: str = Field("data_splits", description="folder of train.txt / eval.txt / test.txt (relative to root)")
    test_only: bool = Field(False, description="without split lists every sample is test (Bln, Bue)")
    train_fraction: float = Field(0.5, gt=0, lt=1)
    val_fraction: float = Field(0.25, gt=0, lt=1)
    split_seed: Seed = 0

    @model_validator(mode="after")
    def _fractions(self):
        if self.train_fraction + self.val_fraction >= 1:
            raise ValueError("train_fraction + val_fraction must leave samples for the test split")
        return self


class Model(Section):
    arch: ARCH = "gin-st-fps"
    hidden: Count = 32
    heads: Count = 4
    layers: Count = Field(4, description="network layers before the linear head")
    inducing: Count = Field(16, description="learned inducing points of `st` (150: the ST-150I row)")
    fps_ratio: float = Field(0.0005, gt=0, le=1, description="FPS inducing points = ⌈ratio·events⌉ …")
    fps_min: Count = Field(16, description="… but at least this many")
    knn_k: Count = Field(10, description="neighbours of the kNN graph (on all markers)")
    dropout: Fraction | None = Field(None, description="GAT attention dropout (default: 0.2 for GAT models, else 0)")
    asap_nodes: tuple[Count, Count] = (100, 50)
    drop_features: list[str] = Field(default_factory=list,
                                     description="markers removed from the node features but kept for the kNN graph "
                                                 "(Table 7: [CD10, CD19, CD45])")


class Train(TrainSection):
    epochs: Epochs = 150
    batch_size: BatchSize = 4
    lr: LearningRate = 1e-3
    events_per_sample: Count = Field(50000, description="events drawn per sample per step (with replacement if fewer)")
    repeats: Count = Field(1, description="times each training sample is drawn per epoch")
    jitter: NonNegFloat = Field(0.01, description="σ of the Gaussian noise added to every event")
    label_smoothing: Fraction = 0.1
    weight_decay: NonNegFloat | None = Field(None, description="AdamW (default: 0.2 for GAT models, else 0.01)")
    amsgrad: bool = True
    t_max: Count = Field(10, description="CosineAnnealingLR period (epochs)")
    eta_min: NonNegFloat = Field(2e-4, description="the paper's 2e-4 (the official code: 1e-4)")
    grad_clip: NonNegFloat = Field(2.5, description="gradient norm clipping of the official trainer (0: off)")
    val_every: Count = Field(5, description="validate (full samples, mean F1) every n epochs and at the last")


class Eval(EvalSection):
    split: str = "test"
    metrics: list[str] = Field(default_factory=lambda: ["f1", "f1_median", "precision", "recall", "f1_all_positive"])
    scatter: NonNegInt = Field(3, description="scatter-plot figures of the first n samples")


class Predict(Section):
    input: str | None = Field(None, description="samples to score: a file, folder or glob (default: the eval split)")
    probabilities: bool = Field(True, description="write predictions/<sample>_blast_prob.npy (one float per event)")


class Benchmark(Section):
    models: list[str] = Field(default_factory=lambda: list(ZOO), min_length=1, description="rows of Tables 2–5")
    seeds: list[Seed] = Field(default_factory=lambda: [0, 1, 2, 3, 4], min_length=1,
                              description="one train run per model and seed (the paper: at least 5 runs)")


class MrdFlowManifest(Manifest):
    pipeline: Literal["mrd-flow"] = "mrd-flow"
    dataset: Data
    model: Model = Field(default_factory=Model)
    train: Train = Field(default_factory=Train)
    eval: Eval = Field(default_factory=Eval)
    predict: Predict = Field(default_factory=Predict)
    benchmark: Benchmark = Field(default_factory=Benchmark)

    @model_validator(mode="after")
    def _names(self):
        unknown = [f for f in self.model.drop_features if f not in self.dataset.markers]
        if unknown:
            raise ValueError(f"model.drop_features {unknown} are not in dataset.markers {self.dataset.markers}")
        if len(self.model.drop_features) >= len(self.dataset.markers):
            raise ValueError("model.drop_features would drop every marker")
        bad = [m for m in self.benchmark.models if m not in ZOO]
        if bad:
            raise ValueError(f"benchmark.models {bad} are not rows of Tables 2–5 ({', '.join(ZOO)})")
        if self.model.hidden % self.model.heads:
            raise ValueError(f"model.hidden {self.model.hidden} is not divisible by model.heads {self.model.heads}")
        return self


def data_paths(m: MrdFlowManifest) -> dict[str, Path]:
    """The folder to fingerprint, after a cheap layout check (so a wrong folder fails before it is hashed)."""
    root = Path(m.dataset.root)
    if root.exists():
        from medrun.datasets import flow_mrd

        flow_mrd.check_layout(m.dataset.name, root)
    return {m.dataset.name: root}
