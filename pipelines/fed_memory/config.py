"""fed-memory's typed manifest (pydantic only) and the data folder it reads.

The card's flags are keys here: ``--scenario`` → ``fed.scenario``, ``--arch-set`` → ``model.arch_set``,
``--img-size`` → ``dataset.img_size``, ``--rounds`` → ``train.rounds``, ``--epochs-per-round`` → ``train.epochs``,
``--subset`` → ``dataset.subset``, ``--client-fractions`` → ``fed.client_fractions``, ``--weights-dir`` →
``model.weights_dir``, ``--data-root`` → ``--data-dir`` (``dataset.root``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator

from medrun.datasets import imagefolder
from medrun.manifests.schema import (
    BatchSize,
    Count,
    DatasetSection,
    Epochs,
    EvalSection,
    LearningRate,
    Manifest,
    PositiveFloat,
    Section,
    Seed,
    TrainSection,
)

REAL = {"heterogeneous": ("resnet50", "densenet121", "alexnet_skip"), "homogeneous": ("resnet50",) * 3}
TINY = {"heterogeneous": ("cnn4", "densenet_tiny", "alexnet_skip_tiny"), "homogeneous": ("cnn4",) * 3}
ARCHS = ("resnet50", "densenet121", "alexnet_skip", "cnn4", "densenet_tiny", "alexnet_skip_tiny")
Arch = Literal["resnet50", "densenet121", "alexnet_skip", "cnn4", "densenet_tiny", "alexnet_skip_tiny"]


class Data(imagefolder.Fields, DatasetSection):
    name: Literal["brain-tumor-mri", "imagefolder"] = "brain-tumor-mri"
    img_size: int = Field(224, ge=32, le=1024, description="square resize of every image (the paper gives none)")
    subset: Count | None = Field(None, description="use a stratified subset of this many images of the merged pool "
                                                   "(a CPU-sized run; None: all 3264)")
    test_fraction: float = Field(0.2, gt=0, lt=1, description="stratified held-out share of each client's data")
    split_seed: Seed = 0


class Model(Section):
    num_classes: int = Field(4, ge=2)
    arch_set: Literal["real", "tiny"] = Field(
        "real", description="real: ResNet50 / DenseNet121 / AlexNet-skip (Table 1); tiny: the card's learning-check "
                            "stand-ins (4-layer CNN / MONAI DenseNet 16-8-(2,2,2) / AlexNet-skip at 1/8 width)")
    archs: list[Arch] | None = Field(None, description="the clients' architectures in order (default: from the "
                                                       "scenario and arch_set)")
    weights_dir: str | None = Field(None, description="folder with torchvision ImageNet .pth files (resnet50-*.pth, "
                                                      "densenet121-*.pth, alexnet-*.pth); None: random init")


class Fed(Section):
    scenario: Literal[1, 2, 3, 4] = Field(1, description="Table 1: 1 different data/different models, 2 different/"
                                                         "same, 3 same/different, 4 same/same")
    clients: Count = Field(3, description="hospitals; at least as many as architectures")
    client_fractions: list[PositiveFloat] | None = Field(
        None, description="unequal shares in scenarios 1–2 (normalised; default equal thirds as in Sec. 4.1)")
    threads: Count = Field(1, description="clients trained in parallel threads (the paper: 3; >1 is not bitwise "
                                          "reproducible)")

    @model_validator(mode="after")
    def _fractions(self):
        if self.client_fractions is not None and len(self.client_fractions) != self.clients:
            raise ValueError(f"fed.client_fractions has {len(self.client_fractions)} values for {self.clients} clients")
        return self


class Train(TrainSection):
    rounds: Count = Field(10, description="t-rounds (synchronous aggregations)")
    epochs: Epochs = Field(10, description="local epochs per t-round")
    batch_size: BatchSize = 32
    lr: LearningRate = 1e-4


class Predict(Section):
    input: str | None = Field(None, description="predict: a file, folder or glob of unlabelled images (required)")


class Analyze(Section):
    saturation_threshold: PositiveFloat = Field(0.05, description="saturation: first round whose covariance "
                                                                  "stabilisation score is below this (our proxy)")


class FedMemoryManifest(Manifest):
    pipeline: Literal["fed-memory"] = "fed-memory"
    dataset: Data = Field(default_factory=Data)
    model: Model = Field(default_factory=Model)
    fed: Fed = Field(default_factory=Fed)
    train: Train = Field(default_factory=Train)
    eval: EvalSection = Field(default_factory=lambda: EvalSection(split="test"))
    predict: Predict = Field(default_factory=Predict)
    analyze: Analyze = Field(default_factory=Analyze)

    def client_archs(self) -> list[str]:
        """One architecture per client: ``model.archs`` or the scenario's set, repeated to ``fed.clients``."""
        homogeneous = self.fed.scenario in (2, 4)
        table = TINY if self.model.arch_set == "tiny" else REAL
        archs = list(self.model.archs or table["homogeneous" if homogeneous else "heterogeneous"])
        return [archs[i % len(archs)] for i in range(self.fed.clients)]

    @model_validator(mode="after")
    def _clients_and_archs(self):
        homogeneous = self.fed.scenario in (2, 4)
        table = TINY if self.model.arch_set == "tiny" else REAL
        archs = list(self.model.archs or table["homogeneous" if homogeneous else "heterogeneous"])
        if len(archs) > self.fed.clients:
            raise ValueError(f"scenario {self.fed.scenario} has fed.clients {self.fed.clients} for {len(archs)} "
                             f"architectures ({', '.join(archs)}): set fed.clients to at least {len(archs)} or list "
                             "fewer model.archs")
        small = sorted({a for a in archs if a.startswith("alexnet")}) if self.dataset.img_size < 63 else []
        if small:  # AlexNet's stride-4 stem and three 3x3/2 pools leave nothing of a smaller image
            raise ValueError(f"dataset.img_size {self.dataset.img_size} is too small for {', '.join(small)} "
                             "(at least 63)")
        if homogeneous and len(set(archs)) > 1:
            raise ValueError(f"scenario {self.fed.scenario} averages whole models but model.archs differ "
                             f"({', '.join(archs)}): use one architecture, or scenario 1 or 3")
        return self


def data_paths(m: FedMemoryManifest) -> dict[str, Path]:
    from medrun.datasets import brain_tumor_mri

    imagefolder.check_root(m, brain_tumor_mri.check_layout)
    return {m.dataset.name: Path(m.dataset.root or "data")}
