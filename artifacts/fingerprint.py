"""Fingerprints of data and code.

Data: every file under the dataset's folder(s), hashed by content (``mode="content"``) or by size and mtime
(``mode="stat"``). Content hashes are cached in SQLite keyed by (path, size, mtime_ns), so re-fingerprinting an
unchanged tree only stats it. Code: sha256 over the installed medrun sources a stage imports (see
``code_fingerprint`` and ``imports``).
"""

from __future__ import annotations

import hashlib
import os
import sqlite3
import subprocess
from collections.abc import Callable
from pathlib import Path

from medrun.errors import DataError

from .hashing import sha256_file, sha256_json

PACKAGES = ("medrun", "medrun.cli", "medrun.manifests", "medrun.pipelines", "medrun.models", "medrun.metrics",
            "medrun.datasets", "medrun.artifacts")


def stat_cache_path() -> Path:
    """The one stat cache of this user: ``$MEDRUN_CACHE/stat-cache.sqlite``."""
    return Path(os.environ.get("MEDRUN_CACHE", Path.home() / ".cache" / "medrun")) / "stat-cache.sqlite"


class StatCache:
    """(absolute path, size, mtime_ns) -> sha256, in one SQLite file shared by all runs."""

    def __init__(self, path: Path):
        path.parent.mkdir(parents=True, exist_ok=True)
        self.db = sqlite3.connect(str(path), timeout=30)
        self.db.execute(
            "CREATE TABLE IF NOT EXISTS files (path TEXT PRIMARY KEY, size INTEGER, mtime_ns INTEGER, sha TEXT)"
        )

    def load_under(self, root: str) -> dict[str, tuple[int, int, str]]:
        prefix = root.rstrip(os.sep) + os.sep
        rows = self.db.execute("SELECT path, size, mtime_ns, sha FROM files WHERE path >= ? AND path < ?",
                               (prefix, prefix[:-1] + chr(ord(os.sep) + 1)))
        return {p: (s, m, h) for p, s, m, h in rows}

    def store(self, rows: list[tuple[str, int, int, str]]) -> None:
        if rows:
            with self.db:
                self.db.executemany("INSERT OR REPLACE INTO files VALUES (?, ?, ?, ?)", rows)

    def close(self) -> None:
        self.db.close()


def walk_files(root: Path) -> list[tuple[str, os.DirEntry]]:
    """Every regular file under root (hidden files and folders skipped), sorted by relative path.

    Hidden names are skipped so that OS litter (``.DS_Store``, ``._x``) does not change run ids; the readers skip
    them too. ``hidden_entries`` lists them for ``verify``. A file as root (a stage's single input file) is the
    one entry, under its own name."""
    if Path(root).is_file():
        with os.scandir(Path(root).parent) as it:
            return [(e.name, e) for e in it if e.name == Path(root).name]
    out = [(rel, e) for rel, e, hidden in _walk(root) if not hidden and e.is_file()]
    out.sort(key=lambda t: t[0])
    return out


def hidden_entries(root: Path) -> list[str]:
    """Relative paths of the hidden files and folders under root's visible folders (a hidden folder is one entry,
    ``x/.git/``, not its contents): what the fingerprint leaves out, so that verify can name it."""
    if Path(root).is_file():
        return []
    return sorted(rel + ("/" if e.is_dir() else "") for rel, e, hidden in _walk(root)
                  if hidden and rel not in MEDRUN_MARKERS)


MEDRUN_MARKERS = (".medrun-fixture.json",)  # medrun's own marker at the top of a generated fixture


def _walk(root: Path):
    """(relpath, DirEntry, hidden) for every entry under root, descending into visible folders and symlinks to them.

    Why the (st_dev, st_ino) bookkeeping: a link to a folder above it is a loop that would otherwise be walked
    until the path is too long and crash. Each folder carries the identities of the folders above it, so a loop is
    a DataError naming the link, while a link to a folder elsewhere (or two links to one folder) is still walked."""
    st = os.stat(root)
    stack = [(str(root), "", ((st.st_dev, st.st_ino),))]
    while stack:
        top, rel, above = stack.pop()
        with os.scandir(top) as it:
            for e in it:
                r = f"{rel}{e.name}"
                if e.name.startswith("."):
                    yield r, e, True
                elif e.is_dir(follow_symlinks=True):
                    st = e.stat(follow_symlinks=True)
                    if (st.st_dev, st.st_ino) in above:
                        raise _loop_error(root, e)
                    stack.append((e.path, r + "/", (*above, (st.st_dev, st.st_ino))))
                else:
                    yield r, e, False


def _loop_error(root: Path, e: os.DirEntry) -> DataError:
    what = "symlink" if e.is_symlink() else "folder"
    return DataError(f"{what} loop in data folder {root}: {e.path} leads back to {os.path.realpath(e.path)}, "
                     "a folder above it", file=e.path,
                     fix="remove that link or point it at a folder outside the data folder")


def fingerprint_tree(root: Path, cache: StatCache | None, mode: str = "content",
                     progress: Callable[[int, int], None] | None = None, *, rehash: bool = False) -> dict:
    """{"root", "mode", "files": {relpath: [size, sha256 or mtime_ns]}, "sha256"}. The digest ignores ``root``.

    ``rehash`` hashes every file's content even when the cache has (path, size, mtime_ns): a file rewritten with
    its size and mtime restored (``cp -p``, ``rsync -t``, ``touch -r``) looks untouched to the cache. The fresh
    hashes replace the cached ones, so the next run's fingerprint sees the real content too."""
    root = Path(root).resolve()
    entries = walk_files(root)
    cached = cache.load_under(str(root)) if (cache and mode == "content" and not rehash) else {}
    files: dict[str, list] = {}
    fresh: list[tuple[str, int, int, str]] = []
    for i, (rel, e) in enumerate(entries):
        st = e.stat()
        if mode == "stat":
            files[rel] = [st.st_size, st.st_mtime_ns]
            continue
        hit = cached.get(e.path)
        if hit and hit[0] == st.st_size and hit[1] == st.st_mtime_ns:
            sha = hit[2]
        else:
            sha = sha256_file(e.path)
            fresh.append((e.path, st.st_size, st.st_mtime_ns, sha))
        files[rel] = [st.st_size, sha]
        if progress and (i % 256 == 0 or i == len(entries) - 1):
            progress(i + 1, len(entries))
    if cache:
        cache.store(fresh)
    return {"root": str(root), "mode": mode, "files": files, "sha256": sha256_json({"mode": mode, "files": files})}


def combine(fingerprints: dict[str, dict]) -> str:
    """One digest over several named trees (e.g. a merged dataset)."""
    return sha256_json({name: fp["sha256"] for name, fp in sorted(fingerprints.items())})


def _source_dirs() -> list[Path]:
    from importlib.util import find_spec

    dirs = []
    for name in PACKAGES:
        spec = find_spec(name)
        if spec and spec.submodule_search_locations:
            dirs.append(Path(next(iter(spec.submodule_search_locations))))
    return dirs


def source_root() -> Path:
    """The folder holding the package folders: the repository root of an editable install (``make setup``)."""
    dirs = _source_dirs()
    return dirs[0].parent if dirs else Path.cwd()


def code_fingerprint(roots=None, *, dirs: list[Path] | None = None) -> dict:
    """sha256 over the medrun version and the sources a stage depends on, so an edit changes the run ids of
    exactly the stages that can execute it, and a docs-only commit changes none.

    ``roots``: start module names (``pkg.*``: a package and everything below it); the covered files are their
    transitive imports (``artifacts.imports``). None covers every source (runs recorded before per-stage
    fingerprints). ``dirs`` replaces the installed package folders (tests fingerprint a copy). The result records
    the roots and each covered file's sha256 (by its repository path), so ``verify`` can name what changed; the
    git commit and dirty state are recorded beside it for provenance only."""
    from medrun import __version__

    from . import imports

    dirs = _source_dirs() if dirs is None else list(dirs)
    idx = imports.index(dirs)
    if roots is None:
        files = {s.label: hashlib.sha256(s.path.read_bytes()).hexdigest() for s in idx.values()}
    else:
        cache = Path(os.environ.get("MEDRUN_CACHE", Path.home() / ".cache" / "medrun")) / "code-imports.json"
        imports.load_cache(cache)
        files = {idx[n].label: p.sha256 for n, p in imports.covered(roots, idx).items()}
        imports.save_cache(cache)
    files = dict(sorted(files.items()))
    return {"version": __version__, "sha256": sha256_json({"version": __version__, "files": files}),
            "roots": None if roots is None else list(roots), "files": files,
            **_git_state(dirs[0].parent if dirs else Path.cwd())}


def code_changes(recorded: dict, current: dict) -> dict[str, list[str]]:
    """Covered files changed, no longer covered (or gone) and newly covered between two code fingerprints."""
    rf, cf = recorded.get("files") or {}, current.get("files") or {}
    return {"changed": sorted(k for k in rf if k in cf and rf[k] != cf[k]),
            "removed": sorted(k for k in rf if k not in cf), "added": sorted(k for k in cf if k not in rf)}


def _git_state(where: Path) -> dict:
    try:
        commit = subprocess.run(
            ["git", "-C", str(where), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5
        )
        if commit.returncode != 0:
            return {"git_commit": None, "git_dirty": None}
        dirty = subprocess.run(["git", "-C", str(where), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=5)
        return {"git_commit": commit.stdout.strip(), "git_dirty": bool(dirty.stdout.strip())}
    except (OSError, subprocess.TimeoutExpired):
        return {"git_commit": None, "git_dirty": None}
