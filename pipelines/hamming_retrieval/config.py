"""hamming-retrieval's typed manifest (pydantic only) and the data folder it reads."""

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
    NonNegFloat,
    NonNegInt,
    PositiveFloat,
    Section,
    Seed,
    TrainSection,
    Workers,
)

# the 13 most frequent NIH findings the paper keeps (Hernia dropped), in the card's order
RETRIEVAL_LABELS = ["Atelectasis", "Cardiomegaly", "Effusion", "Infiltration", "Mass", "Nodule", "Pneumonia",
                    "Pneumothorax", "Consolidation", "Edema", "Emphysema", "Fibrosis", "Pleural_Thickening"]
NIH_FINDINGS = {*RETRIEVAL_LABELS, "Hernia"}


class Data(DatasetSection):
    name: Literal["nih"]
    layout: Literal["auto", "kaggle", "released"] = Field(
        "auto", description="kaggle: Data_Entry_2017.csv + images_0NN/images/*.png, split here; released: the "
                            "authors' split (train/, gallery/, query/ of .npy images, labels in the file names); "
                            "auto: released when the root has those three folders and no Data_Entry_2017*.csv")
    labels_csv: str | None = Field(None, description="label CSV in the root (default Data_Entry_2017.csv, else the "
                                                     "one Data_Entry_2017*.csv there)")
    labels: list[str] = Field(default_factory=lambda: list(RETRIEVAL_LABELS), min_length=1,
                              description="findings kept: an image with none of them is left out, others are ignored")
    img_size: int = Field(224, ge=64, le=1024, description="square resize of every image (the reference code: 224)")
    train_fraction: float = Field(0.75, gt=0, lt=1)
    gallery_fraction: float = Field(0.20, gt=0, lt=1, description="the rest after train and gallery are queries")
    split_seed: Seed = 3407
    patient_split: bool = Field(False, description="keep each patient's images in one split (the paper's split is per "
                                                   "image)")
    cache: bool = Field(True, description="decode the selected images once into $MEDRUN_CACHE/nih (a .npy per data "
                                          "fingerprint and size) and memory-map it")
    decode_workers: Workers = Field(0, description="processes decoding images for that cache (0: this process)")

    @field_validator("labels")
    @classmethod
    def _known(cls, v: list[str]) -> list[str]:
        bad = [x for x in v if x not in NIH_FINDINGS]
        if bad:
            raise ValueError(f"unknown NIH finding(s) {bad}; use {sorted(NIH_FINDINGS)}")
        if len(set(v)) != len(v):
            raise ValueError("a label is listed twice")
        return v

    @model_validator(mode="after")
    def _fractions(self):
        if self.train_fraction + self.gallery_fraction >= 1:
            raise ValueError("train_fraction + gallery_fraction must leave room for queries (sum < 1)")
        return self


class Model(Section):
    code_bits: int = Field(16, ge=8, le=1024, description="K, bits per hash code (paper: 16, 32, 48, 64); a multiple "
                                                          "of 8 (codes are packed into bytes)")
    fc_width: Count = Field(4096, description="width of the hidden Linear of fc_h and net_c (paper: 4096)")
    pool: int = Field(6, ge=1, le=16, description="AdaptiveAvgPool2d size after the conv stack (6: AlexNet's 6×6)")
    init: Literal["torch", "kaiming"] = Field(
        "torch", description="random initialisation: PyTorch's layer defaults (torchvision's AlexNet), or He-normal "
                             "(the fixture runs: codes separate from the first epoch instead of after a plateau)")
    alexnet_checkpoint: str | None = Field(
        None, description="torchvision AlexNet weights (a state dict: .pth/.pt/.safetensors) to start from; conv1 is "
                          "averaged over RGB. Default: random initialisation")

    @field_validator("code_bits")
    @classmethod
    def _bytes(cls, v: int) -> int:
        if v % 8:
            raise ValueError("must be a multiple of 8 (codes are packed into bytes for the binary index)")
        return v


class Loss(Section):
    """J = λ1·J1 (AHDL) + λ2·J2 (PMCL), both summed over the batch as the reference code."""

    lambda1: NonNegFloat = Field(1.0, description="weight of the adaptive Hamming-distance loss J1")
    lambda2: NonNegFloat = Field(1.5, description="weight of the pairwise multi-label classification loss J2")


class Train(TrainSection):
    epochs: Epochs = 200
    batch_size: BatchSize = 512
    lr: LearningRate = 1e-4
    weight_decay: NonNegFloat = Field(5e-3, description="Adam's L2 weight decay")
    sched: Literal["step", "plateau"] = Field("step", description="step: StepLR (the reference code); plateau: "
                                                                  "ReduceLROnPlateau on the epoch's loss (the text)")
    step_size: Count = Field(40, description="StepLR step (epochs) / ReduceLROnPlateau patience")
    gamma: PositiveFloat = Field(0.4, le=1, description="StepLR γ / ReduceLROnPlateau factor")


class Eval(EvalSection):
    split: str = Field("query", description="the split whose images query the gallery")
    metrics: list[str] = Field(default_factory=lambda: ["ndcg", "ndcg_gallery", "acg", "wmap", "map"])
    top_k: Count = Field(100, description="p, the length of the retrieved list (paper: 100)")
    idcg: Literal["retrieved", "gallery"] = Field(
        "retrieved", description="which iDCG the headline `ndcg` uses: the retrieved top-p re-sorted (the authors' "
                                 "script) or the best p of the whole gallery (textbook); both are always reported")
    tie_seed: Seed | None = Field(3407, description="ties in Hamming distance: the gallery is shuffled with this seed "
                                                    "and stable-sorted (reference code); null keeps gallery order")
    random_draws: Count = Field(10, description="draws of random ±1 codes averaged for the chance-level baseline")
    batch_size: BatchSize = 64
    figure_queries: NonNegInt = Field(4, description="queries shown with their top-5 in figures/retrieval.png")


class Index(Section):
    split: Literal["gallery", "train", "query"] = Field("gallery", description="the split encoded into the index")
    batch_size: BatchSize = 64


class Retrieve(Section):
    input: str | None = Field(None, description="query images: a file, folder or glob (.png/.jpg/.npy); default: the "
                                                "query split")
    index: str | None = Field(None, description="an index .npz (index/codes.npz of an index run); needed with "
                                                "--checkpoint, otherwise the --run index run's own")
    top_k: Count = Field(10, description="gallery hits returned per query")
    batch_size: BatchSize = 64


class HammingManifest(Manifest):
    pipeline: Literal["hamming-retrieval"] = "hamming-retrieval"
    dataset: Data
    model: Model = Field(default_factory=Model)
    loss: Loss = Field(default_factory=Loss)
    train: Train = Field(default_factory=Train)
    eval: Eval = Field(default_factory=Eval)
    index: Index = Field(default_factory=Index)
    retrieve: Retrieve = Field(default_factory=Retrieve)


def data_paths(m: HammingManifest) -> dict[str, Path]:
    """The folder to fingerprint, after checking the label CSV against the images (every label a known finding,
    every ``Image Index`` a file: about a second on the real 112,120 rows), so bad data fails before a run opens."""
    root = Path(m.dataset.root)
    if root.exists():
        from medrun.datasets import nih

        if layout(m.dataset) == "released":
            for part in nih.NPY_PARTS:
                nih.read_npy_part(root, part)
        else:
            nih.read_entries(root, m.dataset.labels_csv)
    return {"nih": root}


def layout(d: Data) -> str:
    """The layout ``dataset.layout`` names, ``auto`` resolved by looking at the root."""
    if d.layout != "auto":
        return d.layout
    root = Path(d.root)
    released = all((root / part).is_dir() for part in ("train", "gallery", "query"))
    return "released" if released and not any(root.glob("Data_Entry_2017*.csv")) else "kaggle"
