"""lorasam's typed manifest (pydantic only) and the data folders it reads."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field

from medrun.manifests.schema import (
    BatchSize,
    DatasetSection,
    Epochs,
    EvalSection,
    LearningRate,
    Manifest,
    NonNegFloat,
    NonNegInt,
    Section,
    TrainSection,
)


class Split(Section):
    """Video-level split. CholecSeg8k: video folder names (video01 …), all under the root. EndoVis: sequence
    numbers; ``train`` and ``val`` come from ``train/``, ``test`` from ``test/`` (null: every test sequence).
    ChestX-Det: the parts (``train``, ``test``) each split reads. Abdominal ultrasound: the sources (``AUS``
    simulated, ``RUS`` real) each split reads, ``train``/``val`` from the training scans, ``test`` from the test
    scans."""

    train: list[str | int] = Field(default_factory=list)
    val: list[str | int] = Field(default_factory=list, description="empty: no model selection, the last epoch is kept")
    test: list[str | int] | None = None


class Data(DatasetSection):
    name: Literal["endovis17", "endovis18", "cholecseg8k", "chestxdet", "abdominal-us"]
    classes: list[str] | None = Field(None, description="class names to train and score (default: all of the "
                                                        "dataset's)")
    split: Split = Field(default_factory=Split)
    img_size: int = Field(256, ge=32, description="square input size (bilinear image, nearest mask); a multiple of 16")


class Model(Section):
    size: Literal["vit_b", "tiny"] = Field("vit_b", description="vit_b: SAM ViT-B; tiny: the card's smoke-run config")
    rank: int = Field(4, ge=1, description="LoRA rank r (λ = alpha / r = 1)")
    lora: bool = True
    tal: bool = Field(True, description="Text Affine Layer; false: the text token is the first dims of the CLIP vector")
    pos_embed: bool = True
    norms: bool = True
    sam_checkpoint: str | None = Field(None, description="official SAM ViT-B .pth (e.g. sam_vit_b_01ec64.pth); "
                                                          "never downloaded")
    clip_checkpoint: str | None = Field(None, description="local HF CLIP ViT-B/32 folder; none: the stand-in text "
                                                           "tower")
    threshold: float = Field(0.5, gt=0, lt=1)


class Train(TrainSection):
    epochs: Epochs = 1000
    batch_size: BatchSize = Field(32, description="frames per batch; every class of a frame is prompted")
    lr: LearningRate = 1e-4
    weight_decay: NonNegFloat = 1e-2
    step_size: int = Field(200, ge=1, description="StepLR step in epochs")
    gamma: float = Field(0.2, gt=0, le=1)
    loss: Literal["focal", "focal+dice"] = "focal+dice"
    focal_alpha: float = Field(0.25, ge=0, le=1)
    focal_gamma: NonNegFloat = 2.0
    augment: Literal["card", "dihedral", "none"] = Field(
        "card", description="card: rotation ±10°, saturation ×2, brightness ×2; dihedral: random flips and transposes "
                            "(colour-preserving; the fixture's smoke run); none")


class Pretrain(Section):
    """Stand-in for SAM's pre-training when no SAM checkpoint is given (the card's smoke run, stage A): all SAM
    weights trained with box prompts on a colour-swapped copy of the training frames. epochs 0: off."""

    epochs: NonNegInt = 0
    lr: LearningRate = 1e-3
    batch_size: BatchSize = 8
    augment: Literal["card", "dihedral", "none"] = "dihedral"


class Ablate(Section):
    """``medrun ablate lorasam``: Table 4 (LoRA rank) and Table 5 (which parts are tuned), each variant a train run
    of this manifest; variants that stage A would repeat share the full model's stage-A base."""

    ranks: list[Annotated[int, Field(ge=1)]] = Field(default_factory=lambda: [2, 4, 8, 16],
                                                     description="Table 4 rows (LoRA rank r)")
    components: list[Literal["pos_embed", "norms", "tal", "lora_no_tal", "full"]] = Field(
        default_factory=lambda: ["pos_embed", "norms", "tal", "lora_no_tal", "full"],
        description="Table 5 rows: pos-embed only; + LayerNorms; + TAL; LayerNorms + LoRA without TAL; all")


class Predict(Section):
    input: str | None = Field(None, description="an image file or a folder of images")
    classes: list[str] | None = Field(None, description="class names to segment (default: all of the dataset's)")


class LorasamManifest(Manifest):
    pipeline: Literal["lorasam"] = "lorasam"
    dataset: Data
    model: Model = Field(default_factory=Model)
    train: Train = Field(default_factory=Train)
    pretrain: Pretrain = Field(default_factory=Pretrain)
    ablate: Ablate = Field(default_factory=Ablate)
    eval: EvalSection = Field(default_factory=EvalSection)
    predict: Predict = Field(default_factory=Predict)


def data_paths(m: LorasamManifest) -> dict[str, Path]:
    """The dataset root, after a layout check; for CholecSeg8k every frame's mask files are checked here, so a
    missing mask fails before anything is written."""
    from medrun.datasets import abdominal_us, chestxdet, cholecseg8k, endovis

    root = Path(m.dataset.root)
    if root.exists():
        if m.dataset.name == "cholecseg8k":
            cholecseg8k.read(root)
        elif m.dataset.name == "endovis17":
            endovis.check_layout17(root)
        elif m.dataset.name == "chestxdet":
            for part in {str(p) for names in (m.dataset.split.train, m.dataset.split.test or []) for p in names}:
                chestxdet.annotation_file(root, part)
        elif m.dataset.name == "abdominal-us":
            abdominal_us.check_layout(root)
        else:
            endovis.check_layout18(root)
    return {m.dataset.name: root}
