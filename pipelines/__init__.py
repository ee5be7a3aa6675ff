"""Pipelines: one sub-package per paper, registered under its slug.

A pipeline package's ``__init__`` declares ``SPEC = PipelineSpec(...)`` and nothing else, so listing costs no
more than reading those specs. Its typed manifest (pydantic, no torch) lives in ``config.py``, so showing and
validating never import torch, Lightning or MONAI. The implementation
(``SPEC.impl``, a ``Pipeline`` subclass) is imported only when a stage runs or a model is built.
"""

from __future__ import annotations

import importlib
import pkgutil
from dataclasses import dataclass, field

from medrun.errors import unknown_name


@dataclass(frozen=True)
class PipelineSpec:
    slug: str
    title: str
    paper: str  # citation
    card: str  # card name under shared/papers
    datasets: tuple[str, ...]
    stages: tuple[str, ...]
    manifest: str  # "module:Class" of the pipeline's pydantic Manifest subclass (imports pydantic, not torch)
    impl: str  # "module:Class" of the Pipeline implementation (imports torch)
    # stage -> the stage of the finished run it takes as its input (``--run ID``, or found by manifest);
    # e.g. {"explain": "train"} for a stage that explains a trained model
    parents: dict[str, str] = field(default_factory=lambda: {"eval": "train", "predict": "train"})
    # stage -> one line of help for `medrun <stage> --help` (the core stages train/eval/predict have generic help)
    stage_help: dict[str, str] = field(default_factory=dict)
    # stage -> an example command line (shown under the stage's help)
    examples: dict[str, str] = field(default_factory=dict)
    # why `medrun export` cannot write a MONAI bundle of this pipeline's runs (None: it can)
    no_export: str | None = None

    def manifest_cls(self):
        return _load(self.manifest)

    def config_module(self):
        return importlib.import_module(self.manifest.split(":")[0])

    def load(self):
        return _load(self.impl)


def _load(ref: str):
    module, name = ref.split(":")
    return getattr(importlib.import_module(module), name)


CORE_STAGES = {
    "train": "Train a pipeline's model; writes weights, learning curves, test metrics and paper.md.",
    "eval": "Evaluate a finished train run (the newest of the same manifest, --run ID, or --checkpoint FILE).",
    "predict": "Predict with a finished train run; writes per-case predictions.",
}


def stage_help(verb: str, specs) -> tuple[str, list[str]]:
    """Help for a stage verb across pipelines: the core text, or each pipeline's own line; and their examples."""
    users = [s for s in specs if verb in s.stages]
    if verb in CORE_STAGES:
        text = CORE_STAGES[verb]
    else:
        from collections import Counter

        lines = {s.slug: s.stage_help.get(verb, f"the '{verb}' stage") for s in users}
        common = Counter(lines.values()).most_common(1)[0][0]
        text = "  ".join([common, *(f"{k}: {v}" for k, v in lines.items() if v != common)])
    examples = [s.examples[verb] for s in users if verb in s.examples]
    return text, examples


def registry() -> dict[str, PipelineSpec]:
    out = {}
    for m in pkgutil.iter_modules(__path__):
        if m.ispkg and not m.name.startswith("_"):
            spec = getattr(importlib.import_module(f"{__name__}.{m.name}"), "SPEC", None)
            if spec is not None:
                out[spec.slug] = spec
    return out


def get(slug: str) -> PipelineSpec:
    reg = registry()
    if slug not in reg:
        raise unknown_name("pipeline", slug, reg)
    return reg[slug]


def dataset_registry() -> dict:
    """The datasets pipelines read (``medrun.datasets.registry()``), for the CLI, which imports only this layer."""
    from medrun import datasets

    return datasets.registry()


def own_data(spec: PipelineSpec, datasets: dict) -> dict:
    """How a researcher runs ``spec`` on their own data: ``{"dataset", "layout"}`` of its own-data dataset where it
    has one (``imagefolder``, ``pairs``: datasets whose source says "your own data"), else of its first dataset, whose
    public layout a folder of the user's own signals, tables, point sets or images can follow."""
    own = [d for d in spec.datasets if d in datasets and datasets[d].source.lower().startswith("your own data")]
    name = (own or list(spec.datasets))[0]
    info = datasets.get(name)
    return {"dataset": name, "layout": info.layout if info else f"see docs/papers/{spec.slug}.md"}


def dataset_info(name: str):
    from medrun import datasets

    return datasets.get(name)
