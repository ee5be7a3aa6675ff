"""sc-unext's typed manifest (pydantic only) and the data folders it reads."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import Field, ValidationError, field_validator, model_validator

from medrun.datasets.imageio import Intensity
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


def _multiple_of_32(v: int) -> int:
    if v < 32 or v % 32:
        raise ValueError("must be a multiple of 32 (UNeXt halves the input five times)")
    return v


class Data(DatasetSection):
    name: Literal["isic2018", "montgomery", "pairs"]
    part: Literal["Training", "Validation", "Test"] = Field("Training", description="ISIC official layout: which part")
    img_size: int = Field(512, description="square resize (bilinear image, nearest mask); a multiple of 32")
    intensity: Intensity | None = Field(None, description="pairs: how stored values become 0–1 (window, percentile "
                                        "or scale; datasets/imageio.py); default: the stored type's range")
    val_fraction: float = Field(0.2, gt=0, lt=1, description="random hold-out for validation (UNeXt: 0.2)")
    split_seed: Seed = Field(41, description="random_state of the 80/20 split (UNeXt's train.py uses 41)")
    include: list[str] | None = Field(None, description="keep only cases whose id matches one of these globs")
    limit: int | None = Field(None, ge=1, description="keep the first N cases (sorted by id) after `include`")
    subset: int | None = Field(None, ge=2, description="draw this many cases at random (split_seed) before splitting; "
                                                       "set by `medrun ablate` (ablate.subset)")
    folds: int = Field(5, ge=2, description="k of the k-fold protocol (`medrun ablate`, Table 2)")
    fold: int | None = Field(None, ge=0, description="validate on this fold of `folds` (KFold, shuffled, split_seed) "
                                                    "instead of the 80/20 split; set by `medrun ablate`")

    @field_validator("img_size")
    @classmethod
    def _size(cls, v: int) -> int:
        return _multiple_of_32(v)

    @model_validator(mode="after")
    def _fold_in_range(self):
        if self.fold is not None and self.fold >= self.folds:
            raise ValueError(f"dataset.fold {self.fold} is not one of the {self.folds} folds (0 … {self.folds - 1})")
        return self


class Model(Section):
    arch: Literal["unext", "unet"] = Field("unext", description="unext (with the SC flags below) or the U-Net baseline")
    size: Literal["small", "paper"] = Field("small",
                                            description="UNeXt widths: small (253,561 params) or paper (1.47 M)")
    cbam: bool = Field(True, description="CBAM on every encoder skip")
    sc_skip: bool = Field(True, description="multiplicative SC skip f(u·x + u)")
    sc_f: Literal["depthwise", "full"] = Field("depthwise", description="f of the SC skip: depthwise or dense 3×3")
    pfm: bool = Field(True, description="pyramid fusion of all decoder levels")
    unet_features: tuple[int, int, int, int, int, int] = Field(
        (64, 64, 128, 256, 512, 64), description="arch=unet: MONAI BasicUNet widths (7.90 M params)")


class Loss(Section):
    """L = bce·BCEWithLogits + dice·(1 − softDice) + edge·BCE(E(σ(z)), E(y))."""

    bce: float = Field(0.5, ge=0)
    dice: float = Field(1.0, ge=0)
    edge: float = Field(1.0, ge=0, description="λ_e of the edge term; 0 turns it off (the 'UNeXt' ablation row)")
    smooth: float = Field(1e-5, gt=0, description="soft-Dice smoothing, per image")


class Train(TrainSection):
    epochs: Epochs = 400
    batch_size: BatchSize = 8
    lr: LearningRate = 1e-4
    betas: tuple[float, float] = (0.9, 0.999)
    weight_decay: float = Field(1e-4, ge=0)
    eta_min: float = Field(1e-5, ge=0, description="CosineAnnealingLR floor (T_max = epochs)")
    augment: bool = Field(True, description="RandomRotate90 and horizontal/vertical flips")


class Eval(EvalSection):
    split: str = "val"
    metrics: list[str] = Field(default_factory=lambda: ["dice", "iou"])
    threshold: float = Field(0.5, gt=0, lt=1)
    overlays: int = Field(4, ge=0, description="overlay PNGs of the first N evaluated cases")


class Ablate(Section):
    """Table 2: every variant × every fold of ``dataset.folds`` is a train run of its own (a sweep)."""

    subset: int | None = Field(120, ge=2, description="cases drawn (split_seed) before the folds; null = all")
    variants: dict[str, dict[str, Any]] = Field(
        default_factory=dict, description="name → dotted overrides of the model and loss sections")
    epochs: Epochs | None = Field(None, description="epochs per fold (default: train.epochs)")


class Complexity(Section):
    sizes: list[int] = Field(default_factory=lambda: [256, 512])
    models: list[str] = Field(default_factory=lambda: ["unext", "unext+cbam", "unext+skip", "unext+pfm", "sc-unext",
                                                       "sc-unext-full-f", "unext-paper", "unet"])


class Repeat(Section):
    split_seeds: list[Seed] = Field(default_factory=lambda: [41, 42, 43], min_length=1,
                                   description="one random 80/20 split (a train run with dataset.split_seed) per seed")


class Predict(Section):
    input: str | None = Field(None, description="images to segment: a file, folder or glob (default: the eval split)")


class ScUnextManifest(Manifest):
    pipeline: Literal["sc-unext"] = "sc-unext"
    dataset: Data
    model: Model = Field(default_factory=Model)
    loss: Loss = Field(default_factory=Loss)
    train: Train = Field(default_factory=Train)
    eval: Eval = Field(default_factory=Eval)
    ablate: Ablate = Field(default_factory=Ablate)
    complexity: Complexity = Field(default_factory=Complexity)
    repeat: Repeat = Field(default_factory=Repeat)
    predict: Predict = Field(default_factory=Predict)

    @model_validator(mode="after")
    def _variants_apply(self):
        for name, overrides in self.ablate.variants.items():
            try:
                apply_variant(self, overrides)
            except ValueError as e:
                raise ValueError(f"ablate.variants.{name}: {e}") from None
        return self


def apply_variant(m: ScUnextManifest, overrides: dict[str, Any]) -> tuple[Model, Loss]:
    """The ``model`` and ``loss`` sections with one ablation variant's dotted overrides applied (validated)."""
    sections = {"model": m.model.model_dump(), "loss": m.loss.model_dump()}
    for key, value in overrides.items():
        section, _, field = key.partition(".")
        if section not in sections or not field or "." in field:
            raise ValueError(f"'{key}' is not a key of the model or loss section (write e.g. model.pfm or loss.edge)")
        if field not in sections[section]:
            known = ", ".join(sections[section])
            raise ValueError(f"'{key}': {section} has no '{field}' (it has {known})")
        sections[section][field] = value
    try:
        return Model(**sections["model"]), Loss(**sections["loss"])
    except ValidationError as e:
        err = e.errors()[0]
        raise ValueError(f"{'.'.join(map(str, err['loc']))}: {err['msg']}") from None


def data_paths(m: ScUnextManifest) -> dict[str, Path]:
    """The folder to fingerprint, after a cheap layout check (so a wrong folder fails before it is hashed)."""
    root = Path(m.dataset.root)
    if root.exists():
        if m.dataset.name == "isic2018":
            from medrun.datasets import isic2018

            isic2018.layout(root, m.dataset.part)
        elif m.dataset.name == "pairs":
            from medrun.datasets import pairs

            pairs.check_layout(root)
        else:
            from medrun.datasets import montgomery

            montgomery.check_layout(root)
    return {m.dataset.name: root}
