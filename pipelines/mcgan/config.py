"""mcgan's typed manifest (pydantic only) and the two data folders it reads (recipient and donor)."""

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
)

Name = Literal["ixi", "hcp", "simons"]
Contrast = Literal["t2", "pd", "dwi", "flair", "t2star"]
HAS = {"ixi": ("t1", "t2", "pd"), "hcp": ("t1", "t2", "dwi"), "simons": ("t1", "flair", "t2star")}
FOLDERS = {"ixi": "IXI", "hcp": "HCP", "simons": "Simons"}


class Data(DatasetSection):
    """``name`` is the recipient (the dataset that lacks ``contrast``); the donor has it."""

    name: Name
    donor: Name = Field("ixi", description="the dataset that has `contrast` (PD, T2: ixi; DWI: hcp; FLAIR, T2*: "
                                           "simons)")
    donor_root: str | None = Field(None, description="the donor's folder; none: the sibling folder IXI/, HCP/ or "
                                                     "Simons/ beside dataset.root (the fixture's layout)")
    contrast: Contrast = "pd"
    seg_dir: str | None = Field(None, description="FSL FAST *_seg.nii.gz for both datasets (<subject>_seg or <T1 "
                                                  "stem>_seg); none: beside each T1")
    tissue: Literal["auto", "seg", "otsu"] = Field("auto", description="auto: the segmentation when a subject has "
                                                                       "one, else 3-class multi-Otsu of the T1")
    size: Count = Field(256, description="slices padded/cropped to size² (the card: 256)")
    min_brain_fraction: Fraction = Field(0.25, description="axial slices kept: brain area ≥ this × the largest")
    test_fraction: Fraction = Field(0.2, description="subjects held out (IXI 115/574, HCP 223/1113)")
    split_seed: Seed = 0
    max_subjects: NonNegInt = Field(0, description="use at most this many subjects per dataset (0: all)")

    @model_validator(mode="after")
    def _roles(self):
        if self.donor == self.name:
            raise ValueError(f"donor and recipient are both {self.name}")
        if self.contrast not in HAS[self.donor]:
            raise ValueError(f"donor {self.donor} has no {self.contrast} (it has {', '.join(HAS[self.donor][1:])})")
        if self.size % 16:
            raise ValueError(f"size {self.size} must be divisible by 16")
        return self


class Model(Section):
    ngf: Count = Field(64, description="DA generators' first width (Johnson ResNet)")
    n_blocks: Count = Field(9, description="DA residual blocks")
    ndf: Count = Field(64, description="PatchGAN width")
    g3: Literal["attention-unet"] = Field("attention-unet", description="the released code's G3 (the card's "
                                                                        "resnet11-ag variant is not built)")
    channels: list[Count] = Field(default_factory=lambda: [64, 128, 256, 512, 1024],
                                  description="Attention U-Net encoder widths")


class Gan(Section):
    epochs: Epochs = Field(100, description="epochs at constant lr")
    decay_epochs: NonNegInt = Field(100, description="then linear decay to 0")
    batch_size: BatchSize = 4
    lr: LearningRate = 2e-4
    betas: tuple[Fraction, Fraction] = (0.5, 0.999)
    lambda_adv: NonNegFloat = 1.0
    pool_size: NonNegInt = 50


class TrainDA(Gan):
    lambda_cyc: NonNegFloat = 100.0
    one_sided: bool = Field(False, description="the paper's literal L_DA (G1 adversarial + Ŝ cycle) instead of the "
                                               "released full CycleGAN")


class TrainI2I(Gan):
    lambda_l1: NonNegFloat = 100.0
    lambda_vgg: NonNegFloat = 100.0
    vgg_weights: str | None = Field(None, description="torchvision VGG16 state dict (.pth/.safetensors); none: "
                                                      "λ_vgg = 0 and the run is marked not faithful")
    use_da: bool = Field(True, description="false: the no-DA control (donor real T1 → contrast)")
    da_weights: str | None = Field(None, description="G1 weights (safetensors) instead of running or reusing the "
                                                     "train-da run of this manifest (the card's --da-ckpt)")


class Synthesize(Section):
    figures: NonNegInt = Field(4, description="recipient slices drawn (synthetic beside the T1 and attention)")


class KLEval(EvalSection):
    split: Literal["test", "train"] = "test"
    bins: Count = 256
    eps: PositiveFloat = 1e-10
    controls: bool = Field(True, description="also score copying the T1 and I2I without DA (a train-i2i child run)")


class McganManifest(Manifest):
    pipeline: Literal["mcgan"] = "mcgan"
    dataset: Data
    model: Model = Field(default_factory=Model)
    train_da: TrainDA = Field(default_factory=TrainDA)
    train_i2i: TrainI2I = Field(default_factory=TrainI2I)
    synthesize: Synthesize = Field(default_factory=Synthesize)
    kl_eval: KLEval = Field(default_factory=KLEval)


def donor_root(m: McganManifest) -> Path:
    d = m.dataset
    return Path(d.donor_root) if d.donor_root else Path(d.root).parent / FOLDERS[d.donor]


def data_paths(m: McganManifest) -> dict[str, Path]:
    """The recipient and donor folders, after a cheap layout check of each."""
    from medrun.datasets import brain_mr

    roots = {m.dataset.name: Path(m.dataset.root), m.dataset.donor: donor_root(m)}
    for name, root in roots.items():
        if root.exists():
            brain_mr.check_layout(name, root)
    if m.dataset.seg_dir:
        roots["segmentations"] = Path(m.dataset.seg_dir)
    return roots
