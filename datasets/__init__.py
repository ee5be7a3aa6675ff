"""Public datasets: one module per dataset family, each with a reader for its public layout and a fixture
generator that writes a miniature in exactly that layout.

A module declares ``DATASETS = [DatasetInfo(...), ...]`` at import time with no heavy imports (numpy, PIL and
friends are imported inside functions), so ``medrun list`` stays fast.
"""

from __future__ import annotations

import importlib
import pkgutil
from dataclasses import dataclass, field
from pathlib import Path

from medrun.errors import unknown_name


@dataclass(frozen=True)
class DatasetInfo:
    name: str
    title: str
    layout: str  # the public layout, as a user sees it after unpacking
    source: str  # where a user gets it (no download is attempted)
    fixture: str  # "module:function" writing the miniature; returns the folder to use as root
    tags: tuple[str, ...] = field(default_factory=tuple)

    def make_fixture(self, out_dir: Path, seed: int = 0) -> Path:
        module, func = self.fixture.split(":")
        return getattr(importlib.import_module(module), func)(Path(out_dir), seed)


def registry() -> dict[str, DatasetInfo]:
    out: dict[str, DatasetInfo] = {}
    for m in pkgutil.iter_modules(__path__):
        if m.name.startswith("_"):
            continue
        mod = importlib.import_module(f"{__name__}.{m.name}")
        for info in getattr(mod, "DATASETS", ()):
            out[info.name] = info
    return out


def get(name: str) -> DatasetInfo:
    reg = registry()
    if name not in reg:
        raise unknown_name("dataset", name, reg)
    return reg[name]


def check_image_headers(paths) -> int:
    """Read every image file's header (and cheaply its length) so a corrupt file stops a run before training;
    see ``datasets._headers``. Raises DataError naming the first bad file."""
    from ._headers import check_image_headers as check

    return check(paths)


def check_headers_once(fingerprints: dict[str, dict], marker: Path) -> int:
    """``check_image_headers`` over the image files of data fingerprints, skipped when ``marker`` (named by the
    combined data fingerprint) exists and written after a clean pass; see ``datasets._headers``."""
    from ._headers import check_headers_once as check

    return check(fingerprints, marker)
