"""The stage runner: manifest + options → validated manifest → data → fingerprints → run id → run directory →
the pipeline's stage → metrics, paper.md, MANIFEST.sha256.

``plan()`` does everything that needs no torch (so ``--dry-run`` and ``show`` stay quick until a model is
built); ``execute()`` runs the stage.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import fcntl
import functools
import json
import os
import shutil
import sys
import tempfile
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from medrun import datasets, manifests
from medrun.artifacts import (
    RunDir,
    drop_keys,
    find_runs,
    resolve_run,
    run_id,
    run_path,
    sha256_file,
    sha256_json,
)
from medrun.artifacts.fingerprint import (
    StatCache,
    code_changes,
    code_fingerprint,
    combine,
    fingerprint_tree,
    stat_cache_path,
)
from medrun.artifacts.replace import FIXTURE_MARKER
from medrun.errors import DataError, EnvError, UsageError, unknown_name
from medrun.manifests.schema import ID_EXCLUDED

from . import get as get_pipeline
from .base import StageContext


def cache_dir() -> Path:
    return Path(os.environ.get("MEDRUN_CACHE", Path.home() / ".cache" / "medrun"))


@dataclass
class Request:
    pipeline: str
    stage: str
    dataset: str | None = None
    manifest: Path | None = None
    overrides: list[str] = field(default_factory=list)
    data_dir: Path | None = None
    fixture: bool = False
    runs_dir: Path = Path("runs")
    seed: int | None = None
    force: bool = False
    dry_run: bool = False
    trainer: dict = field(default_factory=dict)
    run_ref: str | None = None
    checkpoint: Path | None = None
    split: str | None = None
    argv: list[str] = field(default_factory=list)
    log_to: tuple[str, ...] = ()  # extra experiment trackers: "mlflow"
    launcher: str = "local"  # how sweep children run (pipelines/launch.py); hardware: never part of a run id
    store: str | None = None  # a shared run store to reuse complete runs from (artifacts/store.py)


@dataclass
class Plan:
    request: Request
    spec: object
    manifest: object  # validated pydantic model
    manifest_dict: dict
    data_roots: dict[str, Path]
    data_fp: dict
    code_fp: dict
    run_id: str
    path: Path
    parent: RunDir | None
    checkpoint_sha: str | None


def _dataset_of_parent(req: Request, spec) -> None:
    """A stage given ``--run ID`` and no ``--dataset``/``--manifest`` takes the dataset from that run, and its data:
    the fixture if it ran on one, else its ``dataset.root`` — unless ``--fixture`` or ``--data-dir`` say otherwise."""
    if req.manifest is not None or req.dataset or not req.run_ref or req.stage not in spec.parents:
        return
    run = resolve_run(req.runs_dir, req.run_ref, spec.slug)
    info = run.info()
    if info.get("pipeline") != spec.slug or info.get("dataset") not in spec.datasets:
        return  # _find_parent names the mismatch; without a dataset, load_manifest asks for one
    req.dataset = info["dataset"]
    if req.fixture or req.data_dir is not None:
        return
    if info.get("fixture"):
        req.fixture = True
        return
    try:
        root = (yaml.safe_load((run.path / "manifest.yaml").read_text()) or {}).get("dataset", {}).get("root")
    except (OSError, yaml.YAMLError, AttributeError):
        root = None
    if root:
        req.data_dir = Path(root)


def load_manifest(req: Request, spec) -> tuple[object, manifests.Resolved]:
    _dataset_of_parent(req, spec)
    if req.fixture and req.data_dir is not None:
        raise UsageError(f"--fixture and --data-dir {req.data_dir} both name the data",
                         fix="drop --data-dir to run on the generated miniature, or drop --fixture to use your folder")
    if req.manifest is None:
        if not req.dataset:
            raise UsageError(f"which dataset? pass --dataset ({', '.join(spec.datasets)}) or --manifest FILE")
        if req.dataset not in spec.datasets:
            raise unknown_name(f"{spec.slug} dataset", req.dataset, spec.datasets,
                               fallback=f"choose from {', '.join(spec.datasets)}")
        path = manifests.manifest_path(spec.slug, req.dataset, fixture=req.fixture)
    else:
        path = Path(req.manifest)
    resolved = manifests.load_file(path)
    extra: dict = {}
    if req.seed is not None:
        extra["seed"] = req.seed
    if req.data_dir is not None:
        extra["dataset.root"] = str(Path(req.data_dir).expanduser())
    if req.split is not None:
        extra["eval.split"] = req.split
    extra.update({f"trainer.{k}": v for k, v in req.trainer.items() if v is not None})
    resolved = manifests.apply_overrides(resolved, req.overrides)
    resolved = manifests.apply_overrides(resolved, extra)
    if resolved.data.get("pipeline") not in (None, spec.slug):
        raise UsageError(f"{path}: manifest is for pipeline '{resolved.data['pipeline']}', not '{spec.slug}'")
    m = manifests.validate(resolved, spec.manifest_cls())
    if req.dataset and req.manifest is not None and m.dataset.name != req.dataset:
        raise UsageError(f"{path}: manifest is for dataset '{m.dataset.name}', not '{req.dataset}'",
                         fix="drop --dataset or pass the matching manifest")
    return m, resolved


def manifest_seeds(req: Request) -> list[int] | None:
    """The manifest's ``seeds:`` list (replicates), unless the command fixes one ``--seed``."""
    if req.seed is not None:
        return None
    m, _ = load_manifest(req, get_pipeline(req.pipeline))
    return list(m.seeds) if m.seeds else None


def fixture_root(name: str, seed: int = 0, log=print) -> Path:
    """Generate the dataset's miniature once into the cache and return its root.

    Several processes may ask for it at once (parallel CI jobs, sweeps): one generates it under a lock while the
    others wait and then find it; earlier versions (of an older dataset module) are removed only by the process
    holding that lock, and only when no process still uses them (each user holds a shared lock, ``_use_fixture``).
    """
    import importlib

    info = datasets.get(name)
    version = sha256_file(importlib.import_module(info.fixture.split(":")[0]).__file__)[:10]
    folder = cache_dir() / "fixtures"
    target = folder / f"{name}-seed{seed}-{version}"
    marker = target / FIXTURE_MARKER
    _use_fixture(target)
    if not marker.exists():
        with _flocked(cache_dir() / "locks" / f"{name}-seed{seed}.lock"):
            if not marker.exists():  # another process may have written it while this one waited
                log(f"writing the {name} fixture to {target}")
                with _spinner(f"writing the {name} fixture"):
                    write_fixture(name, target, seed, force=False, lost_race_ok=True)
            for old in folder.glob(f"{name}-seed{seed}-*"):  # earlier versions of this dataset's module
                if old != target:
                    _remove_unused_fixture(old)
    return target / json.loads(marker.read_text())["root"]


def write_fixture(name: str, out: Path, seed: int = 0, *, force: bool, lost_race_ok: bool = False) -> Path:
    """Write the dataset's miniature as ``out`` (generated beside it, then renamed into place; an earlier fixture
    there is replaced only with ``force``) and return its root, the folder to pass as ``--data-dir``."""
    from medrun.artifacts.replace import replace_dir

    info = datasets.get(name)
    target, root = replace_dir(
        out, lambda tmp: Path(info.make_fixture(tmp, seed)), marker=FIXTURE_MARKER, force=force,
        marker_data=lambda tmp, root: {"dataset": name, "seed": seed, "root": root.relative_to(tmp).as_posix()},
        lost_race_ok=lost_race_ok)
    return target / json.loads((target / FIXTURE_MARKER).read_text())["root"]


_FIXTURES_IN_USE: dict[Path, int] = {}  # fixture version -> fd holding its shared use-lock until this process ends


def _use_lock(version_dir: Path) -> Path:
    return cache_dir() / "locks" / f"{version_dir.name}.use"


def _use_fixture(target: Path) -> None:
    """Hold a shared lock on this fixture version for the life of the process, so that no other process removes it
    while this one reads it. A lock file removed (with its version) while this one waited is taken afresh."""
    if target in _FIXTURES_IN_USE:
        return
    path = _use_lock(target)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        os.close(os.open(path, os.O_RDWR | os.O_CREAT, 0o644))
    except OSError:  # a read-only cache: nobody removes anything from it; writing a fixture there reports the error
        return
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        fcntl.flock(fd, fcntl.LOCK_SH)
        try:
            if os.stat(path).st_ino == os.fstat(fd).st_ino:
                break
        except FileNotFoundError:
            pass
        os.close(fd)
    _FIXTURES_IN_USE[target] = fd


def _remove_unused_fixture(old: Path) -> None:
    """Remove an earlier fixture version unless another process holds its use-lock (then leave it for later)."""
    from medrun.artifacts.replace import remove_dir

    path = _use_lock(old)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return
    try:
        if remove_dir(old, marker=FIXTURE_MARKER):
            path.unlink(missing_ok=True)
    finally:
        os.close(fd)


@contextlib.contextmanager
def _flocked(path: Path):
    """An exclusive ``flock`` on ``path`` (created if needed) for the duration of the block."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


LOG_TARGETS = ("mlflow",)


def _check_log_targets(req: Request) -> None:
    for target in req.log_to:
        if target not in LOG_TARGETS:
            raise UsageError(f"unknown --log target '{target}'", fix=f"use --log {' | '.join(LOG_TARGETS)}")
        import importlib.util

        if importlib.util.find_spec(target) is None:
            from medrun.errors import EnvError

            raise EnvError(f"--log {target}: {target} is not installed", fix="pip install mlflow-skinny (or mlflow)")


def mlflow_logger(p: Plan):
    """Lightning's MLFlowLogger for this run: experiment = pipeline, run name = <stage>-<id12>, tagged with the run
    id and directory. Tracking URI: MLFLOW_TRACKING_URI, else a local file store ``<runs>/.mlruns``."""
    from lightning.pytorch.loggers import MLFlowLogger

    uri = os.environ.get("MLFLOW_TRACKING_URI")
    if not uri:
        os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")  # MLflow 3 keeps the file store behind this switch
        uri = f"file:{Path(p.request.runs_dir).resolve() / '.mlruns'}"
    return MLFlowLogger(experiment_name=p.spec.slug, run_name=f"{p.request.stage}-{p.run_id[:12]}", tracking_uri=uri,
                        tags={"medrun.run_id": p.run_id, "medrun.run_dir": str(p.path), "medrun.stage": p.request.stage,
                              "medrun.dataset": p.manifest.dataset.name})


def _flat(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(_flat(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


@functools.lru_cache(maxsize=256)
def _default_manifest(pipeline: str, dataset: str, fixture: bool) -> dict | None:
    try:
        spec = get_pipeline(pipeline)
    except UsageError:
        return None
    path = manifests.manifest_path(spec.slug, dataset, fixture=fixture)
    if not path.is_file():
        return None
    return manifests.validate(manifests.load_file(path), spec.manifest_cls()).model_dump(mode="json")


def default_manifest(info: dict, manifest: dict) -> dict | None:
    """The validated default manifest of a run's pipeline and dataset (its fixture manifest for a fixture run), as
    the run's ``manifest.yaml`` would hold it had nothing been overridden; None when there is none. A fixture
    run's data folder is the generated one, so it is taken from the run."""
    out = _default_manifest(str(info.get("pipeline")), str(info.get("dataset")), bool(info.get("fixture")))
    if out is None:
        return None
    out = json.loads(json.dumps(out))
    if info.get("fixture") and isinstance(out.get("dataset"), dict):
        out["dataset"]["root"] = (manifest.get("dataset") or {}).get("root")
    return out


def plan(req: Request, log=print) -> Plan:
    _check_log_targets(req)
    spec = get_pipeline(req.pipeline)
    if req.stage not in spec.stages:
        raise UsageError(f"{spec.slug} has no stage '{req.stage}'", fix=f"its stages: {', '.join(spec.stages)}")
    m, _ = load_manifest(req, spec)
    if req.fixture:
        m.dataset.root = str(fixture_root(m.dataset.name, 0, log))
    elif not m.dataset.root:
        raise DataError(f"no data folder for dataset '{m.dataset.name}'",
                        fix=f"pass --data-dir ({datasets.get(m.dataset.name).source}), or use --fixture")
    data_roots = _data_paths(spec, m)
    for root in data_roots.values():
        if not root.exists():
            info = datasets.get(m.dataset.name)
            raise DataError(f"data folder not found: {root} (dataset.root of {m.dataset.name})",
                            fix=f"download {info.source} and pass --data-dir DIR or set MEDRUN_DATA; "
                                f"or add --fixture to run on a generated miniature")
    fps = fingerprint_data(data_roots, m.fingerprint, log)
    datasets.check_headers_once(
        fps, cache_dir() / "header-checks" / f"{combine(fps)}.ok"
    )  # corrupt images fail before fit
    code = stage_code(spec)
    mdict = m.model_dump(mode="json")
    parent, ckpt_sha = None, None
    if req.stage in spec.parents:
        parent, ckpt_sha = _find_parent(req, spec, mdict, combine(fps))
    inputs = stage_inputs(m, req.stage)  # after the parent lookup: the parent's data fingerprint has no inputs
    if inputs:
        fps = {**fps, **fingerprint_data(inputs, m.fingerprint, log)}
    rid = run_id(manifest=identity_manifest(mdict), code=code["sha256"], data=combine(fps), stage=req.stage,
                 parent=(parent.info()["id"] if parent else ckpt_sha))
    return Plan(req, spec, m, mdict, data_roots, fps, code, rid, run_path(req.runs_dir, spec.slug, req.stage, rid),
                parent, ckpt_sha)


# Modules every stage runs whatever the pipeline; their imports (artifacts, manifests, …) follow from them.
RUNNER_CODE = ("medrun", "medrun.errors", "medrun.pipelines.runner", "medrun.pipelines.base",
               "medrun.pipelines.training", "medrun.pipelines.predictor", "medrun.pipelines.report",
               "medrun.pipelines.sweep", "medrun.pipelines.replicates")


def code_roots(spec) -> list[str]:
    """Start modules of a pipeline's code fingerprint: the runner layer, the pipeline's whole package, and the
    modules of its datasets (the dataset registry imports them by name, which the import graph cannot follow).

    The CLI is not among them: what it passes on (manifest, data, stage) is hashed into the run id itself."""
    package = ".".join(spec.impl.split(":")[0].split(".")[:3])
    reg = datasets.registry()
    named = [reg[d] for d in spec.datasets if d in reg]
    defining = {n for n, mod in list(sys.modules.items()) if n.startswith("medrun.datasets.")
                and any(i in named for i in getattr(mod, "DATASETS", ()))}
    return [*RUNNER_CODE, f"{package}.*", *sorted(defining | {i.fixture.split(":")[0] for i in named})]


def stage_code(spec) -> dict:
    """The code fingerprint of the pipeline's stages (``artifacts.fingerprint.code_fingerprint``)."""
    return code_fingerprint(code_roots(spec))


def fingerprint_data(roots: dict[str, Path], mode: str, log=print) -> dict[str, dict]:
    """Fingerprint each data folder (content hashes cached by path, size and mtime), with progress."""
    cache = StatCache(stat_cache_path())
    try:
        if not _interactive():
            t0 = time.perf_counter()
            out = {name: fingerprint_tree(root, cache, mode) for name, root in roots.items()}
            if time.perf_counter() - t0 > 2:
                log(f"fingerprinted {sum(len(f['files']) for f in out.values())} data files "
                    f"in {time.perf_counter() - t0:.1f} s")
            return out
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        out = {}
        with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                      transient=True) as bar:
            for name, root in roots.items():
                task = bar.add_task(f"fingerprinting {name}", total=None)
                out[name] = fingerprint_tree(
                    root, cache, mode, progress=lambda i, n, t=task: bar.update(t, completed=i, total=n)
                )
        return out
    finally:
        cache.close()


def _spinner(text: str):
    import contextlib

    if not _interactive():
        return contextlib.nullcontext()
    from rich.console import Console

    return Console(stderr=True).status(text)


def stage_inputs(m, stage: str) -> dict[str, Path]:
    """``{"<section>.input": path}`` when the stage's manifest section (``predict``, ``extract``, ``denoise`` …) names
    an input file or folder that exists: its content joins the data fingerprint, so the same command on a folder
    whose files changed is a new run, never the old result; a missing one is left to the stage's own message."""
    section = getattr(m, stage.replace("-", "_"), None)
    src = getattr(section, "input", None)
    if not isinstance(src, str | Path) or not str(src):
        return {}
    path = Path(src).expanduser()
    return {f"{stage.replace('-', '_')}.input": path} if path.exists() else {}


def _data_paths(spec, m) -> dict[str, Path]:
    # A pipeline may name several folders via a `data_paths(manifest)` function beside its manifest class;
    # by default the dataset root.
    fn = getattr(spec.config_module(), "data_paths", None)
    return {k: Path(v) for k, v in (fn(m) if fn else {"data": m.dataset.root}).items()}


def world_size(trainer: dict) -> int:
    """How many processes train (devices × nodes), resolving ``auto``/-1 as Lightning does: 1 on CPU, every
    visible GPU otherwise."""
    devices, nodes = trainer.get("devices", "auto"), trainer.get("num_nodes", 1) or 1
    if isinstance(devices, list):
        n = len(devices)
    elif isinstance(devices, int) and devices > 0:
        n = devices
    elif isinstance(devices, str) and devices.isdigit():
        n = int(devices)
    elif trainer.get("accelerator", "auto") == "cpu":
        n = 1
    else:
        import torch

        n = max(1, torch.cuda.device_count())
    return n * nodes


def identity_manifest(mdict: dict) -> dict:
    """The manifest as the run id sees it: without where data lies, the paper's numbers and smoke thresholds, and
    with the device list and node count replaced by the world size, which (per-device batches being what
    Lightning's DDP uses) is all of them that changes the effective batch."""
    out = drop_keys(mdict, (*ID_EXCLUDED, "trainer.devices", "trainer.num_nodes"))
    if "trainer" in mdict:
        n = world_size(mdict["trainer"])
        if n > 1:
            out.setdefault("trainer", {})["world_size"] = n
    return out


def train_key(mdict: dict, spec) -> str:
    """What identifies 'the same training': the manifest without where data lies, hardware (and precision and the
    ``inference:`` settings, so an eval on another device, in bf16 or with another window finds the train run it
    evaluates), or the sections named
    after stages whose runs no other stage consumes (``eval``, ``predict``, ``explain``, ``cv``, ``ablate`` …), so a
    train run is found again by an eval or explain with other settings for those stages. A stage whose runs are
    consumed (``train``, or a ``pretrain`` under it) keeps its section."""
    others = [s.replace("-", "_") for s in spec.stages if s not in spec.parents.values()]  # stages no stage consumes
    return sha256_json(
        drop_keys(
            mdict,
            (
                *ID_EXCLUDED,
                "eval",
                "inference",
                *others,
                "trainer.devices",
                "trainer.num_nodes",
                "trainer.strategy",
                "trainer.accelerator",
                "trainer.precision",
            ),
        )
    )


def _find_parent(req: Request, spec, mdict: dict, data_sha: str) -> tuple[RunDir | None, str | None]:
    if req.checkpoint is not None:
        ck = Path(req.checkpoint)
        if not ck.is_file():
            raise UsageError(f"checkpoint not found: {ck}", fix="check the --checkpoint path")
        return None, sha256_file(ck)
    want = spec.parents[req.stage]
    if req.run_ref:
        run = resolve_run(req.runs_dir, req.run_ref)
        info = run.info()
        if info.get("pipeline") != spec.slug or info.get("stage") != want:
            raise UsageError(
                f"run {run.path} is a {info.get('pipeline')} {info.get('stage')} run, not a {spec.slug} {want} run",
                fix=f"pass a run id from `ls {Path(req.runs_dir) / spec.slug / want}`",
            )
        if not run.is_complete():
            raise UsageError(f"run {run.path} is not complete (status: {info.get('status', 'unknown')})",
                             fix="finish it by running its train command again, or pick a complete run")
        return run, None
    key = train_key(mdict, spec)
    for run in find_runs(req.runs_dir, spec.slug, want):
        info = run.info()
        if info.get("train_key") == key and info.get("data_sha256") == data_sha and run.is_complete():
            return run, None
    how = f"medrun {want} {spec.slug} --dataset {mdict['dataset']['name']}" + (" --fixture" if req.fixture else "")
    raise UsageError(f"no complete {want} run of this manifest under {Path(req.runs_dir) / spec.slug}",
                     fix=f"run `{how}` first, or pass --run ID or --checkpoint FILE")


def _interactive() -> bool:
    return sys.stdout.isatty() and os.environ.get("MEDRUN_PLAIN") is None


def process_rank() -> int:
    """This process's global rank under Lightning's DDP launcher, torchrun or SLURM (0 when not distributed)."""
    for var in ("RANK", "SLURM_PROCID"):
        if os.environ.get(var, "").isdigit() and int(os.environ[var]) > 0:
            return int(os.environ[var])
    local, node = os.environ.get("LOCAL_RANK", "0"), os.environ.get("NODE_RANK", "0")
    return int(node) * 1000 + int(local) if local.isdigit() and node.isdigit() else 0


def execute(p: Plan, log=print) -> dict:
    """Run the plan into its run directory. Under multi-process training only rank 0 writes that directory; the
    other ranks (Lightning re-runs the same command for them) run the stage in a scratch copy that is removed
    afterwards, so exactly one run directory results."""
    if process_rank() > 0:
        return _execute_worker(p)
    return _execute(p, log)


def _execute_worker(p: Plan) -> dict:
    real = RunDir(p.path)
    if real.is_complete() and not p.request.force:
        return {"run_id": p.run_id, "run_dir": str(p.path), "status": "complete", "reused": True, "metrics": {}}
    scratch = Path(tempfile.mkdtemp(prefix=f"medrun-rank{process_rank()}-"))
    try:
        last = p.path / "checkpoints" / "last.ckpt"
        if last.exists() and not p.request.force:  # resume from the same checkpoint rank 0 resumes from
            (scratch / "run" / "checkpoints").mkdir(parents=True)
            shutil.copy2(last, scratch / "run" / "checkpoints" / "last.ckpt")
        worker = dataclasses.replace(p, path=scratch / "run",
                                     request=dataclasses.replace(p.request, force=False))
        return _execute(worker, log=lambda *a, **k: None)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def _execute(p: Plan, log=print) -> dict:
    req = p.request
    run = RunDir(p.path)
    if req.store and not req.force and not run.is_complete():  # a build cache: a complete stored run is reused
        from medrun.artifacts.store import fetch

        if fetch(req.store, req.runs_dir, p.path, p.run_id, log=log):
            log(f"reused from the store {req.store}: {p.path}")
    if run.is_complete() and not req.force:
        return {
            "run_id": p.run_id,
            "run_dir": str(p.path),
            "status": "complete",
            "reused": True,
            "metrics": run.metrics(),
        }
    from . import training

    if getattr(p.manifest, "trainer", None) is not None:  # a wrong trainer setting stops here, before the run exists
        training.check_trainer(p.manifest.trainer)
    run.open(force=req.force)
    try:
        _write_start(p, run)
    except BaseException as e:  # e.g. a full disk: no run.json yet (or a stale one without MANIFEST.sha256)
        run.close()
        env = env_error(e, run.path)
        if env is not None:
            raise env from None
        raise
    ctx = StageContext(stage=req.stage, manifest=p.manifest, run=run, data_roots=p.data_roots, fixture=req.fixture,
                       parent=p.parent, checkpoint=Path(req.checkpoint) if req.checkpoint else None, log=log,
                       interactive=_interactive(), spec=p.spec, run_id=p.run_id,
                       world_size=world_size(p.manifest_dict.get("trainer", {})), cache_dir=cache_dir(),
                       launcher=_launcher(p, run, log))
    trackers = [mlflow_logger(p)] if "mlflow" in req.log_to else []
    ctx.extras["loggers"] = trackers
    with training.sticky_interrupts():  # Ctrl-C / SIGTERM: interrupted, resumable
        try:
            training.apply_determinism(p.manifest.determinism, p.manifest.seed)
            pipeline = p.spec.load()(p.manifest, ctx)
            metrics = pipeline.run_stage(req.stage) or {}
            run.write_json("metrics.json", metrics)
            for t in trackers:  # the final metrics and the manifest, also for stages that train nothing
                t.log_hyperparams(_flat(p.manifest_dict))
                t.log_metrics({f"final/{k}": float(v) for k, v in metrics.items()
                               if isinstance(v, (int, float)) and not isinstance(v, bool)})
                t.finalize("success")
            if not (run.path / "paper.md").exists():
                from .report import paper_md

                run.write_text("paper.md", paper_md(p.spec, p.manifest, metrics, ctx))
            run.append_event("end", status="complete")
            _attach_launch_log(p, run)
            run.seal()
        except KeyboardInterrupt:
            with contextlib.suppress(OSError):  # a full disk must not hide the interrupt
                run.update_info(status="interrupted")
                run.append_event("end", status="interrupted")
            _close_trackers(trackers, "killed")
            raise
        except BaseException as e:
            _close_trackers(trackers, "failed")
            env = env_error(e, run.path)
            msg = str(env or e)
            with contextlib.suppress(OSError):  # best effort on a full disk; MANIFEST.sha256 is absent either way
                run.update_info(status="failed", error=msg.splitlines()[0] if msg else type(e).__name__)
                (run.path / "logs" / "error.log").write_text(traceback.format_exc())
                run.append_event("end", status="failed")
            if env is not None:
                raise env from None
            raise
        finally:
            run.close()
    return {"run_id": p.run_id, "run_dir": str(p.path), "status": "complete", "reused": False, "metrics": metrics}


def _attach_launch_log(p: Plan, run: RunDir) -> None:
    """A sweep child run by a launcher (``pipelines/launch.py``): its output so far into ``logs/launcher.log``,
    sealed with the run."""
    src = os.environ.get("MEDRUN_CHILD_LOG")
    if not src or os.path.abspath(os.environ.get("MEDRUN_CHILD_RUN", "")) != os.path.abspath(p.path):
        return
    sys.stdout.flush()
    sys.stderr.flush()
    with contextlib.suppress(OSError):
        run.write_text("logs/launcher.log", Path(src).read_text(errors="replace"))


def _launcher(p: Plan, run: RunDir, log):
    """What ``ctx.sweep`` calls: run the children (``pipelines/sweep.py``) and name them in this run's run.json."""

    def launch(children, title: str = "children"):
        from .sweep import run_children

        done = run_children(p.request, children, log=log, title=title)
        # a stage may run several sweeps (transfer: train runs, then attack runs on them): run.json lists them all
        run.update_info(children=[*run.info().get("children", []),
                                  *({"name": c.child.name, "stage": c.child.stage, "id": c.run_id,
                                     "run_dir": str(c.run_dir), "reused": c.reused} for c in done)])
        return done

    return launch


def _write_start(p: Plan, run: RunDir) -> None:
    """What a run holds from its start: the resolved manifest, environment, data lock and a ``running`` run.json."""
    from medrun.artifacts.env import capture_env

    req = p.request
    started = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    run.write_text("manifest.yaml", yaml.safe_dump(p.manifest_dict, sort_keys=False))
    env = capture_env()
    run.write_json("env.json", env)
    run.write_json("data.lock.json", {"fingerprint": combine(p.data_fp), "trees": p.data_fp, "splits": {}})
    run.write_json(
        "run.json",
        {
            "id": p.run_id,
            "pipeline": p.spec.slug,
            "stage": req.stage,
            "status": "running",
            "dataset": p.manifest.dataset.name,
            "fixture": req.fixture,
            "parent": p.parent.info()["id"] if p.parent else None,
            "parent_dir": str(p.parent.path) if p.parent else None,
            "checkpoint": str(req.checkpoint) if req.checkpoint else None,
            "checkpoint_sha256": p.checkpoint_sha,
            "command": req.argv,
            "started": started,
            "ended": None,
            "manifest_sha256": sha256_json(p.manifest_dict),
            "train_key": train_key(p.manifest_dict, p.spec),
            "code": p.code_fp,
            "data_sha256": combine(p.data_fp),
            "env_sha256": sha256_json(env),
            "seed": p.manifest.seed,
            "determinism": p.manifest.determinism,
            "pid": os.getpid(),
            "world_size": world_size(p.manifest_dict.get("trainer", {})),
            **intensity_info(p.manifest_dict.get("dataset", {})),
        },
    )
    run.append_event("start", stage=req.stage)


def intensity_info(dataset: dict) -> dict:
    """``{"intensity": …}`` for run.json where the dataset reads images through ``datasets.imageio``: how stored
    values became the network's input, in words (a window, percentiles, a scale, or the stored type's range)."""
    if "intensity" not in dataset:
        return {}
    from medrun.datasets.imageio import Intensity

    return {"intensity": Intensity(**(dataset["intensity"] or {})).describe()}


ENV_ERRNOS = {  # errno: (what happened, what to do)
    errno.ENOSPC: (
        "no space left on the device",
        "free space there, or write elsewhere (--runs-dir, MEDRUN_CACHE, --out)",
    ),
    errno.EDQUOT: ("disk quota exceeded", "free space there, or write elsewhere (--runs-dir, MEDRUN_CACHE, --out)"),
    errno.EFBIG: (
        "file too large for the file-size limit",
        "raise the limit (ulimit -f unlimited) or write to another disk",
    ),
    errno.EROFS: ("read-only file system", "write somewhere writable (--runs-dir, MEDRUN_CACHE, --out)"),
    errno.EACCES: (
        "permission denied",
        "fix the folder's permissions, or use another (--runs-dir, MEDRUN_CACHE, --out)",
    ),
    errno.EPERM: (
        "operation not permitted",
        "fix the folder's permissions, or use another (--runs-dir, MEDRUN_CACHE, --out)",
    ),
}


def env_error(e: BaseException, where: Path | None = None) -> EnvError | None:
    """The EnvError (exit 4) for a full disk, a file-size limit or a read-only or forbidden folder, naming the path
    (``where`` when the OSError has none); None for anything else. The CLI and the runner's failure handler both use
    it. Followed through ``raise … from`` and through a RuntimeError's context (torch reports a failed write as a
    RuntimeError raised while handling the OSError), not through other handled exceptions, which may be unrelated."""
    seen: set[int] = set()
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        if isinstance(e, OSError) and e.errno in ENV_ERRNOS:
            what, fix = ENV_ERRNOS[e.errno]
            return EnvError(f"{e.filename or where or 'a file'}: {what}", fix=fix)
        e = e.__cause__ or (e.__context__ if isinstance(e, RuntimeError) else None)
    return None


def _close_trackers(trackers: list, status: str) -> None:
    for t in trackers:
        with contextlib.suppress(Exception):  # a tracker's failure must not hide the run's own
            t.finalize(status)


def build_model(spec, manifest):
    return spec.load()(manifest, None).build_model()


def rerun(original: RunDir, argv: list[str], *, compare: bool = False, log=print) -> dict:
    """Run a complete run's stage again from its own manifest into ``<runs>/.reruns/<time>_<pid>/`` (the original
    is never written); with ``compare``, compare metrics and weights (``artifacts.reruns.compare_runs``)."""
    from medrun.artifacts.reruns import compare_runs

    info = original.info()
    if not original.is_complete():
        raise UsageError(f"run {original.path} is not complete (status: {info.get('status', 'unknown')}); "
                         "there is nothing finished to re-run and compare",
                         fix="finish it with the command in its run.json, or pick a complete run")
    req = rerun_request(original, argv)
    log(f"re-running {original.path} into {req.runs_dir} (the original is not touched)")
    p = plan(req, log=log)
    warnings = []
    if p.code_fp["sha256"] != (info.get("code") or {}).get("sha256"):
        changed = [f for fs in code_changes(info.get("code") or {}, p.code_fp).values() for f in fs]
        warnings.append("the installed code differs from the original's (code fingerprint changed"
                        + (f": {', '.join(changed[:5])}{' …' * (len(changed) > 5)})" if changed else ")"))
    if combine(p.data_fp) != info.get("data_sha256"):
        warnings.append("the data differs from the original's (data fingerprint changed)")
    for w in warnings:
        log(f"warning: {w}")
    result = execute(p, log=log)
    out = {"original": str(original.path), "rerun": result["run_dir"], "run_id": result["run_id"],
           "same_id": result["run_id"] == info.get("id"), "warnings": warnings}
    if compare:
        out["comparison"] = compare_runs(original, RunDir(Path(result["run_dir"])))
    return out


def rerun_request(original: RunDir, argv: list[str]):
    """A ``pipelines.runner.Request`` that runs the original's stage again from its own ``manifest.yaml``."""
    from medrun.artifacts.reruns import rerun_root

    info = original.info()
    return Request(pipeline=info["pipeline"], stage=info["stage"], manifest=original.path / "manifest.yaml",
                   fixture=bool(info.get("fixture")), force=True, runs_dir=rerun_root(original),
                   run_ref=info.get("parent_dir") if info.get("parent_dir") else None,
                   checkpoint=Path(info["checkpoint"]) if info.get("checkpoint") else None, argv=argv)
