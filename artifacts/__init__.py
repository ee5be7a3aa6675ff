"""Run identity and hashing, run directories, environment capture, data and code fingerprints."""

from .hashing import canonical_json, drop_keys, run_id, sha256_file, sha256_json
from .rundir import MANIFEST, RunDir, atomic_write, find_runs, resolve_run, run_path

__all__ = ["canonical_json", "drop_keys", "run_id", "sha256_file", "sha256_json", "MANIFEST", "RunDir",
           "atomic_write", "find_runs", "resolve_run", "run_path"]
