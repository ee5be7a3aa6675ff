"""The pipeline contract.

A ``Pipeline`` gets a validated manifest and a ``StageContext`` and implements one method per stage
(``train``, ``eval``, ``predict``, and extras such as ``cv``). Each stage method returns the run's metrics
(a flat-ish dict). Everything it writes goes through the context's writers (``ctx.write_csv``, ``ctx.figure``,
``ctx.write_png`` …), which write atomically into the run directory, so a killed stage never leaves a half-written
file that looks finished. Generic work (run identity, the run directory, fingerprints, seeding, the Trainer,
checkpoints, child runs of a sweep) is done by the runner and reached through the context, never by importing
the runner.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import math
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")


@dataclass
class StageContext:
    """What a stage knows about its run: where to write, what it reads, which run it builds on, and its hardware."""

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
    run_id: str = ""
    world_size: int = 1  # processes that train (devices × nodes)
    cache_dir: Path | None = None  # medrun's cache folder ($MEDRUN_CACHE), for content-addressed caches
    # runs child stages (a sweep's folds, seeds, variants) as runs of their own; set by the runner
    launcher: Callable | None = None

    # -- progress of a long loop (final evaluation, prediction) -------------------------------------------------
    def track(self, items: Iterable, what: str, *, total: int | None = None, every: float = 10.0):
        """Yield ``items``, showing progress: a rich bar on a terminal; otherwise a plain line ``what: i/n (s)`` at
        most every ``every`` seconds, and a last one when the loop took longer than that (so a 5-minute final
        evaluation is never silent)."""
        import time

        total = total if total is not None else (len(items) if hasattr(items, "__len__") else None)
        of = f"/{total}" if total is not None else ""
        if self.interactive:
            from rich.progress import Progress

            with Progress(transient=True) as bar:
                task = bar.add_task(what, total=total)
                for item in items:
                    yield item
                    bar.advance(task)
            return
        t0 = last = time.perf_counter()
        i = 0
        for i, item in enumerate(items, 1):
            yield item
            now = time.perf_counter()
            if now - last >= every:
                self.log(f"{what}: {i}{of} ({now - t0:.0f} s)")
                last = now
        if last > t0:
            self.log(f"{what}: {i}{of} done ({time.perf_counter() - t0:.0f} s)")

    # -- writing into the run directory (atomically) ---------------------------------------------------------
    @property
    def path(self) -> Path:
        return self.run.path

    def write_bytes(self, rel: str, data: bytes) -> Path:
        from medrun.artifacts import atomic_write

        atomic_write(self.run.path / rel, data)
        return self.run.path / rel

    def write_text(self, rel: str, text: str) -> Path:
        return self.run.write_text(rel, text)

    def write_json(self, rel: str, obj) -> Path:
        return self.run.write_json(rel, obj)

    def write_csv(self, rel: str, rows: list[dict], *, digits: int | None = 6) -> Path:
        """One row per dict (columns from the union of keys, in first-seen order); floats rounded to ``digits``."""
        cols: dict[str, None] = {}
        for r in rows:
            cols.update(dict.fromkeys(r))
        buf = io.StringIO()
        if rows:
            w = csv.DictWriter(buf, fieldnames=list(cols))
            w.writeheader()
            w.writerows({k: round(v, digits) if digits is not None and isinstance(v, float) and math.isfinite(v)
                         else v for k, v in r.items()} for r in rows)
        return self.write_bytes(rel, buf.getvalue().encode())

    def write_npy(self, rel: str, array) -> Path:
        import numpy as np

        buf = io.BytesIO()
        np.save(buf, np.asarray(array), allow_pickle=False)
        return self.write_bytes(rel, buf.getvalue())

    def write_npz(self, rel: str, *, compressed: bool = True, **arrays) -> Path:
        """Several named arrays as one ``.npz`` (zip-compressed unless ``compressed=False``; no pickled objects)."""
        import numpy as np

        buf = io.BytesIO()
        save = np.savez_compressed if compressed else np.savez
        save(buf, allow_pickle=False, **{k: np.asarray(v) for k, v in arrays.items()})
        return self.write_bytes(rel, buf.getvalue())

    def write_png(self, rel: str, image) -> Path:
        """A PIL image, or an array (H, W) / (H, W, 3|4) of uint8 or uint16, as PNG."""
        from PIL import Image

        if not isinstance(image, Image.Image):
            image = Image.fromarray(image)
        buf = io.BytesIO()
        image.save(buf, format="PNG")
        return self.write_bytes(rel, buf.getvalue())

    def write_nifti(self, rel: str, array, affine) -> Path:
        """An array (label map, probability or weight map) with its 4×4 affine as NIfTI-1; ``.nii.gz`` is gzipped
        without a timestamp, so the same array gives the same bytes."""
        import gzip

        import nibabel as nib
        import numpy as np

        data = nib.Nifti1Image(np.asarray(array), np.asarray(affine, dtype=np.float64)).to_bytes()
        return self.write_bytes(rel, gzip.compress(data, mtime=0) if rel.endswith(".gz") else data)

    def write_like(self, rel: str, values, like) -> Path:
        """A prediction in the geometry of the input it came from (``datasets.imageio.Loaded``): NIfTI with the
        input's affine for a volume or DICOM series, PNG at the input's size for a 2-D image. ``rel`` has no
        suffix; the right one is added. Returns the path written."""
        from medrun.datasets.imageio import encode_like

        sfx, data = encode_like(values, like)
        return self.write_bytes(rel + sfx, data)

    @contextlib.contextmanager
    def figure(self, name: str, *, nrows: int = 1, ncols: int = 1, dpi: int = 100, **subplots):
        """``with ctx.figure("roc", figsize=(5, 4)) as (fig, ax): ...`` → ``figures/roc.png``, written atomically
        when the block ends (nothing is written if it raises). ``name`` may hold a subfolder or end in ``.png``."""
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, axes = plt.subplots(nrows, ncols, **subplots)
        try:
            yield fig, axes
            fig.tight_layout()
            self.save_figure(fig, name, dpi=dpi)
        finally:
            plt.close(fig)

    def save_figure(self, fig, name: str, *, dpi: int = 100, **savefig) -> Path:
        """A matplotlib figure made elsewhere → ``figures/<name>.png`` (atomically); the figure is closed."""
        from .report import save_figure

        rel = name if name.startswith("figures/") else f"figures/{name}"
        return save_figure(fig, self.run.path / (rel if rel.endswith(".png") else f"{rel}.png"), dpi=dpi, **savefig)

    def learning_curves(self) -> Path | None:
        """``figures/learning_curves.png`` from this run's ``logs/metrics.csv`` (Lightning's CSVLogger)."""
        from .report import learning_curves_figure

        fig = learning_curves_figure(self.run.path / "logs" / "metrics.csv")
        return None if fig is None else self.save_figure(fig, "learning_curves")

    # -- what the run read -----------------------------------------------------------------------------------
    def record_splits(self, splits: dict[str, Iterable], *, merge: bool = False) -> None:
        """Write split membership into ``data.lock.json``: ``{split: [item, ...]}`` where an item is a path (made
        relative to its data root), an object with ``path``/``image``/``file``, or any id (written as ``str``).
        ``merge`` adds to splits already recorded (a stage that records several protocols)."""
        lock = json.loads((self.run.path / "data.lock.json").read_text())
        roots = [Path(r).resolve() for r in self.data_roots.values()]
        recorded = {k: [_member(x, roots) for x in v] for k, v in splits.items()}
        lock["splits"] = {**lock.get("splits", {}), **recorded} if merge else recorded
        self.run.write_json("data.lock.json", lock)

    def predict_inputs(self, source: str | Path, suffixes: Iterable[str] = IMAGE_SUFFIXES, *,
                       what: str = "images", series: bool = False) -> list[Path]:
        """The files a ``predict`` stage was pointed at: one file, a folder (its files with ``suffixes``, sorted,
        hidden files skipped), or a glob. ``series``: a folder holding one DICOM series is one input too (the
        folder itself, or each such sub-folder). Missing or empty → DataError naming the place and the fix."""
        from medrun.errors import DataError

        suffixes = tuple(s.lower() for s in suffixes)
        src = Path(str(source)).expanduser()

        def wanted(p: Path) -> bool:
            if p.name.startswith("."):
                return False
            if p.is_dir():
                from medrun.datasets.imageio import is_dicom_series

                return series and is_dicom_series(p)
            return p.is_file() and any(p.name.lower().endswith(s) for s in suffixes)

        if any(ch in str(source) for ch in "*?["):
            import glob

            found = sorted(map(Path, glob.glob(str(src), recursive=True)))
            files = [p for p in found if wanted(p)]
            self._log_skipped([p for p in found if p.is_file() and not p.name.startswith(".") and not wanted(p)],
                              suffixes)
        elif series and wanted(src):
            files = [src]
        elif src.is_file():
            files = [src] if wanted(src) else []
            if not files:
                raise DataError(f"predict.input {src} is not one of {', '.join(suffixes)}",
                                fix=f"point predict.input at {what} ({', '.join(suffixes)})")
        elif src.is_dir():
            found = sorted(p for p in src.iterdir() if not p.name.startswith("."))
            files = [p for p in found if wanted(p)]
            self._log_skipped([p for p in found if not wanted(p)], suffixes)
        else:
            raise DataError(
                f"predict.input not found: {src}", fix=f"-o predict.input=/path/to/{what.replace(' ', '_')}"
            )
        if not files:
            raise DataError(f"no {what} in {src} (looked for {', '.join(suffixes)})",
                            fix=f"point predict.input at a folder of {what}")
        return files

    def _log_skipped(self, skipped: list[Path], suffixes: tuple[str, ...], show: int = 20) -> None:
        """A line for each input a predict stage leaves out, and why (a .dcm among PNGs used to vanish silently)."""
        for p in skipped[:show]:
            why = "a folder" if p.is_dir() else f"not one of {', '.join(suffixes)}"
            self.log(f"skipped {p}: {why}")
        if len(skipped) > show:
            self.log(f"skipped {len(skipped) - show} more inputs of other kinds")

    def parent_file(self, rel: str) -> Path:
        """A file of the parent run, after checking it against the parent's ``MANIFEST.sha256``."""
        from medrun.artifacts import sha256_file
        from medrun.errors import DataError, UsageError

        if self.parent is None:
            raise UsageError(f"stage '{self.stage}' needs a finished run", fix="pass --run ID")
        path = self.parent.path / rel
        recorded = self.parent.recorded_hashes().get(rel)
        if recorded is None:
            raise UsageError(f"{self.parent.path} has no {rel} in its MANIFEST.sha256",
                             fix="pass a run of the stage that writes it, or --checkpoint FILE")
        if sha256_file(path) != recorded:
            raise DataError(f"{path} does not match its run's MANIFEST.sha256",
                            fix="the run was altered after it finished; run it again with --force")
        return path

    # -- inference and child runs --------------------------------------------------------------------------
    def predictor(self, **inference):
        """A :class:`~medrun.pipelines.predictor.Predictor` on this manifest's hardware (``trainer:``) with its
        ``inference:`` settings (sliding window for volumes), overridable by keyword."""
        from .predictor import Predictor

        return Predictor.from_manifest(self.manifest, track=self.track, **inference)

    def sweep(self, children, *, title: str = "children") -> list:
        """Run each :class:`~medrun.pipelines.sweep.Child` (a fold, seed or variant: dotted overrides of this
        manifest, usually of another stage) as a run of its own, reused when complete; see ``pipelines/sweep.py``."""
        from medrun.errors import UsageError

        if self.launcher is None:
            raise UsageError(f"stage '{self.stage}' runs child stages, which needs the runner",
                             fix="run it through `medrun`")
        return self.launcher(list(children), title=title)


def _member(item, roots: list[Path]) -> str:
    value = next((getattr(item, a) for a in ("path", "image", "file") if hasattr(item, a)), item)
    if isinstance(value, Path) or (isinstance(value, str) and ("/" in value or "\\" in value)):
        p = Path(value).resolve()
        for r in roots:
            if p.is_relative_to(r):
                return p.relative_to(r).as_posix()
        return str(p)
    return str(value)


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
        from medrun.errors import UsageError

        from . import training

        net = self.build_model() if net is None else net
        if self.ctx.checkpoint is not None:
            path = self.ctx.checkpoint
        elif self.ctx.parent is not None:
            path = self.ctx.parent_file(f"checkpoints/{weights}")
        else:
            raise UsageError(
                f"stage '{self.ctx.stage}' needs trained weights", fix="pass --run ID or --checkpoint FILE"
            )
        self.ctx.run.update_info(parent_weights_sha256=sha256_file(path))
        return training.load_weights(net, path, prefix=prefix)

    def split_of(self, splits: dict, name: str | None = None):
        """``splits[name]`` (default ``eval.split``), or a UsageError listing the splits there are."""
        from medrun.errors import UsageError

        name = name or self.m.eval.split
        if name not in splits:
            raise UsageError(f"unknown split '{name}'", fix=f"use --split {' | '.join(splits)}")
        return splits[name]
