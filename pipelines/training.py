"""Lightning glue shared by every pipeline: the Trainer built from the manifest's ``trainer:`` section, run
directory logging, atomic checkpoints, progress, determinism, and safe weight files.

Imported only when a stage runs (it imports torch and Lightning).
"""

from __future__ import annotations

import logging
import os
import signal
import time
import warnings
from contextlib import contextmanager
from pathlib import Path

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback, ModelCheckpoint, RichProgressBar  # noqa: F401 (Callback re-exported)
from lightning.pytorch.loggers import CSVLogger
from lightning.pytorch.plugins.io import TorchCheckpointIO

from medrun.artifacts import atomic_write
from medrun.errors import EnvError, UsageError

for _name in ("lightning.pytorch", "lightning.fabric", "lightning"):
    logging.getLogger(_name).setLevel(logging.WARNING)
for _pattern in (".*logs directory .* exists and is not empty.*", ".*LeafSpec.*is deprecated.*",
                 ".*smaller than the logging interval.*", ".*does not have many workers.*"):
    warnings.filterwarnings("ignore", message=_pattern)


_interrupted = False


def _on_signal(signum, frame):
    global _interrupted
    _interrupted = True
    raise KeyboardInterrupt


@contextmanager
def sticky_interrupts():
    """SIGINT and SIGTERM raise KeyboardInterrupt and are remembered. Python drops an exception raised where it
    cannot propagate (a finalizer or weakref callback: "Exception ignored in ..."), so a Ctrl-C landing there was
    lost and training went on; ``ExactResume`` raises a remembered interrupt again at the next batch."""
    global _interrupted
    _interrupted = False
    previous = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    for s in previous:
        signal.signal(s, _on_signal)
    try:
        yield
    finally:
        _interrupted = False
        for s, handler in previous.items():
            signal.signal(s, handler)


def apply_determinism(level: str, seed: int) -> None:
    """off: nothing; seeded: seed python/numpy/torch and DataLoader workers; strict: also deterministic kernels."""
    if level == "off":
        return
    L.seed_everything(seed, workers=True, verbose=False)
    if level == "strict":
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True, warn_only=False)
        torch.backends.cudnn.benchmark = False
        torch.backends.cudnn.deterministic = True


class AtomicCheckpointIO(TorchCheckpointIO):
    """Writes to a temp file and renames, so a kill during a save never leaves a corrupt ``last.ckpt``, and a
    failed save (full disk, file-size limit) leaves no partial temp file behind."""

    def save_checkpoint(self, checkpoint, path, storage_options=None):
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp")
        try:
            with open(
                tmp, "wb"
            ) as f:  # a file object, so a failed write's OSError survives as the RuntimeError's context
                torch.save(checkpoint, f)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        except BaseException as e:
            tmp.unlink(missing_ok=True)
            if isinstance(e.__context__, OSError) and not isinstance(e, OSError):  # torch's RuntimeError hides errno
                raise OSError(e.__context__.errno, e.__context__.strerror, str(tmp)) from e
            raise


class ResumableSampler(torch.utils.data.Sampler):
    """Shuffles with a permutation that depends only on (seed, epoch), and knows how many batches of the epoch the
    trainer has consumed, so a resumed epoch yields exactly the batches the interrupted one had not reached."""

    def __init__(self, n: int, batch_size: int, seed: int = 0):
        self.n, self.batch_size, self.seed = n, batch_size, seed
        self.epoch, self.consumed = 0, 0  # consumed: batches of `epoch` already trained on

    def set_epoch(self, epoch: int) -> None:  # Lightning calls this at each epoch start
        if epoch != self.epoch:
            self.epoch, self.consumed = epoch, 0

    def __iter__(self):
        g = torch.Generator().manual_seed(self.seed * 100_003 + self.epoch)
        return iter(torch.randperm(self.n, generator=g)[self.consumed * self.batch_size:].tolist())

    def __len__(self) -> int:
        return self.n


class ResumableLoader(torch.utils.data.DataLoader):
    """A DataLoader with ``state_dict``/``load_state_dict`` (Lightning saves and restores it in checkpoints and then
    resumes mid-epoch) over a :class:`ResumableSampler`."""

    def __init__(self, dataset, batch_size: int, seed: int = 0, sampler=None, **kw):
        # Lightning re-creates the loader with a distributed sampler under DDP (then resume is epoch-exact only)
        self.seed = seed
        super().__init__(
            dataset,
            batch_size=batch_size,
            sampler=sampler if sampler is not None else ResumableSampler(len(dataset), batch_size, seed),
            **kw,
        )

    def state_dict(self) -> dict:
        if not isinstance(self.sampler, ResumableSampler):
            return {}
        return {"epoch": self.sampler.epoch, "consumed": self.sampler.consumed}

    def load_state_dict(self, state: dict) -> None:
        if not isinstance(self.sampler, ResumableSampler) or not state:
            return
        self.sampler.epoch, self.sampler.consumed = state["epoch"], state["consumed"]
        if self.sampler.consumed >= len(self):  # saved at the end of an epoch: the next one starts afresh
            self.sampler.epoch, self.sampler.consumed = state["epoch"] + 1, 0


class ExactResume(Callback):
    """Counts consumed batches for a :class:`ResumableLoader`, saves every RNG state (python, numpy, torch, CUDA) in
    each checkpoint, and restores them just before the first batch after a resume. With model, optimizer,
    scheduler and precision-plugin state (saved by Lightning), a resumed run continues bit for bit. Limit: random
    augmentation inside DataLoader worker processes is seeded when the iterator starts, not restored.

    With ``every_n_steps`` it also writes ``path`` (``last.ckpt``) every n optimizer steps, so a run killed inside
    an epoch loses at most n steps (the epoch-end checkpoint is ModelCheckpoint's)."""

    def __init__(self, every_n_steps: int = 0, path: Path | None = None, run_id: str | None = None):
        self.every_n_steps, self.path, self.run_id = every_n_steps, path, run_id
        self._pending = None

    @staticmethod
    def _sampler(trainer):
        sampler = getattr(trainer.train_dataloader, "sampler", None)
        return sampler if isinstance(sampler, ResumableSampler) else None

    def on_validation_batch_start(self, *args, **kwargs):
        if _interrupted:
            raise KeyboardInterrupt

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if (sampler := self._sampler(trainer)) is not None:
            sampler.consumed += 1
        if self.path is not None and trainer.global_step % self.every_n_steps == 0:
            trainer.save_checkpoint(self.path)
        if os.environ.get("MEDRUN_TEST_KILL_AT_STEP") == str(trainer.global_step):  # test hook: a hard kill, here
            import signal

            os.kill(os.getpid(), signal.SIGKILL)

    def on_save_checkpoint(self, trainer, pl_module, checkpoint):
        import random

        import numpy as np

        checkpoint["medrun_run_id"] = self.run_id  # resume_checkpoint() refuses a last.ckpt of another run
        kind, keys, pos, has_gauss, gauss = np.random.get_state()
        # plain tensors and tuples only: Lightning loads checkpoints with weights_only=True
        checkpoint["medrun_rng"] = {"python": random.getstate(),
                                    "numpy": (kind, torch.from_numpy(keys.astype(np.int64)), pos, has_gauss, gauss),
                                    "torch": torch.get_rng_state(),
                                    "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else []}

    def on_load_checkpoint(self, trainer, pl_module, checkpoint):
        self._pending = checkpoint.get("medrun_rng")

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self.on_validation_batch_start()
        if self._pending is None:
            return
        import random

        import numpy as np

        rng, self._pending = self._pending, None
        random.setstate(rng["python"])
        kind, keys, pos, has_gauss, gauss = rng["numpy"]
        np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, gauss))
        torch.set_rng_state(rng["torch"])
        if rng["cuda"] and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(rng["cuda"])


class EpochLog(Callback):
    """One plain line per epoch (when stdout is not a terminal) and an event per epoch in logs/events.jsonl.
    Validation values (``val*``) appear only on epochs that validated: Lightning keeps the last ones in
    ``callback_metrics``, which would repeat a stale value on epochs without validation."""

    def __init__(self, run, log, plain: bool):
        self.run, self.emit, self.plain = run, log, plain
        self._t0 = time.perf_counter()
        self._validated = -1  # the last epoch whose validation ran

    def on_train_epoch_start(self, trainer, pl_module):
        self._t0 = time.perf_counter()

    def on_validation_epoch_end(self, trainer, pl_module):
        if not trainer.sanity_checking:
            self._validated = trainer.current_epoch

    def on_train_epoch_end(self, trainer, pl_module):
        if trainer.sanity_checking or trainer.global_rank != 0:
            return
        fresh = self._validated == trainer.current_epoch
        m = {k: round(float(v), 5) for k, v in trainer.callback_metrics.items()
             if v.numel() == 1 and (fresh or not k.startswith("val"))}
        secs = time.perf_counter() - self._t0
        self.run.append_event("epoch", epoch=trainer.current_epoch, seconds=round(secs, 3), **m)
        if self.plain:
            shown = "  ".join(f"{k} {v:.4f}" for k, v in sorted(m.items()))
            self.emit(f"epoch {trainer.current_epoch + 1}/{trainer.max_epochs}  {shown}  ({secs:.1f} s)")


def make_trainer(
    ctx, max_epochs: int, *, checkpoint: bool = True, callbacks=(), logger: bool = True, **overrides
) -> L.Trainer:
    t = ctx.manifest.trainer
    step_ckpt = ctx.run.path / "checkpoints" / "last.ckpt" if checkpoint and t.checkpoint_every_n_steps else None
    cbs = [EpochLog(ctx.run, ctx.log, plain=not ctx.interactive),
           ExactResume(t.checkpoint_every_n_steps, step_ckpt, ctx.run.info().get("id")), *callbacks]
    if ctx.interactive:
        cbs.append(RichProgressBar(leave=True))
    if checkpoint:
        cbs.append(ModelCheckpoint(dirpath=ctx.run.path / "checkpoints", filename="last", save_top_k=1,
                                   monitor=None, enable_version_counter=False))
    kwargs = dict(
        accelerator=t.accelerator, devices=t.devices, strategy=t.strategy, precision=t.precision,
        num_nodes=t.num_nodes, max_epochs=max_epochs, log_every_n_steps=t.log_every_n_steps,
        deterministic=ctx.manifest.determinism == "strict", callbacks=cbs, plugins=[AtomicCheckpointIO()],
        logger=[CSVLogger(save_dir=ctx.run.path / "logs", name="", version=""), *ctx.extras.get("loggers", ())]
        if logger else False,
        enable_progress_bar=ctx.interactive, enable_model_summary=False, enable_checkpointing=checkpoint,
        default_root_dir=ctx.run.path, num_sanity_val_steps=0,
    )
    kwargs.update(overrides)
    return L.Trainer(**kwargs)


def check_trainer(section) -> None:
    """Build (and drop) a Lightning Trainer from the manifest's ``trainer:`` section, so that a wrong accelerator,
    device list, strategy or precision stops the command before its run directory exists: exit 4 for hardware or a
    package this machine lacks, exit 2 for a value Lightning does not accept."""
    given = dict(accelerator=section.accelerator, devices=section.devices, strategy=section.strategy,
                 precision=section.precision, num_nodes=section.num_nodes)
    try:
        L.Trainer(**given, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                  enable_model_summary=False)
    except Exception as e:  # noqa: BLE001 (Lightning raises ValueError, TypeError, MisconfigurationException …)
        text = " ".join(str(e).split())[:300].replace("[", "(").replace("]", ")") or type(e).__name__
        shown = ", ".join(f"{k} {v}" for k, v in given.items()).replace("[", "(").replace("]", ")")
        if isinstance(e, ImportError) or any(w in text for w in ("not available", "No supported", "only has")):
            raise EnvError(
                f"this machine cannot train with trainer {shown}: {text}",
                fix="pick an accelerator and devices it has (see `medrun doctor`), e.g. --accelerator cpu",
            ) from None
        raise UsageError(
            f"Lightning refuses trainer {shown}: {text}",
            fix="check --accelerator, --devices, --strategy, --precision (or the manifest's trainer: section)",
        ) from None


def fit(trainer: L.Trainer, module, datamodule=None, ckpt_path=None, **kw) -> None:
    """``trainer.fit`` that resumes from ``ckpt_path`` and turns Lightning's Ctrl-C exit back into an interrupt."""
    try:
        trainer.fit(module, datamodule=datamodule, ckpt_path=ckpt_path, **kw)
    except SystemExit:
        if trainer.interrupted:
            raise KeyboardInterrupt from None
        raise


def resume_checkpoint(run, name: str = "last.ckpt") -> Path | None:
    """``checkpoints/<name>`` (default ``last.ckpt``) to resume from, if there is one, after checking that this run
    wrote it: a checkpoint carried over from another run (another manifest, code or data) is refused, not silently
    resumed. A stage with two training loops (lorasam's stage A) names the first loop's file."""
    last = run.path / "checkpoints" / name
    if not last.exists():
        return None
    try:
        owner = torch.load(last, map_location="cpu", weights_only=True, mmap=True).get("medrun_run_id")
    except Exception as e:  # noqa: BLE001 (any unreadable checkpoint is the same problem to the user)
        raise UsageError(f"{last} cannot be read ({type(e).__name__}), so this run cannot resume from it",
                         fix="delete it to start the run afresh, or add --force") from None
    mine = run.info().get("id")
    if owner != mine:
        raise UsageError(f"{last} was written by run {str(owner)[:12]}, not by this run {str(mine)[:12]} "
                         "(another manifest, code or data)", fix="delete it to start this run afresh, or add --force")
    return last


# -- weights ---------------------------------------------------------------------------------------------------
def safetensors_bytes(state: dict[str, torch.Tensor], metadata: dict | None = None) -> bytes:
    """``safetensors.torch.save`` with the header's metadata keys sorted.

    safetensors keeps metadata in a hash map whose order changes from process to process, so the same weights
    would hash differently across runs (and ``medrun rerun --compare`` would see a difference that is not there).
    Key order means nothing to readers; the header is re-padded with spaces to 8 bytes as safetensors does.
    """
    import json
    import struct

    from safetensors.torch import save

    blob = save({k: v.detach().cpu().contiguous() for k, v in state.items()},
                metadata={k: str(v) for k, v in (metadata or {}).items()} or None)
    (n,) = struct.unpack("<Q", blob[:8])
    header = json.loads(blob[8:8 + n])
    if "__metadata__" in header:
        header["__metadata__"] = dict(sorted(header["__metadata__"].items()))
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    return struct.pack("<Q", len(text)) + text + blob[8 + n:]


def save_weights(model: torch.nn.Module, path: Path, metadata: dict | None = None) -> Path:
    atomic_write(path, safetensors_bytes(model.state_dict(), metadata))
    return path


def weights_metadata(path: Path) -> dict[str, str]:
    """The string metadata that ``save_weights`` stored in a safetensors file (class names, the run id, the base);
    ``{}`` for a file that is not safetensors or cannot be read."""
    from safetensors import safe_open

    if Path(path).suffix != ".safetensors" or not Path(path).is_file():
        return {}
    try:
        with safe_open(str(path), "pt") as f:
            return dict(f.metadata() or {})
    except Exception:  # noqa: BLE001 (a damaged or foreign file simply has no metadata we can use)
        return {}


TO_SAFETENSORS = ("if you trust where it comes from, save just its weights where the model object exists: "
                  "from safetensors.torch import save_file; save_file(model.state_dict(), 'model.safetensors') "
                  "and pass that file")


def load_state(path: Path) -> dict[str, torch.Tensor]:
    """safetensors for what medrun writes; ``torch.load(weights_only=True)`` for what users give. Either way the
    result is checked to be names → tensors without NaN, so a malformed file fails here, naming the key, instead of deep
    inside a model."""
    import pickle

    path = Path(path)
    if not path.is_file():
        raise UsageError(f"weights file not found: {path}", fix="check the --checkpoint path")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(path))
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:  # torch's message would advise weights_only=False, which can run the file's code
        raise UsageError(f"{path} holds Python objects other than tensors and will not be loaded (unpickling them "
                         "could run code)", fix=TO_SAFETENSORS) from None
    except Exception as e:  # corrupt or foreign file
        raise UsageError(f"cannot load weights from {path}: {e.__class__.__name__}: {str(e).splitlines()[0][:200]}",
                         fix="pass a .safetensors, a state dict .pt/.pth, or a Lightning .ckpt") from None
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):  # Lightning checkpoint
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise UsageError(f"{path} holds a {type(state).__name__}, not a state dict", fix="save model.state_dict()")
    check_state(state, path)
    return state


def check_state(state: dict, path: Path) -> None:
    """Refuse keys that are not names, values that are not tensors, and floating tensors holding NaN or nothing but
    ±inf (a -inf mask buffer beside finite values is legitimate; NaN never is)."""
    for k, v in state.items():
        if not isinstance(k, str):
            raise UsageError(f"{path}: key {k!r} is a Python {type(k).__name__}, not a parameter name",
                             fix="save model.state_dict(), whose keys are names like 'layer.weight'")
        if not isinstance(v, torch.Tensor):
            raise UsageError(f"{path}: key '{k}' holds a Python {type(v).__name__}, not a tensor",
                             fix="save model.state_dict() (only tensors), e.g. with safetensors.torch.save_file")
        if not v.is_floating_point() or not v.numel():
            continue
        nan = int(torch.isnan(v).sum())
        if nan or not bool(torch.isfinite(v).any()):
            what = f"{nan} NaN values of {v.numel()}" if nan else "only infinite values"
            raise UsageError(f"{path}: key '{k}' holds {what}",
                             fix="these weights are broken (did training diverge?): use an earlier checkpoint")


def load_weights(model: torch.nn.Module, path: Path, *, prefix: str = "model.") -> torch.nn.Module:
    state = load_state(path)
    if state and all(k.startswith(prefix) for k in state):
        state = {k[len(prefix):]: v for k, v in state.items()}
    own = model.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    wrong = sorted(k for k in set(own) & set(state) if tuple(own[k].shape) != tuple(state[k].shape))
    if missing or unexpected or wrong:
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing (e.g. {missing[0]})")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected (e.g. {unexpected[0]})")
        if wrong:
            k = wrong[0]
            parts.append(f"{len(wrong)} with other shapes (e.g. {k}: {tuple(state[k].shape)} vs {tuple(own[k].shape)})")
        raise UsageError(f"weights in {path} do not fit this model: " + ", ".join(parts),
                         fix="check the checkpoint matches the manifest's model section (e.g. model.num_classes)")
    model.load_state_dict(state)
    return model


def count_params(model: torch.nn.Module) -> dict:
    return {"params_total": sum(p.numel() for p in model.parameters()),
            "params_trainable": sum(p.numel() for p in model.parameters() if p.requires_grad)}
