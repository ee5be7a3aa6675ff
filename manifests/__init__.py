"""Manifests: the envelope schema, loading (``extends:``, ``${ENV}``, ``-o`` overrides) and error reporting.

The YAML manifests themselves live beside this file as ``<pipeline>/<dataset>.yaml``.
"""

from pathlib import Path

from .loader import Resolved, apply_overrides, load_file, parse_override, validate

MANIFEST_DIR = Path(__file__).parent


def manifest_path(pipeline: str, dataset: str, fixture: bool = False) -> Path:
    """The repository manifest for (pipeline, dataset); ``<dataset>.fixture.yaml`` when running on the fixture."""
    base = MANIFEST_DIR / pipeline
    if fixture and (base / f"{dataset}.fixture.yaml").exists():
        return base / f"{dataset}.fixture.yaml"
    return base / f"{dataset}.yaml"


def all_manifests() -> list[Path]:
    return sorted(p for p in MANIFEST_DIR.glob("*/*.yaml") if not p.parent.name.startswith("_"))


__all__ = [
    "Resolved",
    "apply_overrides",
    "load_file",
    "parse_override",
    "validate",
    "manifest_path",
    "all_manifests",
    "MANIFEST_DIR",
]
