"""sepsis-synth's typed manifest (pydantic only) and the data folders it reads."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator, model_validator

from medrun.manifests.schema import (
    BatchSize,
    Count,
    DatasetSection,
    EvalSection,
    Fraction,
    LearningRate,
    Manifest,
    NonNegFloat,
    NonNegInt,
    PositiveFloat,
    Section,
    Seed,
)

Method = Literal["kdeknn", "kde", "smote", "tabddpm"]
Source = Literal["real", "kdeknn", "kde", "smote", "tabddpm"]
Classifier = Literal["rf", "svm_linear", "svm_rbf"]
METHODS = ("kdeknn", "kde", "smote", "tabddpm")
CLASSIFIERS = ("rf", "svm_linear", "svm_rbf")
DEFAULT_PATHS = {"sepsis-csv": ("internal.csv", "external.csv"), "physionet2019": ("training_setA", "training_setB")}


def _unique(v: list) -> list:
    if len(set(v)) != len(v):
        raise ValueError("lists a value twice")
    if not v:
        raise ValueError("must not be empty")
    return v


class Data(DatasetSection):
    name: Literal["sepsis-csv", "physionet2019"]
    internal: str | None = Field(None, description="the internal cohort (train/test split, generator seed): a flat "
                                                   "CSV or a folder of timelines, absolute or under root (default: "
                                                   "internal.csv / training_setA)")
    external: str | None = Field(None, description="the external validation cohort, same forms (default: "
                                                   "external.csv / training_setB)")
    feature_map: str | None = Field(None, description="YAML `source column: name` lines (absolute or under root), "
                                                      "applied after the layout's own map")
    features: list[str] | None = Field(None, description="features to use (default: the layout's: the 27 of Table 1 "
                                                          "for sepsis-csv, the 21 with a PhysioNet column)")
    cutoff_hours: PositiveFloat = Field(9, description="timelines: last value of each feature within these hours")
    drop_early: bool = Field(True, description="timelines: drop patients labelled within the cut-off")
    test_fraction: float = Field(0.15, gt=0, lt=1, description="internal test split, stratified (the paper: 85/15)")
    split_seed: Seed = 0

    @field_validator("features")
    @classmethod
    def _features(cls, v):
        return None if v is None else _unique([s.strip() for s in v])


class TabDDPM(Section):
    steps: Count = Field(5000, description="training steps (the card: about 5k)")
    timesteps: Count = Field(1000, description="diffusion steps T (training and sampling)")
    layers: list[Count] = Field(default_factory=lambda: [256, 256, 256, 256], description="MLP widths (4×256)")
    dim_t: Count = Field(128, description="width of the timestep/label embedding and input projection")
    dropout: Fraction = 0.0
    lr: LearningRate = 0.001
    weight_decay: NonNegFloat = 0.0001
    batch_size: BatchSize = 256
    epoch_steps: Count = Field(500, description="steps per logged epoch (the rows are cycled)")
    quantile: bool = Field(True, description="quantile-normal transform of the features before diffusion (TabDDPM)")
    anneal_lr: bool = Field(True, description="lr falls linearly to 0 over the steps (TabDDPM's schedule)")


class Generate(Section):
    method: Method = "kdeknn"
    n_per_class: Count = Field(540, description="rows per class of each synthetic set (the paper: 540 + 540)")
    sets: Count = Field(3, description="synthetic sets drawn from one fitted generator (the paper: 3)")
    knn_k: Count = Field(5, description="KDE-KNN: k of the validating k-NN (Euclidean)")
    bandwidth: Literal["scott", "silverman"] | PositiveFloat = Field("scott",
                                                                     description="KDE bandwidth rule or factor")
    draw_batch: Count = Field(2000, description="KDE-KNN: candidates drawn per round")
    max_draws: Count = Field(2_000_000, description="KDE-KNN: candidates per class before giving up")
    smote_k: Count = Field(5, description="SMOTE: same-class nearest neighbours")
    tabddpm: TabDDPM = Field(default_factory=TabDDPM)


class RandomForest(Section):
    n_estimators: Count = 500
    max_depth: Count | None = 20
    max_features: Count | Literal["sqrt", "log2"] | None = 5
    min_samples_leaf: Count = 5
    min_samples_split: int = Field(12, ge=2)
    bootstrap: bool = False
    n_jobs: Count = Field(1, description="trees fitted in parallel")


class SVM(Section):
    C: PositiveFloat = 1.0
    gamma: Literal["scale", "auto"] | PositiveFloat = "scale"


class Train(Section):
    source: Source = Field("kdeknn", description="training rows: the real training split or a generator's set")
    set: NonNegInt = Field(0, description="which synthetic set of the generate run (0 … generate.sets − 1)")
    real_fraction: float | None = Field(None, ge=0, le=1, description="Exp. 3: this share of `total` rows drawn from "
                                                                       "the real training split, the rest synthetic")
    total: Count | None = Field(None, description="rows of a mix (default: 2 × generate.n_per_class)")
    classifiers: list[Classifier] = Field(default_factory=lambda: list(CLASSIFIERS))
    rf: RandomForest = Field(default_factory=RandomForest)
    svm_linear: SVM = Field(default_factory=SVM)
    svm_rbf: SVM = Field(default_factory=SVM)

    @field_validator("classifiers")
    @classmethod
    def _classifiers(cls, v):
        return _unique(v)


class Eval(EvalSection):
    split: Literal["test", "external", "train"] = "test"
    metrics: list[str] = Field(default_factory=lambda: ["auc"])


class Predict(Section):
    input: str | None = Field(None, description="a flat CSV or a folder of timelines to score (default: eval.split)")


class Mix(Section):
    method: Method = "kdeknn"
    classifier: Classifier = "svm_rbf"
    ratios: list[int] = Field(default_factory=lambda: [100, 80, 60, 40, 20, 0], description="% real rows (Table 5)")
    repeats: Count = Field(3, description="sampling seeds per ratio; repeat i uses synthetic set i")
    total: Count | None = Field(None, description="rows per mix (default: 2 × generate.n_per_class)")

    @field_validator("ratios")
    @classmethod
    def _ratios(cls, v):
        if any(not 0 <= r <= 100 for r in v):
            raise ValueError("each ratio is a percentage of real rows, 0 … 100")
        return _unique(v)


class Privacy(Section):
    methods: list[Method] = Field(default_factory=lambda: ["smote", "kde", "kdeknn", "tabddpm"])
    bins: Count = Field(40, description="histogram bins of Fig. 4")

    @field_validator("methods")
    @classmethod
    def _methods(cls, v):
        return _unique(v)


class Tune(Section):
    classifiers: list[Classifier] = Field(default_factory=lambda: list(CLASSIFIERS))
    trials: Count = Field(40, description="Optuna TPE trials per classifier (the paper: 40)")
    folds: int = Field(5, ge=2, description="stratified CV folds on the training rows (the objective: mean AUC)")

    @field_validator("classifiers")
    @classmethod
    def _classifiers(cls, v):
        return _unique(v)


class Reproduce(Section):
    experiments: list[Literal[1, 2, 3, 4]] = Field(default_factory=lambda: [1, 2, 3, 4])
    methods: list[Method] = Field(default_factory=lambda: ["smote", "tabddpm", "kde", "kdeknn"])
    real_seeds: list[Seed] = Field(default_factory=lambda: [0, 1, 2], description="Exp. 1: dataset.split_seed values")

    @field_validator("experiments", "methods", "real_seeds")
    @classmethod
    def _lists(cls, v):
        return _unique(v)


class SepsisSynthManifest(Manifest):
    pipeline: Literal["sepsis-synth"] = "sepsis-synth"
    dataset: Data
    generate: Generate = Field(default_factory=Generate)
    train: Train = Field(default_factory=Train)
    eval: Eval = Field(default_factory=Eval)
    predict: Predict = Field(default_factory=Predict)
    mix: Mix = Field(default_factory=Mix)
    privacy: Privacy = Field(default_factory=Privacy)
    tune: Tune = Field(default_factory=Tune)
    reproduce: Reproduce = Field(default_factory=Reproduce)

    @model_validator(mode="after")
    def _sets(self):
        n = self.generate.sets
        if self.train.set >= n:
            raise ValueError(f"train.set {self.train.set} is not one of the {n} synthetic sets (generate.sets)")
        return self


# -- where the data lies (used by the runner and the pipeline) -------------------------------------------------
def _under(root: Path, value: str) -> Path:
    p = Path(value).expanduser()
    return p if p.is_absolute() else root / p


def cohort_paths(m: SepsisSynthManifest) -> dict[str, Path]:
    d = m.dataset
    root = Path(d.root)
    internal, external = DEFAULT_PATHS[d.name]
    return {"internal": _under(root, d.internal or internal), "external": _under(root, d.external or external)}


def features(m: SepsisSynthManifest) -> list[str]:
    from medrun.datasets import sepsis

    return list(m.dataset.features or sepsis.DEFAULT_FEATURES[m.dataset.name])


def feature_map(m: SepsisSynthManifest) -> tuple[dict[str, str], str | None]:
    """The effective column map (the layout's own, then the user's file) and the file's name for messages."""
    from medrun.datasets import sepsis

    d = m.dataset
    if not d.feature_map:
        return sepsis.effective_map(d.name), None
    path = _under(Path(d.root), d.feature_map)
    return sepsis.effective_map(d.name, sepsis.read_feature_map(path)), str(path)


def data_paths(m: SepsisSynthManifest) -> dict[str, Path]:
    """The data root (and any cohort or map file outside it), after the cheap checks: both cohorts exist, their
    headers hold every feature (and label, and hour for timelines), flat tables' labels are 0/1 with both classes."""
    from medrun.datasets import sepsis

    root = Path(m.dataset.root)
    paths = {"data": root}
    if not root.exists():
        return paths  # the runner names the missing folder and the fix
    fmap, name = feature_map(m)
    cohorts = cohort_paths(m)
    for what in ("internal", "external"):
        sepsis.check(cohorts[what], fmap, features(m), what=what, map_name=name)
    extra = {**cohorts, **({"feature_map": _under(root, m.dataset.feature_map)} if m.dataset.feature_map else {})}
    for key, p in extra.items():
        if not p.resolve().is_relative_to(root.resolve()):
            paths[key] = p if p.is_dir() else p.parent
    return paths
