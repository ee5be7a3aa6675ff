"""Content hashes and run identity."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

CHUNK = 1 << 22  # 4 MiB reads keep sha256 near its in-memory speed


def sha256_file(path: Path | str) -> str:
    h = hashlib.sha256()
    with open(path, "rb", buffering=0) as f:
        buf = bytearray(CHUNK)
        view = memoryview(buf)
        while n := f.readinto(buf):
            h.update(view[:n])
    return h.hexdigest()


def canonical_json(obj) -> str:
    """Key-sorted, compact JSON: the same data always gives the same bytes."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=True, default=str)


def sha256_json(obj) -> str:
    return hashlib.sha256(canonical_json(obj).encode()).hexdigest()


def drop_keys(data: dict, dotted_keys) -> dict:
    """A copy of ``data`` without the dotted keys (missing keys are ignored)."""
    out = json.loads(canonical_json(data))
    for dotted in dotted_keys:
        node, parts = out, dotted.split(".")
        for p in parts[:-1]:
            node = node.get(p) if isinstance(node, dict) else None
            if node is None:
                break
        if isinstance(node, dict):
            node.pop(parts[-1], None)
    return out


def run_id(*, manifest: dict, code: str, data: str, stage: str, parent: str | None = None) -> str:
    """sha256 over the resolved manifest, the code and data fingerprints, the stage and the parent run."""
    return sha256_json({"manifest": manifest, "code": code, "data": data, "stage": stage, "parent": parent})
