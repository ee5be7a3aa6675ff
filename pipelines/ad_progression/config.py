"""ad-progression's typed manifest (pydantic only) and the data folders it reads."""

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
    LearningRate,
    Manifest,
    Section,
    Seed,
    TrainSection,
)

VISITS = ("bl", "m12", "m24", "m36", "m48", "m60")


class Data(DatasetSection):
    name: Literal["adnimerge"]
    adnimerge: str = Field("ADNIMERGE.csv", description="the ADNIMERGE table (absolute, or relative to root)")
    images: str = Field("images", description="folder of {PTID}_{VISCODE}_{MRI|PET}.nii.gz (absolute, or under root)")
    ignore_viscodes: bool = Field(False, description="drop rows with VISCODEs other than bl/m<months>, not fail")
    visits: list[str] = Field(default_factory=lambda: list(VISITS), description="kept VISCODEs, in order (T = len)")
    volume: tuple[Count, Count, Count] = Field((128, 160, 128), description="volume size the model sees (after crop)")
    crop: tuple[Count, Count, Count] | None = Field((128, 160, 128), description="centre crop of the MNI152 volumes")

    @field_validator("visits")
    @classmethod
    def _visits(cls, v: list[str]) -> list[str]:
        if len(v) < 2 or v[0] != "bl":
            raise ValueError("needs at least two visits, starting with 'bl'")
        return v


ARCHS = ("adxpro", "grud", "minimalrnn")
Modality = Literal["MRI", "PET"]
# the rows of `medrun baselines`: name → the model overrides of its train runs (one per fold)
VARIANTS = {"adxpro": {}, "biomarker-only": {"model.use_images": False}, "mri-only": {"model.modalities": ["MRI"]},
            "pet-only": {"model.modalities": ["PET"]}, "grud": {"model.arch": "grud"},
            "minimalrnn": {"model.arch": "minimalrnn"}}
Variant = Literal["adxpro", "biomarker-only", "mri-only", "pet-only", "grud", "minimalrnn"]


class Model(Section):
    arch: Literal["adxpro", "grud", "minimalrnn"] = Field(
        "adxpro", description="adxpro (the paper's model) or a Table 1 baseline on the tabular inputs only: grud "
                              "(GRU-D, Che et al. 2018) or minimalrnn (MinimalRNN, Nguyen et al. 2020)")
    modalities: list[Modality] = Field(
        default_factory=lambda: ["MRI", "PET"], min_length=1,
        description="the image modalities ADxPro reads (Fig. 5: [MRI] or [PET]); the others count as missing")

    @field_validator("modalities")
    @classmethod
    def _canonical(cls, v: list[str]) -> list[str]:
        """One spelling per set ([PET, MRI] is [MRI, PET]), so the same computation gets the same run id."""
        return [m for m in ("MRI", "PET") if m in v]
    latent: int = Field(64, ge=2)
    hidden: int = Field(128, ge=2)
    use_images: bool = Field(True, description="False: the biomarker-only RNN (the same model without the AMVAE)")
    dx_input: Literal["none", "baseline"] = Field(
        "none", description="none: DX is never an input (Table 1); baseline: the baseline DX is fed (Table 3)")


class Train(TrainSection):
    epochs: Epochs = 100
    batch_size: BatchSize = 16
    lr: LearningRate = 0.0002
    beta: float = Field(1.0, ge=0, description="KL weight of the ELBO")
    beta_warmup_epochs: int = Field(10, ge=0, description="β rises linearly from 0 over these epochs")
    cosine: bool = Field(True, description="cosine annealing of the lr over the epochs")
    folds: int = Field(5, ge=2, description="subject-level folds; train/eval use fold `fold` as the test set")
    fold: int = Field(0, ge=0, description="the held-out fold (0-based); `medrun cv` trains one run per fold")
    split_seed: Seed = 0
    folds_file: str | None = Field(None, description="CSV PTID,fold (0-based) to use instead of computed folds")

    @model_validator(mode="after")
    def _fold_in_range(self):
        if self.folds_file is None and self.fold >= self.folds:
            raise ValueError(f"train.fold {self.fold} is not one of the {self.folds} folds (0 … {self.folds - 1})")
        return self


class CV(Section):
    baseline: bool = Field(False, description="also train the biomarker-only model (model.use_images false) on every "
                                              "fold, each a train run of its own; paired t-test")


class Baselines(Section):
    models: list[Variant] = Field(
        default_factory=lambda: list(VARIANTS), min_length=1,
        description="`medrun baselines`: one train run per fold of each: adxpro, biomarker-only (model.use_images "
                    "false), mri-only / pet-only (model.modalities, Fig. 5), grud, minimalrnn (model.arch)")

    @field_validator("models")
    @classmethod
    def _unique(cls, v: list[str]) -> list[str]:
        return list(dict.fromkeys(v))


class Impute(Section):
    split: Literal["all", "test", "train"] = "all"


class AdProgressionManifest(Manifest):
    pipeline: Literal["ad-progression"] = "ad-progression"
    dataset: Data
    model: Model = Field(default_factory=Model)
    train: Train = Field(default_factory=Train)
    eval: EvalSection = Field(default_factory=EvalSection)
    cv: CV = Field(default_factory=CV)
    impute: Impute = Field(default_factory=Impute)
    baselines: Baselines = Field(default_factory=Baselines)


def data_paths(m: AdProgressionManifest) -> dict[str, Path]:
    """The data folder (ADNIMERGE.csv + images/), and the images folder if it lies elsewhere. The table's header
    is checked first, so a wrong folder or file fails before anything is hashed or written."""
    from medrun.datasets import adnimerge

    root = Path(m.dataset.root)
    if root.exists():
        adnimerge.check_layout(root, m.dataset.adnimerge)
    paths = {"adnimerge": root}
    images = Path(m.dataset.images)
    if images.is_absolute() and not images.resolve().is_relative_to(root.resolve()):
        paths["images"] = images
    return paths
