"""The run index: ``<runs>/.index.sqlite``, one row per run directory, rebuilt from the ``run.json`` files.

The directories are the source of truth; the index only makes listing quick. Every open refreshes it: a missing
index, one that fails ``PRAGMA quick_check``, has another schema version or another table layout, or raises any
``sqlite3.DatabaseError`` while it is read or written is replaced by a fresh one (built beside it and renamed over
it); a run directory not in it is added, an indexed directory that is gone is dropped, and a row whose ``run.json``
changed (mtime_ns differs) or whose ``MANIFEST.sha256`` appeared or vanished is re-read. Where no index file can
be written (a read-only runs directory, a folder in its place) the runs are indexed in memory for that command.

A ``running`` status is not trusted as written: a writer killed by SIGKILL, or one whose last status write failed,
leaves it behind. ``effective_status`` asks the run's lock (and pid) whether the writer is still there.
"""

from __future__ import annotations

import json
import os
import sqlite3
import tempfile
from pathlib import Path

import yaml

from .rundir import MANIFEST, RunDir, umask

INDEX = ".index.sqlite"
SCHEMA_VERSION = 1
COLUMNS = ("rel", "id", "pipeline", "stage", "status", "dataset", "started", "ended", "mtime_ns", "sealed", "info",
           "metrics")


def _run_dirs(root: Path) -> dict[str, Path]:
    """{relative path: directory} for every ``<pipeline>/<stage>-<id>/`` holding a run.json (dot folders skipped)."""
    out = {}
    for rj in root.glob("*/*-*/run.json"):
        d = rj.parent
        if d.parent.name.startswith(".") or d.name.startswith("."):
            continue
        out[d.relative_to(root).as_posix()] = d
    return out


def effective_status(info: dict, sealed: bool) -> str:
    """``complete`` only with MANIFEST.sha256 present (the completeness rule); a complete-looking run without it
    is reported as ``incomplete``."""
    status = info.get("status") or "unknown"
    return "incomplete" if status == "complete" and not sealed else status


def live_status(status: str, run_dir: Path, info: dict) -> str:
    """What a recorded ``running`` really is now. ``running``: a process holds the run's lock. ``interrupted``:
    nobody holds it and the recorded pid is gone (SIGKILL, power loss, a failed status write); the same command
    resumes it, like a run stopped with Ctrl-C. ``stale``: nobody holds the lock but the recorded pid is a live
    process, or there is no lock file and the pid lives: most likely the pid was reused, but it cannot be told
    from here. Any other status is returned as it is. Computed on every listing, never stored in the index."""
    if status != "running":
        return status
    held = RunDir(run_dir).lock_held()
    if held:
        return "running"
    return "stale" if _pid_alive(info.get("pid")) else "interrupted"


def _pid_alive(pid) -> bool:
    if not isinstance(pid, int) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    except OSError:
        return False
    return True


class Index:
    def __init__(self, runs_root: Path):
        self.root = Path(runs_root)
        self.path = self.root / INDEX
        self.last_refresh: dict = {}
        self.db = self._connect()
        self._guarded(self._refresh)

    def _connect(self) -> sqlite3.Connection:
        """The on-disk index if it is sound and of this layout; else a fresh one in its place; else memory."""
        if not self.root.is_dir():
            return self._create(sqlite3.connect(":memory:"))
        db = None
        try:
            db = sqlite3.connect(str(self.path), timeout=30)
            if self._sound(db):
                return self._create(db)  # a new, empty file gets its table here
        except sqlite3.OperationalError as e:
            if "locked" in str(e):  # busy for 30 s, not damaged: leave the file to its writer
                return self._create(sqlite3.connect(":memory:"))
        except sqlite3.DatabaseError:
            pass
        if db is not None:
            db.close()
        return self._fresh_file()

    @staticmethod
    def _sound(db: sqlite3.Connection) -> bool:
        """quick_check passes and the file is empty or holds exactly this version's ``runs`` table."""
        if db.execute("PRAGMA quick_check").fetchone()[0] != "ok":
            return False
        version = db.execute("PRAGMA user_version").fetchone()[0]
        cols = tuple(r[1] for r in db.execute("PRAGMA table_info(runs)"))
        return (version, cols) in ((SCHEMA_VERSION, COLUMNS), (0, ()))

    def _fresh_file(self) -> sqlite3.Connection:
        """A new empty index built under a temp name and renamed over the old file, so a reader never sees half a
        file; a stale rollback journal is removed first, or SQLite would replay it into the new file. Falls back to
        memory where that cannot be done (read-only folder, a directory named like the index)."""
        tmp = None
        try:
            fd, tmp = tempfile.mkstemp(dir=self.root, prefix=f"{INDEX}.", suffix=".tmp")
            os.fchmod(fd, 0o666 & ~umask())  # a shared runs folder's index stays readable to the group
            os.close(fd)
            self._create(sqlite3.connect(tmp)).close()
            for suffix in ("-journal", "-wal", "-shm"):
                Path(f"{self.path}{suffix}").unlink(missing_ok=True)
            os.replace(tmp, self.path)
            return sqlite3.connect(str(self.path), timeout=30)
        except (OSError, sqlite3.DatabaseError):
            if tmp:
                Path(tmp).unlink(missing_ok=True)
            return self._create(sqlite3.connect(":memory:"))

    def _guarded(self, fn, *args):
        """``fn`` on the index; on any database error the index is replaced (or moved to memory) and refreshed
        before one more try, so a damaged index costs a rebuild, never a crash. "locked" and "readonly" mean
        another process or the folder's permissions, not damage: those go to memory without touching the file."""
        try:
            return fn(*args)
        except sqlite3.DatabaseError as e:
            on_disk = self._on_disk()
            self.db.close()
            harmless = isinstance(e, sqlite3.OperationalError) and ("locked" in str(e) or "readonly" in str(e))
            self.db = self._fresh_file() if on_disk and not harmless else self._create(sqlite3.connect(":memory:"))
        try:
            self._refresh()
            return fn(*args)
        except sqlite3.DatabaseError:  # a fresh file that fails at once (a full disk): memory always works
            self.db.close()
            self.db = self._create(sqlite3.connect(":memory:"))
            self._refresh()
            return fn(*args)

    def _on_disk(self) -> bool:
        try:
            return any(name == "main" and file for _, name, file in self.db.execute("PRAGMA database_list"))
        except sqlite3.Error:
            return True

    @staticmethod
    def _create(db: sqlite3.Connection) -> sqlite3.Connection:
        with db:
            db.execute("CREATE TABLE IF NOT EXISTS runs (rel TEXT PRIMARY KEY, id TEXT, pipeline TEXT, stage TEXT, "
                       "status TEXT, dataset TEXT, started TEXT, ended TEXT, mtime_ns INTEGER, sealed INTEGER, "
                       "info TEXT, metrics TEXT)")
            db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
        return db

    def refresh(self) -> dict:
        return self._guarded(self._refresh)

    def _refresh(self) -> dict:
        dirs = _run_dirs(self.root) if self.root.is_dir() else {}
        rows = {rel: (m, s) for rel, m, s in self.db.execute("SELECT rel, mtime_ns, sealed FROM runs")}
        gone = [rel for rel in rows if rel not in dirs]
        fresh = []
        for rel, d in dirs.items():
            try:
                mtime = (d / "run.json").stat().st_mtime_ns
            except OSError:
                continue
            sealed = int((d / MANIFEST).exists())
            if rows.get(rel) != (mtime, sealed):
                fresh.append(self._row(rel, d, mtime, sealed))
        with self.db:
            self.db.executemany("DELETE FROM runs WHERE rel = ?", [(r,) for r in gone])
            self.db.executemany(f"INSERT OR REPLACE INTO runs VALUES ({', '.join('?' * len(COLUMNS))})", fresh)
        self.last_refresh = {"indexed": len(dirs), "added_or_updated": len(fresh), "removed": len(gone),
                             "rebuilt": not rows and bool(fresh)}
        return self.last_refresh

    @staticmethod
    def _row(rel: str, d: Path, mtime: int, sealed: int) -> tuple:
        info = RunDir(d).info()
        metrics = RunDir(d).metrics()
        return (rel, info.get("id"), info.get("pipeline"), info.get("stage"), effective_status(info, bool(sealed)),
                info.get("dataset"), info.get("started"), info.get("ended"), mtime, sealed,
                json.dumps(info, default=str), json.dumps(metrics, default=str))

    def list(self, pipeline: str | None = None, stage: str | None = None, status: str | None = None) -> list[dict]:
        """Rows newest first. ``status`` filters on the live status (``live_status``), so ``--status interrupted``
        finds the killed runs whose run.json still says running."""
        rows = self._guarded(self._select, pipeline, stage)
        for r in rows:
            r["status"] = live_status(r["status"], Path(r["run_dir"]), r["info"])
        return [r for r in rows if not status or r["status"] == status]

    def _select(self, pipeline: str | None, stage: str | None) -> list[dict]:
        where, args = [], []
        for col, val in (("pipeline", pipeline), ("stage", stage)):
            if val:
                where.append(f"{col} = ?")
                args.append(val)
        sql = "SELECT * FROM runs" + (" WHERE " + " AND ".join(where) if where else "") + " ORDER BY started DESC, rel"
        return [self._dict(r) for r in self.db.execute(sql, args)]

    def _dict(self, row: tuple) -> dict:
        d = dict(zip(COLUMNS, row, strict=True))
        try:
            d["info"], d["metrics"] = json.loads(d["info"]), json.loads(d["metrics"])
        except (TypeError, ValueError) as e:  # a damaged value in a sound file: rebuild like any other damage
            raise sqlite3.DatabaseError(f"unreadable row {d['rel']!r} in {self.path}") from e
        d["run_dir"] = str(self.root / d["rel"])
        return d

    def close(self) -> None:
        self.db.close()


# -- comparing runs -------------------------------------------------------------------------------------------
def flatten(obj, prefix: str = "") -> dict:
    """Nested dicts as {dotted.key: value}; lists stay values."""
    out = {}
    if isinstance(obj, dict):
        for k, v in obj.items():
            key = f"{prefix}.{k}" if prefix else str(k)
            if isinstance(v, dict) and v:
                out.update(flatten(v, key))
            else:
                out[key] = v
    return out


def dict_diff(a: dict, b: dict) -> list[dict]:
    fa, fb = flatten(a), flatten(b)
    return [{"key": k, "a": fa.get(k), "b": fb.get(k)} for k in sorted(set(fa) | set(fb)) if fa.get(k) != fb.get(k)]


def _read(path: Path, loader) -> dict:
    try:
        return loader(path.read_text()) or {}
    except (OSError, ValueError, yaml.YAMLError):
        return {}


def diff_runs(a: RunDir, b: RunDir) -> dict:
    """Manifest (dotted keys), metrics, environment packages, data fingerprint and code, between two runs."""
    from .verify import env_differences

    ia, ib = a.info(), b.info()
    env_a, env_b = _read(a.path / "env.json", json.loads), _read(b.path / "env.json", json.loads)
    lock_a, lock_b = _read(a.path / "data.lock.json", json.loads), _read(b.path / "data.lock.json", json.loads)
    data_files = {}
    for name in sorted(set(lock_a.get("trees", {})) | set(lock_b.get("trees", {}))):
        fa = lock_a.get("trees", {}).get(name, {}).get("files", {})
        fb = lock_b.get("trees", {}).get(name, {}).get("files", {})
        data_files[name] = {
            "changed": sorted(k for k in fa if k in fb and fa[k] != fb[k]),
            "only_a": sorted(k for k in fa if k not in fb),
            "only_b": sorted(k for k in fb if k not in fa),
        }
    return {
        "a": {"id": ia.get("id"), "run_dir": str(a.path)},
        "b": {"id": ib.get("id"), "run_dir": str(b.path)},
        "manifest": dict_diff(
            _read(a.path / "manifest.yaml", yaml.safe_load), _read(b.path / "manifest.yaml", yaml.safe_load)
        ),
        "metrics": dict_diff(a.metrics(), b.metrics()),
        "environment": [
            {"key": d["key"], "a": d["recorded"], "b": d["current"]} for d in env_differences(env_a, env_b)
        ],
        "data": {
            "a": ia.get("data_sha256"),
            "b": ib.get("data_sha256"),
            "same": ia.get("data_sha256") == ib.get("data_sha256"),
            "files": data_files,
        },
        "code": {
            "a": (ia.get("code") or {}).get("sha256"),
            "b": (ib.get("code") or {}).get("sha256"),
            "same": (ia.get("code") or {}).get("sha256") == (ib.get("code") or {}).get("sha256"),
        },
    }


def metrics_table(runs: list[RunDir]) -> dict:
    """{"columns": [metric…], "rows": [{id, run_dir, pipeline, stage, metrics: {metric: value}}]} for scalar metrics."""
    rows, cols = [], []
    for r in runs:
        m = {k: v for k, v in flatten(r.metrics()).items() if isinstance(v, (int, float, str, bool)) or v is None}
        for k in m:
            if k not in cols:
                cols.append(k)
        info = r.info()
        rows.append({"id": info.get("id"), "run_dir": str(r.path), "pipeline": info.get("pipeline"),
                     "stage": info.get("stage"), "metrics": m})
    return {"columns": cols, "rows": rows}
