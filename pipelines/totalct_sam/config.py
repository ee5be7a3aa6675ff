"""totalct-sam's typed manifest (pydantic only) and the data folder it reads."""

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
    NonNegInt,
    Section,
    TrainSection,
)


class Data(DatasetSection):
    name: Literal["totalsegmentator"]
    classes: list[str] | None = Field(None, description="structures to segment, in label order (index = position + 1); "
                                      "default: every mask name of the dataset, sorted (v1: 104, v2: 117)")
    spacing: float = Field(1.5, gt=0, description="isotropic resampling in mm (the dataset's native spacing)")
    hu_window: tuple[float, float] | None = Field((-1000.0, 1000.0), description="CT window: clip HU to [lo, hi] "
                                                  "before the per-volume z-score (null: no clipping)")
    crops_per_volume: int = Field(2, ge=1, description="class-balanced random crops per volume and epoch")
    flip_prob: float = Field(0.5, ge=0, le=1, description="random flip probability on each axis (paper: RandomFlip)")

    @field_validator("classes")
    @classmethod
    def _unique(cls, v):
        if v is not None and (not v or len(set(v)) != len(v)):
            raise ValueError("must be a non-empty list of distinct structure names")
        return v


ARCHS = ("totalct-sam", "unetr", "swinunetr")
SWIN_MIN = 64  # smallest SwinUNETR crop that trains (five halvings leave 2³)
Arch = Literal["totalct-sam", "unetr", "swinunetr"]


class Model(Section):
    arch: Arch = Field("totalct-sam", description="totalct-sam (the paper's model) or a Table 1 baseline trained on "
                       "the same split: unetr or swinunetr (MONAI; UNETR's hidden size embed_dim, num_heads, MLP 4 × "
                       "embed_dim)")
    feature_size: Count | None = Field(None, description="UNETR / SwinUNETR feature size (default: 16 / 48, "
                                       "MONAI's published configurations)")
    img_size: Count = Field(128, description="cube side of a training crop / inference window")
    patch_size: Count = 16
    embed_dim: Count = 768
    depth: Count = 12
    num_heads: Count = 12
    window_size: Count = 14
    global_attn_indexes: tuple[NonNegInt, ...] = (2, 5, 8, 11)
    prompt_dim: Count = 384
    decoder_depth: Count = 2
    decoder_mlp_dim: Count = 2048
    memory: bool = Field(True, description="the memorizing-transformer block (false: the Table 3 ablation)")
    memory_size: int = Field(16_384, ge=1, description="FIFO memory entries (one per image token)")
    memory_topk: int = Field(32, ge=1)
    memory_heads: int = Field(8, ge=1)
    gate_init: float = Field(-5.0, description="initial per-head gate bias b_h (g = sigmoid(b_h) ≈ 0)")
    sammed3d_checkpoint: str | None = Field(None, description="SAM-Med3D .pth (vit_b_ori; turbo accepted) to start "
                                            "from; new modules are reported as missing keys")

    @model_validator(mode="after")
    def _sizes(self):
        if self.img_size % self.patch_size or self.img_size // self.patch_size < 2:
            raise ValueError(f"img_size {self.img_size} must be a multiple (≥ 2×) of patch_size {self.patch_size}")
        if self.embed_dim % self.num_heads or self.prompt_dim % 24 or (self.prompt_dim // 2) % self.memory_heads:
            raise ValueError("embed_dim must divide by num_heads, prompt_dim by 24 (Fourier features ×3, /8 upscaling),"
                             " prompt_dim/2 by memory_heads")
        need = {"unetr": 16, "swinunetr": 32}.get(self.arch)  # UNETR's fixed 16³ patches; Swin's five halvings
        if need and self.img_size % need:
            raise ValueError(f"model.arch {self.arch} needs img_size a multiple of {need} (got {self.img_size})")
        if self.arch == "swinunetr" and (self.feature_size or 48) % 12:
            raise ValueError("swinunetr needs feature_size a multiple of 12")
        if self.arch == "swinunetr" and self.img_size < SWIN_MIN:  # its instance norm fails on a 1³ bottleneck
            raise ValueError(f"swinunetr needs img_size ≥ {SWIN_MIN} (got {self.img_size}): at 32 its bottleneck is "
                             "one voxel, which instance norm cannot normalise")
        if self.arch != "totalct-sam" and self.sammed3d_checkpoint:
            raise ValueError(f"sammed3d_checkpoint initialises totalct-sam only, not model.arch {self.arch} (the "
                             "baselines train from random init)")
        return self


class Train(TrainSection):
    epochs: Epochs = 20
    batch_size: BatchSize = 2
    lr: LearningRate = Field(5e-7, description="Adam lr of the SAM-Med3D modules")
    lr_new: LearningRate | None = Field(None, description="Adam lr of the new modules (class tokens, class "
                                 "hypernetwork, memory block); default: lr")
    prompt_prob: float = Field(0.5, ge=0, le=1, description="share of steps that also train a point-prompted mask")
    max_clicks: int = Field(5, ge=1)
    cache: bool = Field(False, description="keep every preprocessed training volume in memory (fixtures; RAM!)")


class Baselines(Section):
    archs: list[Arch] = Field(default_factory=lambda: list(ARCHS), min_length=1, description=(
        "`medrun baselines` (Table 1): one train run per model.arch on the same split"))
    zeroshot: bool = Field(True, description="`medrun baselines` also adds SAM-Med3D without fine-tuning (the "
                           "zeroshot stage, model.sammed3d_checkpoint or random init)")


class ZeroShot(Section):
    clicks: int = Field(1, ge=1, le=10, description="`medrun zeroshot`: clicks per structure (the first at its "
                        "innermost voxel, the others at the innermost voxel of the largest error, as SAM-Med3D's "
                        "evaluation)")


class Eval(EvalSection):
    split: str = "val"
    metrics: list[str] = Field(default_factory=lambda: ["dice", "iou", "accuracy", "pixel_accuracy"])


class Inference(Section):  # prompt-free sliding window of eval and predict (the predictor's settings)
    roi_size: tuple[Count, Count, Count] | None = Field(None, description="window; default: model.img_size³")
    sw_batch_size: int = Field(1, ge=1)
    overlap: float = Field(0.5, ge=0, lt=1)
    mode: Literal["constant", "gaussian"] = Field("constant", description="blending of overlapping windows")


class Predict(Section):
    input: str | None = Field(None, description="a ct.nii.gz file or a folder of them (default: the eval split)")
    point: tuple[int, int, int] | None = Field(None, description="a positive click (voxel x,y,z of the resampled "
                                               "RAS volume): a prompt-guided binary mask instead of all classes")


class TotalCTSamManifest(Manifest):
    pipeline: Literal["totalct-sam"] = "totalct-sam"
    dataset: Data
    model: Model = Field(default_factory=Model)
    train: Train = Field(default_factory=Train)
    eval: Eval = Field(default_factory=Eval)
    inference: Inference = Field(default_factory=Inference)
    predict: Predict = Field(default_factory=Predict)
    baselines: Baselines = Field(default_factory=Baselines)
    zeroshot: ZeroShot = Field(default_factory=ZeroShot)

    @model_validator(mode="after")
    def _window(self):
        if self.inference.roi_size is None:  # the training crop, as the paper's inference
            self.inference.roi_size = (self.model.img_size,) * 3
        return self


def data_paths(m: TotalCTSamManifest) -> dict[str, Path]:
    """The dataset folder, after a cheap layout check (so a wrong folder fails before it is hashed)."""
    from medrun.datasets import totalsegmentator

    root = Path(m.dataset.root)
    if root.exists():
        totalsegmentator.check_layout(root)
    return {"data": root}
