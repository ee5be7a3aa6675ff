"""The pipeline contract.

A ``Pipeline`` gets a validated manifest and a ``StageContext`` and implements one method per stage
(``train``, ``eval``, ``predict``, and extras such as ``cv``). Each stage method returns the run's metrics
(a flat-ish dict); everything it writes goes through ``ctx.run``. Generic work (run identity, the run
directory, fingerprints, seeding, the Trainer, checkpoints, reports) is done by the runner and the context.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass
class StageContext:
    stage: str
    manifest: Any  # the pipeline's validated Manifest model
    run: Any  # artifacts.RunDir
    data_roots: dict[str, Path]
    fixture: bool = False
    parent: Any = None  # RunDir of the train run an eval/predict stage uses
    checkpoint: Path | None = None  # user-supplied weights instead of a parent run
    log: Any = print
    interactive: bool = False  # stdout is a terminal: rich progress instead of plain lines
    extras: dict = field(default_factory=dict)


class Pipeline(ABC):
    """Subclass and implement ``build_model`` plus one method per stage."""

    def __init__(self, manifest, ctx: StageContext | None = None):
        self.m = manifest
        self.ctx = ctx

    @abstractmethod
    def build_model(self):
        """The paper's network at the manifest's settings."""

    def run_stage(self, stage: str) -> dict:
        return getattr(self, stage.replace("-", "_"))()
