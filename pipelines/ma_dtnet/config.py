"""ma-dtnet's typed manifest (pydantic only) and the data folders it reads."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any, Literal

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

SEG_METRICS = ["dice", "iou", "recall", "specificity", "precision", "hd95"]
CLS_METRICS = ["accuracy", "f1", "auroc"]


class Data(DatasetSection):
    name: Literal["busi", "udiat", "glas"]
    img_size: int = Field(256, description="square resize of image (bilinear) and mask (nearest); a multiple of 32")
    classes: list[Literal["benign", "malignant"]] = Field(
        default_factory=lambda: ["benign", "malignant"],
        description="class folders / types kept (BUSI 'normal' is never used)")
    exclude: list[str] = Field(default_factory=list, description="case ids left out, e.g. 'benign (12)' or '000012'")
    folds: int = Field(5, ge=2, description="stratified k-fold (the paper's 5-fold CV; `medrun cv` runs every fold); "
                                           "GlaS uses its official split instead")
    fold: int = Field(1, ge=1, description="the held-out fold of a train / eval / predict run (1-based)")
    val_fraction: float = Field(0.1, ge=0, lt=1, description="of each fold's training part, for checkpoint selection")
    split_seed: Seed = Field(42, description="seed of the folds and of the validation split")

    @field_validator("img_size")
    @classmethod
    def _multiple_of_32(cls, v: int) -> int:
        if v < 32 or v % 32:
            raise ValueError("must be a multiple of 32 (the encoder downsamples five times)")
        return v


class Model(Section):
    encoder: Literal["resnet34", "unet"] = Field("resnet34",
                                                 description="resnet34: MA-DTNet; unet: the ablations' small U-Net")
    skip_attention: Literal["none", "ca", "sma", "csma", "cbam", "mhsa"] = "csma"
    cls_head: Literal["none", "plain", "ca"] = Field("ca", description="none: segmentation only; plain: no CA (ES-MTL)")
    seg_head: bool = Field(True, description="False: classification only (Table 4 'UNet Encoder')")
    decoder_widths: tuple[Count, Count, Count, Count, Count] = (128, 64, 32, 16, 8)
    unet_features: tuple[Count, Count, Count, Count, Count, Count] = (16, 32, 64, 128, 256, 16)
    rates: tuple[Count, ...] = (1, 2, 3)
    se_size: int = Field(3, ge=1, description="structuring element size (Table 5: 3 or 5)")
    dropout: float = Field(0.5, ge=0, lt=1)
    encoder_weights: str | None = Field(None, description="a torchvision resnet34 state dict (ImageNet); default "
                                                          "random init")
    variant: str | None = Field(None, description="apply ablate.variants[<name>] to model and train (set by `medrun "
                                                  "ablate` for its train runs)")

    @field_validator("se_size")
    @classmethod
    def _odd(cls, v: int) -> int:
        if v % 2 == 0:
            raise ValueError("must be odd")
        return v

    @model_validator(mode="after")
    def _consistent(self):
        if not self.seg_head and self.cls_head == "none":
            raise ValueError("seg_head false and cls_head none leave the network without an output")
        if self.skip_attention == "mhsa" and self.encoder != "unet":
            raise ValueError("skip_attention mhsa is defined for encoder unet only (Table 3)")
        return self


class Train(TrainSection):
    epochs: Epochs = 1000
    batch_size: BatchSize = 8
    lr: LearningRate = 1e-4
    lam: float = Field(0.8, ge=0, le=1, description="Eq. 10: λ·(BCE + Dice)_seg + (1 − λ)·BCE_cls")
    augment: bool = Field(True, description="random h/v flips and rotation within ±rotate_degrees")
    rotate_degrees: float = Field(15.0, ge=0, le=180)
    select: Literal["best_val", "last"] = Field(
        "best_val", description="best_val: keep the epoch with the best val Dice + accuracy; last: the last epoch")


class Eval(EvalSection):
    split: str = "test"
    metrics: list[str] = Field(default_factory=lambda: SEG_METRICS + CLS_METRICS)
    threshold: float = Field(0.5, gt=0, lt=1)
    overlays: int = Field(8, ge=0,
                          description="overlay PNGs written (held-out cases, benign and malignant alternating)")


class Predict(Section):
    input: str | None = Field(None, description="images to segment and classify: a file, folder or glob (default: the "
                                                "held-out fold)")


class Ablate(Section):
    """Variants of one manifest: name → dotted overrides of ``model.*`` / ``train.*``. Each variant × fold is a
    train run of its own (``model.variant``, ``dataset.fold``), summarised into one table."""

    table: str = Field("Tables 3–4", description="the paper's table these variants reproduce")
    variants: dict[str, dict[str, Any]] = Field(default_factory=dict)
    run: list[str] | None = Field(None, description="the subset of variants to run (default: all, in order)")
    folds: list[int] | None = Field(None, description="held-out folds per variant, 1-based (default: all "
                                                       "dataset.folds)")
    compare: tuple[str, str] | None = Field(None, description="Wilcoxon signed-rank on per-image Dice: (variant, "
                                                              "baseline)")

    @field_validator("variants")
    @classmethod
    def _keys(cls, v: dict) -> dict:
        for name, overrides in v.items():
            for key in overrides:
                if not key.startswith(("model.", "train.")):
                    raise ValueError(f"variant '{name}': override '{key}' must be a model.* or train.* key")
        return v


class MaDtnetManifest(Manifest):
    pipeline: Literal["ma-dtnet"] = "ma-dtnet"
    dataset: Data
    model: Model = Field(default_factory=Model)
    train: Train = Field(default_factory=Train)
    eval: Eval = Field(default_factory=Eval)
    predict: Predict = Field(default_factory=Predict)
    ablate: Ablate = Field(default_factory=Ablate)

    @model_validator(mode="after")
    def _check(self):
        d, a = self.dataset, self.ablate
        if d.fold > d.folds:
            raise ValueError(f"dataset.fold {d.fold} is beyond dataset.folds {d.folds}")
        for f in a.folds or ():
            if not 1 <= f <= d.folds:
                raise ValueError(f"ablate.folds: fold {f} is not in 1..{d.folds}")
        for what, names in (("ablate.run", a.run or ()), ("ablate.compare", a.compare or ()),
                            ("model.variant", [self.model.variant] if self.model.variant else ())):
            for name in names:
                if name not in a.variants:
                    raise ValueError(f"{what} names '{name}', which is not in ablate.variants "
                                     f"({', '.join(a.variants)})")
        if self.model.variant:  # a train run of one variant: its model and train sections, as the variant makes them
            v = variant(self, self.model.variant)
            self.model, self.train = v.model.model_copy(update={"variant": self.model.variant}), v.train
        else:
            for name in a.variants:
                variant(self, name)  # every variant must validate
        return self


def variant(m: MaDtnetManifest, name: str) -> MaDtnetManifest:
    """The manifest with variant ``name``'s dotted overrides applied (validated; ValueError naming it if not)."""
    from pydantic import ValidationError

    data = m.model_dump()
    data["ablate"], data["model"]["variant"] = {}, None
    for key, value in m.ablate.variants[name].items():
        node = data
        *parents, leaf = key.split(".")
        for p in parents:
            if not isinstance(node.get(p), dict):
                raise ValueError(f"variant '{name}': unknown key '{key}'")
            node = node[p]
        if leaf not in node:
            raise ValueError(f"variant '{name}': unknown key '{key}'")
        node[leaf] = copy.deepcopy(value)
    try:
        return MaDtnetManifest.model_validate(data)
    except ValidationError as e:
        err = e.errors()[0]
        raise ValueError(f"variant '{name}': {'.'.join(map(str, err['loc']))}: {err['msg']}") from None


def data_paths(m: MaDtnetManifest) -> dict[str, Path]:
    """The folder to fingerprint, after a cheap layout check (so a wrong folder fails before it is hashed)."""
    from medrun.datasets import busi, glas, udiat

    root = Path(m.dataset.root)
    if root.exists():
        {"busi": busi, "udiat": udiat, "glas": glas}[m.dataset.name].check_layout(root)
    return {m.dataset.name: root}
