"""Content-addressed caches under ``$MEDRUN_CACHE`` (ph-mci's topology, asd-transformer's features, drivpocket's
grids): one ``<key>.npz`` per item, written atomically so that a killed process never leaves a half-written entry
that a later run would trust, and read without pickle.

The key is the caller's: a sha256 over the input file's bytes and every setting that changes the result."""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path

STALE_SECONDS = 3600  # a temp file this old belongs to no live writer


def save_npz(path: Path, *, compressed: bool = False, **arrays) -> Path:
    """Write ``arrays`` to ``path`` atomically: a temp file in the same folder, then a rename (object arrays are
    refused: the cache is read with ``allow_pickle=False``)."""
    import numpy as np

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.stem[:12]}-", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            (np.savez_compressed if compressed else np.savez)(f, allow_pickle=False, **arrays)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def load_npz(path: Path) -> dict:
    """Every array of a cache entry (no pickle), or a ValueError/OSError the caller treats as a miss."""
    import numpy as np

    with np.load(path, allow_pickle=False) as z:
        return {k: z[k] for k in z.files}


def clear_stale(cache_dir: Path, age: float = STALE_SECONDS) -> int:
    """Remove temp files of killed writers older than ``age`` seconds (younger ones may belong to a process still
    writing); returns how many were removed."""
    cache_dir, n = Path(cache_dir), 0
    if cache_dir.is_dir():
        for tmp in cache_dir.glob(".*.tmp"):
            try:
                if time.time() - tmp.stat().st_mtime > age:
                    tmp.unlink(missing_ok=True)
                    n += 1
            except FileNotFoundError:  # another process removed it first
                pass
    return n
