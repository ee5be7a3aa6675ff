"""The run directory: ``<runs>/<pipeline>/<stage>-<id12>/``.

Writes are atomic (temp file + rename); an exclusive lock keeps two processes from writing the same run; a run
is complete only when ``run.json`` says so *and* ``MANIFEST.sha256`` (written last, covering every other file)
exists. An interrupted or failed run therefore never looks complete.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import tempfile
import time
from pathlib import Path

from medrun.errors import EnvError, UsageError

from .hashing import sha256_file

MANIFEST = "MANIFEST.sha256"
SIGNATURE = MANIFEST + ".sig"  # ssh-keygen -Y signature of MANIFEST.sha256 (medrun sign)
LOCK = ".lock"
OWN_FILES = (MANIFEST, SIGNATURE, LOCK)  # top-level files that are the run's bookkeeping, not its content
SUBDIRS = ("checkpoints", "figures", "logs")
CLEARED = ".cleared-"  # prefix of the hidden folder --force empties a run into


def umask() -> int:
    """The process's umask (read by setting and restoring it)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def atomic_write(path: Path, data: bytes | str) -> None:
    """Write ``path`` through a temporary file and a rename, with the mode a plain ``open`` would give (mkstemp's
    0600 would hide metrics, paper.md and weights from colleagues on a shared server)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, 0o666 & ~umask())
        with os.fdopen(fd, "wb") as f:
            f.write(data.encode() if isinstance(data, str) else data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def is_temp_name(name: str) -> bool:
    """A temporary file of an atomic write: ``.name.XXXX.tmp`` (``atomic_write``), ``.last.ckpt.tmp``,
    ``.x.tmp.npz``, or ``open``'s write probe."""
    return name == ".write-probe" or (name.startswith(".") and (name.endswith(".tmp") or ".tmp." in name))


def _in_cleared(rel: str) -> bool:
    """Inside the hidden ``.cleared-*`` folder that ``--force`` empties a run into (removed by ``open``)."""
    return rel.startswith(CLEARED)


def _remember(rows: list[tuple[str, int, int, str]]) -> None:
    """The seal's hashes into the stat cache, so a quick verify (``medrun report``) of an untouched run reads
    nothing again. Best effort: a cache that cannot be written never fails a run."""
    import sqlite3

    from .fingerprint import StatCache, stat_cache_path

    try:
        cache = StatCache(stat_cache_path())
        try:
            cache.store(rows)
        finally:
            cache.close()
    except (OSError, sqlite3.Error):
        pass


def run_path(runs_root: Path, pipeline: str, stage: str, run_id: str) -> Path:
    return Path(runs_root) / pipeline / f"{stage}-{run_id[:12]}"


class RunDir:
    def __init__(self, path: Path):
        self.path = Path(path)
        self._lock_fd: int | None = None

    # -- state --------------------------------------------------------------------------------------------
    def exists(self) -> bool:
        return (self.path / "run.json").exists()

    def info(self) -> dict:
        try:
            return json.loads((self.path / "run.json").read_text())
        except (OSError, ValueError):
            return {}

    def is_complete(self) -> bool:
        return (self.path / MANIFEST).exists() and self.info().get("status") == "complete"

    def recorded_hashes(self) -> dict[str, str]:
        """``{relative path: sha256}`` as sealed in MANIFEST.sha256 (empty for an unsealed run)."""
        try:
            text = (self.path / MANIFEST).read_text()
        except FileNotFoundError:
            return {}
        return {rel: sha for sha, _, rel in (line.partition("  ") for line in text.splitlines()) if rel}

    def metrics(self) -> dict:
        try:
            return json.loads((self.path / "metrics.json").read_text())
        except (OSError, ValueError):
            return {}

    # -- writing ------------------------------------------------------------------------------------------
    def open(self, *, force: bool = False) -> RunDir:
        """Create (or reopen, to resume) the directory and take its lock. With ``force`` the directory is emptied
        (after checking that it is a run, see ``replace.check_target``), keeping the lock."""
        if force:
            from .replace import RUN_MARKERS, check_target

            check_target(self.path, marker=RUN_MARKERS, force=True, runs=(self.path.parent.parent,),
                         option="the run directory")
        try:
            self.path.mkdir(parents=True, exist_ok=True)
            probe = self.path / ".write-probe"
            probe.write_text("")
            probe.unlink()
        except OSError as e:
            raise EnvError(f"cannot write run directory {self.path}: {e.strerror}",
                           fix="choose a writable place with --runs-dir DIR or MEDRUN_RUNS") from None
        fd = os.open(self.path / LOCK, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise UsageError(f"run {self.path} is being written by another medrun process",
                             fix="wait for it to finish, or use another --runs-dir") from None
        os.ftruncate(fd, 0)
        os.write(fd, str(os.getpid()).encode())
        self._lock_fd = fd
        if force:
            self._clear()
        for stale in self.path.glob(f"{CLEARED}*"):  # a --force killed while it emptied the run
            shutil.rmtree(stale, ignore_errors=True)
        for own in (MANIFEST, SIGNATURE):  # whatever happens next, this run is not complete (nor signed)
            (self.path / own).unlink(missing_ok=True)
        for sub in SUBDIRS:
            (self.path / sub).mkdir(exist_ok=True)
        return self

    def _clear(self) -> None:
        """Empty the run but keep the folder and its lock (another process may be waiting on that very file): every
        other entry moves into a hidden folder inside the run, which is then removed; ``open`` removes what a kill
        during that removal left."""
        aside = Path(tempfile.mkdtemp(prefix=CLEARED, dir=self.path))
        for child in list(self.path.iterdir()):
            if child.name != LOCK and child != aside:
                child.rename(aside / child.name)
        shutil.rmtree(aside)

    def close(self) -> None:
        if self._lock_fd is not None:
            fcntl.flock(self._lock_fd, fcntl.LOCK_UN)
            os.close(self._lock_fd)
            self._lock_fd = None

    def file(self, rel: str) -> Path:
        p = self.path / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        return p

    def write_text(self, rel: str, text: str) -> Path:
        atomic_write(self.path / rel, text)
        return self.path / rel

    def write_json(self, rel: str, obj) -> Path:
        return self.write_text(rel, json.dumps(obj, indent=2, sort_keys=False, default=str) + "\n")

    def update_info(self, **fields) -> dict:
        info = {**self.info(), **fields}
        self.write_json("run.json", info)
        return info

    def append_event(self, event: str, **fields) -> None:
        with open(self.file("logs/events.jsonl"), "a") as f:
            f.write(json.dumps({"time": time.time(), "event": event, **fields}, default=str) + "\n")

    def seal(self) -> None:
        """Mark complete: run.json first, then MANIFEST.sha256 over every file (the last write of a run)."""
        self.update_info(status="complete", ended=time.strftime("%Y-%m-%dT%H:%M:%S%z"))
        lines, seen = [], []
        for rel, p in self.files():
            st, sha = p.stat(), sha256_file(p)
            lines.append(f"{sha}  {rel}")
            seen.append((str(p), st.st_size, st.st_mtime_ns, sha))
        atomic_write(self.path / MANIFEST, "\n".join(lines) + "\n")
        _remember(seen)

    def files(self) -> list[tuple[str, Path]]:
        """Every file the seal covers and verify checks, as (relpath, path) in path order.

        Hidden files count like any other, so a ``checkpoints/.evil.safetensors`` cannot pass unseen. Left out is
        only the run's own bookkeeping: the lock, MANIFEST.sha256 and its signature at the top, and temporary
        files of atomic writes (``temp_files``), which a finished run should not hold at all."""
        return [(rel, p) for rel, p in self._all_files()
                if rel not in OWN_FILES and not is_temp_name(p.name) and not _in_cleared(rel)]

    def temp_files(self) -> list[str]:
        """Leftover temporary files of atomic writes (``.name.XXXX.tmp``): harmless while a run is being written, a
        sign of an interrupted write in a sealed run."""
        return [rel for rel, p in self._all_files() if rel not in OWN_FILES and is_temp_name(p.name)]

    def _all_files(self) -> list[tuple[str, Path]]:
        out = []
        for top, _dirs, names in os.walk(self.path):  # links to folders are not followed, as pathlib's rglob did not
            for name in names:
                p = Path(top) / name
                if p.is_file():
                    out.append((p.relative_to(self.path).as_posix(), p))
        return sorted(out, key=lambda t: t[1])

    def lock_held(self) -> bool | None:
        """Whether a process holds this run's lock now (the writer holds it from ``open`` to ``close``, and a
        killed writer's lock is freed by the kernel); None when there is no lock file to ask.

        Probed with a shared non-blocking flock on a read-only descriptor, dropped at once: it never creates the
        file and never waits."""
        try:
            fd = os.open(self.path / LOCK, os.O_RDONLY)
        except OSError:
            return None
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
            return False
        except BlockingIOError:
            return True
        except OSError:
            return None
        finally:
            os.close(fd)


def find_runs(runs_root: Path, pipeline: str | None = None, stage: str | None = None) -> list[RunDir]:
    """Run directories under the root, newest first."""
    root = Path(runs_root)
    pattern = f"{pipeline or '*'}/{stage or '*'}-*"
    runs = [RunDir(p) for p in root.glob(pattern) if (p / "run.json").exists()
            and (stage is None or p.name.rsplit("-", 1)[0] == stage)]  # "train-*" must not match "train-init-…"
    return sorted(runs, key=lambda r: r.info().get("started", ""), reverse=True)


def resolve_run(runs_root: Path, ref: str, pipeline: str | None = None) -> RunDir:
    """A run by directory path, full id, or unique id prefix."""
    p = Path(ref)
    if (p / "run.json").exists():
        return RunDir(p)
    matches = [r for r in find_runs(runs_root, pipeline) if r.info().get("id", "").startswith(ref)
               or r.path.name.split("-", 1)[-1].startswith(ref)]
    if not matches:
        raise UsageError(f"no run matches {ref!r} under {runs_root}" + (f"/{pipeline}" if pipeline else ""),
                         fix="list runs with `ls` on the runs directory, or pass the run directory itself")
    if len(matches) > 1:
        names = ", ".join(r.path.name for r in matches[:5])
        raise UsageError(f"{ref!r} matches {len(matches)} runs ({names})", fix="give more characters of the id")
    return matches[0]
