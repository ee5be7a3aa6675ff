"""icu-vitals' typed manifest (pydantic only) and the data folder it reads."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field

from medrun.manifests.schema import (
    BatchSize,
    Count,
    DatasetSection,
    Epochs,
    EvalSection,
    Fraction,
    LearningRate,
    Manifest,
    NonNegInt,
    PositiveFloat,
    Section,
    Seed,
    TrainSection,
)

Backbone = Literal["effnet-b0", "effnet-b1", "effnet-b2", "effnet-b3", "effnet-b4", "mobilenetv2", "tiny"]
Engine = Literal["paddle", "easyocr", "crnn-tiny", "oracle"]


class Data(DatasetSection):
    name: Literal["icu-monitors"]
    val_fraction: Fraction = Field(0.1, description="photos held out for validation (random, split_seed)")
    test_fraction: Fraction = Field(0.2, description="photos held out for the test split (random, split_seed)")
    split_seed: Seed = 0
    limit: int | None = Field(None, ge=3, description="keep the first N photos (sorted by name)")


class Model(Section):
    backbone: Backbone = Field("effnet-b4", description="MONAI EfficientNet-B0…B4, torchvision MobileNetV2 or tiny")
    input_size: Count = Field(380, description="square input of the regressor (B4: 380)")
    head_convs: tuple[Count, Count, Count] = Field((1280, 1540, 1960), description="the three valid 3×3 convs")
    head_dense: tuple[Count, Count] = Field((1024, 128), description="the dense layers before the 8 outputs")
    head_norm: bool = Field(False, description="BatchNorm after each head conv (ours, for the tiny backbone trained "
                                               "from scratch; the paper's head has none)")
    pad: tuple[Fraction, Fraction] = Field((0.234375, 0.234722),
                                           description="white padding per side as a fraction of width, height "
                                                       "(the code: 300 px of 1280, 169 px of 720)")
    backbone_weights: str | None = Field(None, description="ImageNet weights for the backbone (.safetensors or a "
                                                           "state dict); random init with a warning without")


class Train(TrainSection):
    epochs: Epochs = 50
    batch_size: BatchSize = 16
    lr: LearningRate = 1e-4
    augment: bool = Field(True, description="random perspective/affine (corners moved with the image), brightness, "
                                            "contrast")
    copies: Count = Field(4, description="passes over each training photo per epoch (the code's ×4 augmentation; "
                                         "the first pass unaugmented)")


class Eval(EvalSection):
    split: str = "test"
    metrics: list[str] = Field(default_factory=lambda: ["rms_px", "hr_acc", "spo2_acc", "rr_acc", "bp_acc", "map_acc"])
    ocr: list[Engine] = Field(default_factory=lambda: ["paddle"],
                              description="OCR engines whose extraction is scored (Table 4 rows); [] = corners only")
    deskew_check: bool = Field(False, description="also recover synthetic rotations (deskew.check_range) of each "
                                                  "rectified screen")
    full_size_check: bool = Field(False, description="also build the EfficientNet-B4 regressor and run one "
                                                     "forward/backward pass at 380²")
    figures: NonNegInt = Field(4, description="extraction figures of the first N photos")


class Extract(Section):
    """The photo → vitals chain (used by extract, eval and ocr-bench)."""

    input: str | None = Field(None, description="photos to read: a file, folder or glob (default: the eval split)")
    ocr: Engine = Field("paddle", description="OCR engine of the extract stage")
    deskew: bool = Field(True, description="rotate by the ARP skew angle before the corners are regressed")
    crop: Literal["box", "warp"] = Field("box", description="box: axis-aligned box of the corners (the code); "
                                                            "warp: perspective rectification (ours)")
    margin: Fraction = Field(0.05, description="the box crop grows by this fraction of its size on every side (ours: "
                                               "a corner a few pixels inside the screen cuts its edge words)")
    right_margin: Fraction = Field(0.015625, description="added on the right of the box crop (the code: 20 of 1280 px)")
    crop_size: tuple[Count, Count] = Field((1280, 720), description="the crop is resized to this width, height")
    min_screen_area: Fraction = Field(0.02, description="a predicted screen smaller than this fraction of the photo "
                                                        "is 'no screen detected'")
    min_screen_std: PositiveFloat = Field(4.0, description="a crop flatter than this grey-level sd is 'no screen'")
    rel_height: Fraction = Field(0.3, description="drop numeric boxes whose height ≤ this fraction of the tallest")
    green_hue: tuple[PositiveFloat, PositiveFloat] = Field((0.2, 0.47), description="HSV hue band (0–1) of 'green'")
    paddle_model_dir: str | None = Field(None, description="folder with PaddleOCR det/, rec/, cls/ inference models")
    easyocr_model_dir: str | None = Field(None, description="folder with EasyOCR's craft + english_g2 .pth files")
    crnn_weights: str | None = Field(None, description="crnn-tiny weights (.safetensors); default: a train-ocr run "
                                                      "of this manifest (run or reused)")


class Deskew(Section):
    input: str | None = Field(None, description="photos to deskew (default: every photo of the dataset)")
    theta_max: PositiveFloat = Field(45.0, description="coarse search over ±theta_max degrees")
    step: PositiveFloat = Field(0.1, description="coarse grid step, degrees")
    fine_range: PositiveFloat = Field(1.0, description="the correction pass searches ±fine_range around θa")
    fine_step: PositiveFloat = Field(0.02, description="correction grid step, degrees")
    max_disagreement: PositiveFloat = Field(0.5, description="D: keep θa when |θa − θb| > D")
    check: bool = Field(False, description="also rotate each rectified screen by a random angle and recover it")
    check_range: PositiveFloat = Field(10.0, description="synthetic rotations are drawn from ±check_range degrees")


class TrainOcr(Section):
    epochs: Epochs = 12
    samples: Count = Field(4000, description="synthetic training crops (rendered once from seed, reused every epoch)")
    val_samples: Count = Field(500, description="synthetic crops of the validation set (fixed)")
    batch_size: BatchSize = 64
    lr: LearningRate = 2e-3
    height: Count = Field(32, description="crop height (a multiple of 8)")
    width: Count = Field(128, description="crop width after resize/pad (a multiple of 8: the CRNN's time stride)")
    hidden: Count = Field(96, description="GRU width")
    seed: Seed = 1234


class OcrBench(Section):
    engines: list[Engine] = Field(default_factory=lambda: ["paddle", "easyocr", "crnn-tiny"])
    limit: int | None = Field(None, ge=1, description="score the first N labelled words only")


class IcuVitalsManifest(Manifest):
    pipeline: Literal["icu-vitals"] = "icu-vitals"
    dataset: Data
    model: Model = Field(default_factory=Model)
    train: Train = Field(default_factory=Train)
    eval: Eval = Field(default_factory=Eval)
    extract: Extract = Field(default_factory=Extract)
    deskew: Deskew = Field(default_factory=Deskew)
    train_ocr: TrainOcr = Field(default_factory=TrainOcr)
    ocr_bench: OcrBench = Field(default_factory=OcrBench)


def data_paths(m: IcuVitalsManifest) -> dict[str, Path]:
    """The folder to fingerprint, after a cheap layout check (so a wrong folder fails before it is hashed)."""
    root = Path(m.dataset.root)
    if root.exists():
        from medrun.datasets import icu_monitors

        icu_monitors.read(root)  # the CSVs are small: a bad row fails here, before a run directory opens
    return {m.dataset.name: root}
