"""svd-gradcam's typed manifest (pydantic only) and the data folder it reads."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator

from medrun.datasets import imagefolder
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

Method = Literal["cam", "gradcam", "gradcampp", "smooth", "ablation", "score", "eigen", "svd"]


class Data(imagefolder.Fields, DatasetSection):
    name: Literal["mura", "imagefolder"]
    study_type: Literal["XR_ELBOW", "XR_FINGER", "XR_FOREARM", "XR_HAND", "XR_HUMERUS", "XR_SHOULDER",
                        "XR_WRIST"] = "XR_ELBOW"
    img_size: int = Field(224, ge=32, description="square resize (the card: 224, giving a 7×7 DenseNet map)")
    valid_fraction: float = Field(0.25, gt=0, lt=1, description="imagefolder: the stratified share held out as "
                                  "the valid split (MURA has its own)")
    split_seed: Seed = Field(0, description="imagefolder: the seed of that split")


class Model(Section):
    arch: Literal["densenet169", "tiny"] = Field("densenet169",
                                                 description="tiny: the card's 4-conv CNN for smoke runs")
    head: Literal["linear", "mlp"] = Field("linear", description="mlp: Linear(R,256)-LeakyReLU-Linear(256,1)")
    width: int = Field(32, ge=4, description="tiny only: channels of the last blocks (R)")
    weights: str | None = Field(None, description="torchvision densenet169 state dict (.pth) to initialise the "
                                                  "features (ImageNet); none: random init with a warning")

    @field_validator("width")
    @classmethod
    def _even(cls, v: int) -> int:
        if v % 2:
            raise ValueError("must be even")
        return v


class Train(TrainSection):
    epochs: Epochs = 65
    batch_size: BatchSize = 8
    lr: LearningRate = Field(0.01, description="the paper's Adam lr; the card offers 1e-4 for fine-tuning")
    betas: tuple[float, float] = (0.9, 0.999)
    patience: int | None = Field(10, ge=1, description="early stopping on val_loss (valid split); null: off")
    focal_alpha: float = Field(0.25, ge=0, le=1)
    focal_gamma: float = Field(2.0, ge=0)
    augment: bool = Field(True, description="random horizontal flip and ±rotate_deg rotation, training only")
    rotate_deg: float = Field(10.0, ge=0)
    check_rank_full: bool = Field(True, description="after training: full-rank SVD-Grad-CAM vs Grad-CAM and the "
                                                    "pointing check on the valid split (cheap)")


class Eval(EvalSection):
    split: Literal["valid", "train"] = "valid"
    metrics: list[str] = Field(default_factory=lambda: ["auroc", "accuracy", "kappa"])


class Explain(Section):
    split: Literal["valid", "train"] = "valid"
    methods: list[Method] = Field(default_factory=lambda: ["cam", "gradcam", "smooth", "ablation", "score", "eigen",
                                                           "svd"])
    rank: int = Field(1, ge=1, description="n of SVD-Grad-CAM (rank of the gradient approximation)")
    variant: Literal["u", "v", "uv", "usv"] = Field("usv", description="(a) U_n, (b) V_n^T, (c) U_nV_n^T, "
                                                                      "(d) U_nΣ_nV_n^T")
    literal_eq: bool = Field(False, description="the printed Eq. 7–10 (first n columns / n·P) instead of the mean")
    sweep_ranks: list[int] = Field(default_factory=list, description="Exp. 1: extra SVD-Grad-CAM rows for these n")
    variants: list[Literal["u", "v", "uv", "usv"]] = Field(default_factory=list,
                                                            description="Exp. 2: extra rows for these variants")
    target_layer: str = Field("relu", description="module name of the CAM layer (default: ReLU after the features)")
    gradient: Literal["pre_relu", "map"] = Field("pre_relu", description="pre_relu: ∂Y/∂(input of the target "
                                                  "ReLU), as Grad-CAM code sees torchvision's DenseNet; map: ∂Y/∂M")
    max_images: int | None = Field(None, ge=1, description="explain a random subset of this many images (seed)")
    smooth_samples: int = Field(25, ge=1)
    smooth_sigma: float = Field(0.15, gt=0)
    batch_size: BatchSize = Field(16, description="images per forward/backward")
    mask_batch: int = Field(64, ge=1, description="masked copies per forward (Score-CAM, Ablation-CAM)")
    overlays: int = Field(6, ge=0, description="images drawn in figures/ (abnormal first)")


class Predict(Section):
    input: str | None = Field(None, description="folder of PNG images to classify (imagefolder: any format medrun "
                                                "reads; default: the eval split)")


class SvdGradCamManifest(Manifest):
    pipeline: Literal["svd-gradcam"] = "svd-gradcam"
    dataset: Data
    model: Model = Field(default_factory=Model)
    train: Train = Field(default_factory=Train)
    eval: Eval = Field(default_factory=Eval)
    explain: Explain = Field(default_factory=Explain)
    predict: Predict = Field(default_factory=Predict)


def data_paths(m: SvdGradCamManifest) -> dict[str, Path]:
    """The MURA-v1.1 folder (or the class folders), after a cheap layout check (a wrong folder fails before it is
    hashed)."""
    from medrun.datasets import mura

    imagefolder.check_root(m, lambda root: mura.check_layout(root, m.dataset.study_type))
    return {m.dataset.name: Path(m.dataset.root)}
