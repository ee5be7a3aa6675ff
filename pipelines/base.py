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
    parent: Any = None  # RunDir of the finished run a stage takes as input (spec.parents), e.g. eval's train run
    checkpoint: Path | None = None  # user-supplied weights instead of a parent run
    log: Any = print
    interactive: bool = False  # stdout is a terminal: rich progress instead of plain lines
    extras: dict = field(default_factory=dict)
    spec: Any = None  # the pipeline's PipelineSpec


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

    def trained_model(self, net=None, weights: str = "model.safetensors", *, prefix: str = "model."):
        """``net`` (default ``build_model()``) with the weights this stage was given: ``--checkpoint FILE``, or
        ``checkpoints/<weights>`` of the parent run, checked against the parent's MANIFEST.sha256 first. The
        sha256 of the weights used goes into this run's ``run.json`` as ``parent_weights_sha256``."""
        from medrun.artifacts import sha256_file
        from medrun.errors import DataError, UsageError

        from . import training

        net = self.build_model() if net is None else net
        if self.ctx.checkpoint is not None:
            path = self.ctx.checkpoint
        elif self.ctx.parent is not None:
            path = self.ctx.parent.path / "checkpoints" / weights
            recorded = self.ctx.parent.recorded_hashes().get(f"checkpoints/{weights}")
            if recorded is None:
                raise UsageError(f"{self.ctx.parent.path} has no checkpoints/{weights} in its MANIFEST.sha256",
                                 fix="pass a run of the stage that writes these weights, or --checkpoint FILE")
            if sha256_file(path) != recorded:
                raise DataError(f"{path} does not match its run's MANIFEST.sha256",
                                fix="the run was altered after it finished; run it again with --force")
        else:
            raise UsageError(f"stage '{self.ctx.stage}' needs trained weights", fix="pass --run ID or --checkpoint FILE")
        self.ctx.run.update_info(parent_weights_sha256=sha256_file(path))
        return training.load_weights(net, path, prefix=prefix)
