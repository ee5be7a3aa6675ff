"""The manifest envelope: the sections every pipeline shares. A pipeline subclasses ``Manifest`` and narrows
``dataset``, ``model``, ``train``, ``eval`` (and adds sections of its own) with typed models. Unknown keys are
errors everywhere (``extra="forbid"``).
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class Section(BaseModel):
    """Base for every manifest section: unknown keys are rejected."""

    model_config = ConfigDict(extra="forbid", protected_namespaces=())


class DatasetSection(Section):
    name: str
    root: str | None = Field(None, description="folder of the dataset in its public layout")


class TrainSection(Section):
    epochs: int = Field(1, ge=1)
    batch_size: int = Field(16, ge=1)
    lr: float = Field(1e-3, gt=0)
    num_workers: int = Field(0, ge=0, description="DataLoader worker processes")


class EvalSection(Section):
    split: str = "test"
    metrics: list[str] = Field(default_factory=list)


class TrainerSection(Section):
    """Passed to ``lightning.Trainer``; hardware lives here and nowhere else."""

    accelerator: str = "auto"
    devices: int | str | list[int] = "auto"
    strategy: str = "auto"
    precision: str = "32-true"
    num_nodes: int = Field(1, ge=1)
    log_every_n_steps: int = Field(10, ge=1)
    checkpoint_every_n_steps: int = Field(
        0, ge=0, description="also write checkpoints/last.ckpt every n training steps, so a killed run resumes inside "
                             "its epoch (0: at epoch ends only; resuming is exact either way)")


class PaperSection(Section):
    card: str
    table: str | None = None
    setting: str | None = Field(None, description="the paper's setting these numbers belong to")
    expect: dict[str, float] = Field(default_factory=dict)


class SmokeSection(Section):
    """Thresholds the fixture run must pass (checked by ``medrun smoke``, which runs ``stage``)."""

    stage: str = "train"
    min: dict[str, float] = Field(default_factory=dict)
    max: dict[str, float] = Field(default_factory=dict)


class Manifest(Section):
    pipeline: str
    dataset: DatasetSection
    model: Section = Field(default_factory=Section)
    train: TrainSection = Field(default_factory=TrainSection)
    eval: EvalSection = Field(default_factory=EvalSection)
    trainer: TrainerSection = Field(default_factory=TrainerSection)
    seed: int = 0
    seeds: list[int] | None = Field(None, description="replicates: one run per seed, then a summary run (mean, sd, 95 % CI)")
    determinism: Literal["off", "seeded", "strict"] = "seeded"
    fingerprint: Literal["content", "stat"] = Field(
        "content", description="content: sha256 of every data file (cached by path, size, mtime); stat: size+mtime"
    )
    paper: PaperSection | None = None
    smoke: SmokeSection = Field(default_factory=SmokeSection)


# Keys that do not change what a run computes, left out of the run id: where the data lies (its content is
# fingerprinted separately), what the paper reported, the smoke thresholds, and the replicate seeds (each member
# run has its own ``seed``).
ID_EXCLUDED = ("dataset.root", "paper", "smoke", "seeds")
