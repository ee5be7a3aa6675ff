"""The manifest envelope: the sections every pipeline shares. A pipeline subclasses ``Manifest`` and narrows
``dataset``, ``model``, ``train``, ``eval`` (and adds sections of its own) with typed models. Unknown keys are
errors everywhere (``extra="forbid"``).
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

# Constrained types, defined once. A pipeline's section that re-declares a field with a plain ``int`` or ``float``
# would drop the envelope's ``Field(ge=1)`` (pydantic replaces the whole field), so every count, size, rate and
# seed is annotated with one of these and keeps its bound whatever default a subclass gives it
# (``epochs: Epochs = 18``, or ``Field(18, description=...)`` beside it).
Epochs = Annotated[int, Field(ge=1, description="training epochs, at least 1")]
BatchSize = Annotated[int, Field(ge=1, description="samples per batch, at least 1")]
LearningRate = Annotated[float, Field(gt=0, allow_inf_nan=False, description="a finite learning rate above 0")]
Count = Annotated[int, Field(ge=1)]  # steps, iterations, sizes, widths: at least one
NonNegInt = Annotated[int, Field(ge=0)]  # counts where 0 means "none" or "off"
Workers = Annotated[int, Field(ge=0, description="DataLoader worker processes (0: load in the main process)")]
NonNegFloat = Annotated[float, Field(ge=0, allow_inf_nan=False)]  # weight decay, loss weights
PositiveFloat = Annotated[float, Field(gt=0, allow_inf_nan=False)]  # epsilons, tolerances, clip norms
Fraction = Annotated[float, Field(ge=0, lt=1, allow_inf_nan=False)]  # momentum, dropout
# numpy's legacy seeding, Lightning's ``seed_everything`` and most samplers take an unsigned 32-bit seed
Seed = Annotated[int, Field(ge=0, lt=2**32, description="0 ≤ seed < 2**32")]


class Section(BaseModel):
    """Base for every manifest section: unknown keys are rejected."""

    model_config = ConfigDict(extra="forbid", protected_namespaces=())


class DatasetSection(Section):
    name: str
    root: str | None = Field(None, description="folder of the dataset in its public layout")


class TrainSection(Section):
    epochs: Epochs = 1
    batch_size: BatchSize = 16
    lr: LearningRate = 1e-3
    num_workers: Workers = 0


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


class LauncherSection(Section):
    """What each sweep child asks a cluster for (``--launcher slurm``; ``pipelines/launch.py``). Hardware, like
    ``trainer:``: not part of a run's identity."""

    partition: str | None = Field(None, description="SLURM partition")
    time_min: int = Field(60, ge=1, description="wall-clock limit per child, minutes")
    gpus: int = Field(0, ge=0, description="GPUs per child (one node each)")
    cpus: int | None = Field(None, ge=1, description="CPUs per child")
    mem_gb: float | None = Field(None, gt=0, description="memory per child, GB")
    account: str | None = Field(None, description="SLURM account")
    extra: dict[str, str] = Field(default_factory=dict, description="further sbatch options (name: value)")


class Manifest(Section):
    pipeline: str
    dataset: DatasetSection
    model: Section = Field(default_factory=Section)
    train: TrainSection = Field(default_factory=TrainSection)
    eval: EvalSection = Field(default_factory=EvalSection)
    trainer: TrainerSection = Field(default_factory=TrainerSection)
    seed: Seed = 0
    seeds: list[Seed] | None = Field(
        None, description="replicates: one run per seed, then a summary run (mean, sd, 95 % CI)"
    )
    determinism: Literal["off", "seeded", "strict"] = "seeded"
    fingerprint: Literal["content", "stat"] = Field(
        "content", description="content: sha256 of every data file (cached by path, size, mtime); stat: size+mtime"
    )
    paper: PaperSection | None = None
    smoke: SmokeSection = Field(default_factory=SmokeSection)
    launcher: LauncherSection | None = Field(None, description="per-child cluster resources (--launcher slurm)")


# Keys that do not change what a run computes, left out of the run id: where the data lies (its content is
# fingerprinted separately), what the paper reported, the smoke thresholds, and the replicate seeds (each member
# run has its own ``seed``), and the cluster resources a sweep child asks for (``launcher``: hardware).
ID_EXCLUDED = ("dataset.root", "paper", "smoke", "seeds", "launcher")
