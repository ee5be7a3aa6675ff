"""The run index: ``<runs>/.index.sqlite``, one row per run directory, rebuilt from the ``run.json`` files.

The directories are the source of truth; the index only makes listing quick. Every open refreshes it: a missing
or unreadable index (or one of another schema version) is rebuilt, a run directory not in it is added, an indexed
directory that is gone is dropped, and a row whose ``run.json`` changed (mtime_ns differs) or whose
``MANIFEST.sha256`` appeared or vanished is re-read. A runs directory that cannot be written is indexed in memory.
"""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import yaml

from .rundir import MANIFEST, RunDir

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


class Index:
    def __init__(self, runs_root: Path):
        self.root = Path(runs_root)
        self.path = self.root / INDEX
        self.last_refresh: dict = {}
        self.db = self._connect()
        self.refresh()

    def _connect(self) -> sqlite3.Connection:
        if not self.root.is_dir():
            return self._create(sqlite3.connect(":memory:"))
        try:
            db = sqlite3.connect(str(self.path), timeout=30)
            version = db.execute("PRAGMA user_version").fetchone()[0]
            if version != SCHEMA_VERSION:
                db.execute("DROP TABLE IF EXISTS runs")
                self._create(db)
            return db
        except sqlite3.DatabaseError:  # a damaged or read-only index: start over, or fall back to memory
            try:
                self.path.unlink(missing_ok=True)
                return self._create(sqlite3.connect(str(self.path), timeout=30))
            except (OSError, sqlite3.DatabaseError):
                return self._create(sqlite3.connect(":memory:"))

    @staticmethod
    def _create(db: sqlite3.Connection) -> sqlite3.Connection:
        with db:
            db.execute("CREATE TABLE IF NOT EXISTS runs (rel TEXT PRIMARY KEY, id TEXT, pipeline TEXT, stage TEXT, "
                       "status TEXT, dataset TEXT, started TEXT, ended TEXT, mtime_ns INTEGER, sealed INTEGER, "
                       "info TEXT, metrics TEXT)")
            db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
        return db

    def refresh(self) -> dict:
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
        try:
            with self.db:
                self.db.executemany("DELETE FROM runs WHERE rel = ?", [(r,) for r in gone])
                self.db.executemany(f"INSERT OR REPLACE INTO runs VALUES ({', '.join('?' * len(COLUMNS))})", fresh)
        except sqlite3.OperationalError:  # read-only runs directory: serve from memory this time
            self.db = self._create(sqlite3.connect(":memory:"))
            return self.refresh()
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
        where, args = [], []
        for col, val in (("pipeline", pipeline), ("stage", stage), ("status", status)):
            if val:
                where.append(f"{col} = ?")
                args.append(val)
        sql = "SELECT * FROM runs" + (" WHERE " + " AND ".join(where) if where else "") + " ORDER BY started DESC, rel"
        return [self._dict(r) for r in self.db.execute(sql, args)]

    def _dict(self, row: tuple) -> dict:
        d = dict(zip(COLUMNS, row, strict=True))
        d["info"], d["metrics"] = json.loads(d["info"]), json.loads(d["metrics"])
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
        data_files[name] = {"changed": sorted(k for k in fa if k in fb and fa[k] != fb[k]),
                            "only_a": sorted(k for k in fa if k not in fb), "only_b": sorted(k for k in fb if k not in fa)}
    return {
        "a": {"id": ia.get("id"), "run_dir": str(a.path)}, "b": {"id": ib.get("id"), "run_dir": str(b.path)},
        "manifest": dict_diff(_read(a.path / "manifest.yaml", yaml.safe_load), _read(b.path / "manifest.yaml", yaml.safe_load)),
        "metrics": dict_diff(a.metrics(), b.metrics()),
        "environment": [{"key": d["key"], "a": d["recorded"], "b": d["current"]} for d in env_differences(env_a, env_b)],
        "data": {"a": ia.get("data_sha256"), "b": ib.get("data_sha256"), "same": ia.get("data_sha256") == ib.get("data_sha256"),
                 "files": data_files},
        "code": {"a": (ia.get("code") or {}).get("sha256"), "b": (ib.get("code") or {}).get("sha256"),
                 "same": (ia.get("code") or {}).get("sha256") == (ib.get("code") or {}).get("sha256")},
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
