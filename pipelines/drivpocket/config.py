"""drivpocket's typed manifest (pydantic only) and the data folder it reads."""

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


class Data(DatasetSection):
    name: Literal["scpdb", "coach420", "holo4k", "sc6k", "pdbbind"]
    split_lists: list[str] | None = Field(
        None, min_length=2, max_length=2,
        description="DeepPocket's fold lists [train .types, test .types] (relative to root); without them a "
                    "protein-level random split")
    test_fraction: float = Field(0.1, gt=0, lt=1, description="scPDB without split lists: held-out proteins")
    split_seed: Seed = 0
    label_radius: PositiveFloat = Field(1.0, description="Å: voxels this close to a cavity6 point (scPDB) or a "
                                                         "ligand atom (test sets) are pocket")


class Grid(Section):
    size: Count = Field(65, description="voxels per side (size − 1 divisible by 16)")
    spacing: PositiveFloat = Field(0.5, description="Å between voxel centres (65 × 0.5: a 32 Å cube)")
    points: Count = Field(1024, description="atoms of the point stream (FPS; repeated when the box holds fewer)")
    atom_label_distance: PositiveFloat = Field(3.0, description="Å: an atom this close to a ligand atom is binding")


class Model(Section):
    channels: list[Count] = Field(default_factory=lambda: [64, 128, 256, 512], min_length=4, max_length=4)
    heads: Count = 4
    spatial_attn: Literal["probsparse", "epa"] = "probsparse"
    c: PositiveFloat = Field(5.0, description="ProbSparse sampling factor (Informer's default)")
    ri_gate: Literal["multiply", "residual"] = Field("multiply", description="Q ⊙ F_RI (paper) or Q ⊙ (1 + F_RI)")
    attention: Literal["dria", "none"] = Field("dria", description="none: the plain 3D U-Net ablation")
    sfm: bool = Field(True, description="fuse atom predictions into the voxel map at inference (SFM)")
    npoints: list[Count] = Field(default_factory=lambda: [128, 64, 32, 16], min_length=4, max_length=4)
    radii: list[PositiveFloat] = Field(default_factory=lambda: [0.2, 0.4, 0.6, 0.9], min_length=4, max_length=4)
    k: list[Count] = Field(default_factory=lambda: [4, 8, 16, 32], min_length=4, max_length=4)
    point_widths: list[Count] | None = Field(None, min_length=4, max_length=4,
                                             description="RID widths (default: channels)")
    epa_proj: Count = 64
    dropout: Fraction = 0.4


class Train(TrainSection):
    epochs: Epochs = 100
    batch_size: BatchSize = 8
    lr: LearningRate = 1e-3
    optimizer: Literal["sgd", "adam"] = "sgd"
    momentum: Fraction = 0.9
    weight_decay: NonNegFloat = 0.0
    step_size: Count = Field(30, description="StepLR period (epochs)")
    gamma: PositiveFloat = 0.1
    augment: bool = Field(True, description="random rotation + up to max_shift Å translation, gridded on the fly")
    max_shift: NonNegFloat = 2.0
    voxel_pos_weight: PositiveFloat = Field(1.0, description="BCE pos_weight of pocket voxels (paper: 1)")
    dice_weight: NonNegFloat = Field(0.0, description="add a soft Dice term on the voxels (paper: 0)")
    repeats: Count = Field(1, description="times each training site is drawn per epoch")


class Eval(EvalSection):
    split: str = "test"
    metrics: list[str] = Field(default_factory=lambda: ["dcc", "dvo", "dca_top_n", "dca_top_n2", "atom_auroc",
                                                         "dcc_grid_centre"])
    candidates: str | None = Field(None, description="CSV protein,x,y,z,score (fpocket + DeepPocket ranking); "
                                                     "relative to the data root; none: the lattice fallback")
    lattice: PositiveFloat = Field(8.0, description="Å between lattice candidates (fallback)")
    threshold: Fraction = 0.5
    threshold_distance: PositiveFloat = Field(4.0, description="Å: DCC / DCA success")
    figures: NonNegInt = Field(3, description="rendered pockets of the first n proteins")


class Predict(Section):
    input: str | None = Field(None, description="protein .pdb / .mol2 files: a file, folder or glob "
                                                "(default: the eval split)")
    candidates: str | None = Field(None, description="CSV of candidate centres for these proteins")


class Preprocess(Section):
    grids: bool = Field(True, description="also cache each site's grid and labels at its true centre (float16)")


class DrivPocketManifest(Manifest):
    pipeline: Literal["drivpocket"] = "drivpocket"
    dataset: Data
    grid: Grid = Field(default_factory=Grid)
    model: Model = Field(default_factory=Model)
    train: Train = Field(default_factory=Train)
    eval: Eval = Field(default_factory=Eval)
    predict: Predict = Field(default_factory=Predict)
    preprocess: Preprocess = Field(default_factory=Preprocess)

    @model_validator(mode="after")
    def _shapes(self):
        if (self.grid.size - 1) % 16 or self.grid.size < 17:
            raise ValueError(f"grid.size {self.grid.size}: size − 1 must be a multiple of 16 (17, 33, 65 …)")
        bad = [c for c in self.model.channels if c % self.model.heads]
        if bad and self.model.attention == "dria":
            raise ValueError(f"model.channels {bad} are not divisible by model.heads {self.model.heads}")
        if any(b > a for a, b in zip(self.model.npoints[:-1], self.model.npoints[1:], strict=True)):
            raise ValueError(f"model.npoints {self.model.npoints} must not grow from level to level")
        if self.model.npoints[0] > self.grid.points:
            raise ValueError(f"model.npoints[0] {self.model.npoints[0]} exceeds grid.points {self.grid.points}")
        return self


def data_paths(m: DrivPocketManifest) -> dict[str, Path]:
    """The folder to fingerprint, after a cheap layout check (so a wrong folder fails before it is hashed)."""
    root = Path(m.dataset.root)
    if root.exists():
        from medrun.datasets import binding_sites

        binding_sites.list_entries(m.dataset.name, root)
    return {m.dataset.name: root}
