"""superpixel-label's typed manifest (pydantic only) and the data folders it reads."""

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

Method = Literal["slic", "seeds", "snic"]
Labels = Literal["original", "nofill", "dist", "rw"]


class Data(DatasetSection):
    name: Literal["isic2018", "cxr", "busi"]
    img_size: Count = Field(256, description="square resize of every image and mask (bilinear / nearest)")
    split: Literal["official", "random"] = Field(
        "random", description="isic2018: official = 80/20 of Training + the Test part; random = `fractions` of "
                              "one pool")
    fractions: tuple[float, float, float] = Field((0.7, 0.2, 0.1), description="train / val / test of a random split")
    split_seed: Seed = Field(0, description="seed of the random split (written to splits in data.lock.json)")
    limit: int | None = Field(None, ge=1, description="keep the first N cases (sorted by id)")

    @model_validator(mode="after")
    def _fractions(self):
        if any(f <= 0 for f in self.fractions) or abs(sum(self.fractions) - 1) > 1e-6:
            raise ValueError(f"dataset.fractions {list(self.fractions)} must be three positive numbers summing to 1")
        return self


class Superpixel(Section):
    """Stage 1–3 of the method: superpixels, the simulated annotator and the gap filling (card, 'Method')."""

    method: Method = Field("slic", description="superpixels a train run's labels come from")
    n_segments: Count = Field(800, description="SLIC/SEEDS/SNIC superpixels per image (card: 800 at 256²)")
    compactness: PositiveFloat = Field(10.0, description="SLIC and SNIC compactness")
    seeds_levels: Count = 4
    seeds_prior: NonNegInt = 2
    seeds_bins: Count = 5
    seeds_iterations: Count = Field(4, description="not in the paper: OpenCV's default")
    snic_impl: Literal["auto", "pysnic", "watershed"] = Field(
        "auto", description="pysnic when installed (auto), else skimage's compact watershed from grid seeds")
    watershed_compactness: PositiveFloat = 0.001
    purity_tol: Fraction = Field(0.0, description="a superpixel is labelled when f_s ≤ tol or f_s ≥ 1 − tol")
    grey_as_rgb: bool = Field(False, description="SLIC on grey images: false = grey values in [0, 1] with "
                                                 "channel_axis=None (card); true = three equal channels in Lab")
    rw_beta: PositiveFloat = 130.0


class Model(Section):
    net: Literal["unet", "duat"] = Field("unet", description="U-Net (classic 4-down/4-up) or DuAT (PVTv2-B2 encoder)")
    base: Count = Field(64, description="U-Net first-level channels (64 → 1024 at the bottleneck)")
    dropout: Fraction = Field(0.1, description="U-Net dropout at the bottleneck")
    duat_dim: Count = Field(32, description="DuAT decoder width (the official code's dim)")
    encoder_checkpoint: str | None = Field(
        None, description="DuAT: ImageNet pvt_v2_b2 weights (.pth state dict or .safetensors); none = random init")


class Train(TrainSection):
    labels: Labels = Field("dist", description="training (and validation) labels: original GT or a fill")
    epochs: Epochs = 50
    batch_size: BatchSize = 8
    lr: LearningRate = 1e-4
    weight_decay: NonNegFloat = 0.01
    patience: Count = Field(10, description="early stopping on the validation loss")


class Eval(EvalSection):
    split: str = "test"
    metrics: list[str] = Field(default_factory=lambda: ["dice", "iou", "precision", "sensitivity"])
    threshold: float = Field(0.5, gt=0, lt=1)
    overlays: NonNegInt = Field(4, description="overlay figures of the first N evaluated cases")


class Annotate(Section):
    methods: list[Method] = Field(default_factory=lambda: ["slic", "seeds", "snic"], min_length=1)
    fills: list[Literal["nofill", "dist", "rw"]] = Field(default_factory=lambda: ["nofill", "dist", "rw"],
                                                         min_length=1)
    split: Literal["train", "trainval", "all"] = Field("trainval", description="which images are annotated")
    figures: NonNegInt = Field(4, description="superpixel / fill figures of the first N images")
    write_png: bool = Field(True, description="write the pseudo-GT PNGs (255 = ignore) into the run")


class GapStats(Section):
    methods: list[Method] = Field(default_factory=lambda: ["slic", "seeds", "snic"], min_length=1)
    samples: NonNegInt = Field(5, description="Table 3: per-image M/N of the first N training images")


class Table1(Section):
    """Table 1 as a sweep: the original-GT model plus one train run per (superpixel method × fill)."""

    methods: list[Method] = Field(default_factory=lambda: ["slic", "seeds", "snic"], min_length=1)
    fills: list[Literal["nofill", "dist", "rw"]] = Field(default_factory=lambda: ["nofill", "dist", "rw"],
                                                         min_length=1)
    gap_stats: bool = Field(True, description="also run gap-stats as a child (Table 2 beside Table 1)")


class SuperpixelLabelManifest(Manifest):
    pipeline: Literal["superpixel-label"] = "superpixel-label"
    dataset: Data
    superpixel: Superpixel = Field(default_factory=Superpixel)
    model: Model = Field(default_factory=Model)
    train: Train = Field(default_factory=Train)
    eval: Eval = Field(default_factory=Eval)
    annotate: Annotate = Field(default_factory=Annotate)
    gap_stats: GapStats = Field(default_factory=GapStats)
    table1: Table1 = Field(default_factory=Table1)

    @model_validator(mode="after")
    def _official_is_isic(self):
        if self.dataset.split == "official" and self.dataset.name != "isic2018":
            raise ValueError("dataset.split 'official' exists only for isic2018 (cxr and busi: random)")
        if self.model.net == "duat" and self.dataset.img_size % 32:
            raise ValueError(f"dataset.img_size {self.dataset.img_size} must be a multiple of 32 for DuAT")
        if self.model.net == "unet" and self.dataset.img_size % 16:
            raise ValueError(f"dataset.img_size {self.dataset.img_size} must be a multiple of 16 for the U-Net")
        return self


def data_paths(m: SuperpixelLabelManifest) -> dict[str, Path]:
    """The folder to fingerprint, after a cheap layout check (a wrong folder fails before it is hashed)."""
    root = Path(m.dataset.root)
    if root.exists():
        if m.dataset.name == "isic2018":
            from medrun.datasets import isic2018
            from medrun.errors import DataError

            kind = isic2018.layout(root, "Training")
            if m.dataset.split == "official":
                test = isic2018.official_dirs(root, "Test")
                if kind != "official" or not all(p.is_dir() for p in test):
                    raise DataError(f"{root} has no official ISIC 2018 test set ({test[0].name}/ and {test[1].name}/)",
                                    fix="unpack the Task 1 test archives beside the training folders, or use "
                                        "-o dataset.split=random")
                isic2018.layout(root, "Test")
        elif m.dataset.name == "cxr":
            from medrun.datasets import cxr_lung

            cxr_lung.check_layout(root)
        else:
            from medrun.datasets import busi

            busi.check_layout(root)
    return {m.dataset.name: root}
