"""``medrun verify``: does a run directory still hold what it recorded?

Four checks, each a category of the report:

- artifacts: every file re-hashed against ``MANIFEST.sha256`` (changed, removed, added files);
- data: every tree in ``data.lock.json`` re-fingerprinted in its recorded mode and compared file by file;
- code: the recorded code fingerprint against the installed medrun sources;
- environment: ``env.json`` against the running interpreter and installed packages.

Artifacts and data are failures (exit 5); code and environment drift are warnings unless ``strict``. Nothing in
the run directory is written. No torch import: the torch version is read from package metadata.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from medrun.errors import UsageError, VerifyError

from .env import capture_env
from .fingerprint import StatCache, code_fingerprint, fingerprint_tree
from .hashing import sha256_file
from .rundir import MANIFEST, RunDir, resolve_run

ENV_KEYS = ("python", "implementation", "machine")


def open_run(runs_root: Path, ref: str) -> RunDir:
    """The run for an id, id prefix or directory; a folder without ``run.json`` is named as such (exit 2)."""
    p = Path(ref)
    if p.is_dir() and not (p / "run.json").exists():
        raise UsageError(f"{p} is not a run directory (no run.json): it was never started or is half-written",
                         fix="pass a run id or a directory made by `medrun train|eval|…`")
    return resolve_run(runs_root, ref)


def read_manifest(run: RunDir) -> dict[str, str]:
    """``MANIFEST.sha256`` as {relpath: sha256}; a malformed line is a verification failure, not a crash."""
    out: dict[str, str] = {}
    for n, line in enumerate((run.path / MANIFEST).read_text().splitlines(), 1):
        if not line.strip():
            continue
        sha, sep, rel = line.partition("  ")
        if not sep or len(sha) != 64:
            raise VerifyError(f"{run.path / MANIFEST}:{n}: malformed line {line[:80]!r}",
                              fix="the manifest itself was edited or truncated; the run cannot be trusted")
        out[rel] = sha
    return out


def check_artifacts(run: RunDir) -> dict:
    recorded = read_manifest(run)
    present = dict(run.files())
    changed = [rel for rel, sha in recorded.items() if rel in present and sha256_file(present[rel]) != sha]
    removed = [rel for rel in recorded if rel not in present]
    added = [rel for rel in present if rel not in recorded]
    ok = not (changed or removed or added)
    return {"status": "ok" if ok else "fail", "files": len(recorded), "changed": changed, "removed": removed,
            "added": added}


def _cache_path() -> Path:
    return Path(os.environ.get("MEDRUN_CACHE", Path.home() / ".cache" / "medrun")) / "stat-cache.sqlite"


def check_data(run: RunDir) -> dict:
    try:
        lock = json.loads((run.path / "data.lock.json").read_text())
    except (OSError, ValueError):
        return {"status": "fail", "trees": {}, "problem": "data.lock.json is missing or unreadable"}
    trees: dict[str, dict] = {}
    cache = StatCache(_cache_path())
    try:
        for name, fp in sorted(lock.get("trees", {}).items()):
            root, mode = Path(fp.get("root", "")), fp.get("mode", "content")
            rec = fp.get("files", {})
            if not root.is_dir():
                trees[name] = {"status": "fail", "root": str(root), "mode": mode, "missing_root": True,
                               "changed": [], "removed": sorted(rec), "added": []}
                continue
            now = fingerprint_tree(root, cache, mode)["files"]
            changed = sorted(r for r, v in rec.items() if r in now and list(now[r]) != list(v))
            removed = sorted(r for r in rec if r not in now)
            added = sorted(r for r in now if r not in rec)
            bad = changed or removed or added
            trees[name] = {"status": "fail" if bad else "ok", "root": str(root), "mode": mode, "missing_root": False,
                           "files": len(rec), "changed": changed, "removed": removed, "added": added}
    finally:
        cache.close()
    ok = all(t["status"] == "ok" for t in trees.values())
    return {"status": "ok" if ok else "fail", "fingerprint": lock.get("fingerprint"), "trees": trees}


def check_code(run: RunDir) -> dict:
    recorded = run.info().get("code") or {}
    current = code_fingerprint()
    same = recorded.get("sha256") == current["sha256"]
    return {"status": "ok" if same else "drift", "recorded": {k: recorded.get(k) for k in ("version", "sha256", "git_commit")},
            "current": {k: current.get(k) for k in ("version", "sha256", "git_commit")}}


def env_differences(recorded: dict, current: dict) -> list[dict]:
    """Differences in the interpreter and installed packages, as {key, recorded, current} (None = absent)."""
    diffs = [{"key": k, "recorded": recorded.get(k), "current": current.get(k)}
             for k in ENV_KEYS if recorded.get(k) != current.get(k)]
    rp, cp = recorded.get("packages", {}) or {}, current.get("packages", {}) or {}
    for name in sorted(set(rp) | set(cp)):
        if rp.get(name) != cp.get(name):
            diffs.append({"key": f"packages.{name}", "recorded": rp.get(name), "current": cp.get(name)})
    return diffs


def check_env(run: RunDir) -> dict:
    try:
        recorded = json.loads((run.path / "env.json").read_text())
    except (OSError, ValueError):
        return {"status": "drift", "differences": [], "problem": "env.json is missing or unreadable"}
    diffs = env_differences(recorded, capture_env())
    return {"status": "ok" if not diffs else "drift", "differences": diffs}


def verify_run(run: RunDir) -> dict:
    """The full report. Raises ``UsageError`` (exit 2) for a run with no ``MANIFEST.sha256``."""
    info = run.info()
    if not (run.path / MANIFEST).exists():
        raise UsageError(f"run {run.path} is not complete (status: {info.get('status', 'unknown')}; "
                         f"no {MANIFEST}), so there is nothing to verify against",
                         fix="finish it with the command in its run.json, or verify a complete run")
    report = {"run_dir": str(run.path), "id": info.get("id"), "pipeline": info.get("pipeline"),
              "stage": info.get("stage"), "status": info.get("status"),
              "categories": {"artifacts": check_artifacts(run), "data": check_data(run), "code": check_code(run),
                             "environment": check_env(run)}}
    return report


def failures(report: dict, strict: bool = False) -> list[str]:
    """One short phrase per failing category (warnings count under ``strict``)."""
    c = report["categories"]
    out = []
    a = c["artifacts"]
    for kind in ("changed", "removed", "added"):
        if a[kind]:
            out.append(f"artifacts {kind}: {', '.join(a[kind][:10])}" + (" …" if len(a[kind]) > 10 else ""))
    d = c["data"]
    if d.get("problem"):
        out.append(f"data: {d['problem']}")
    for name, t in d["trees"].items():
        if t.get("missing_root"):
            out.append(f"data '{name}': folder {t['root']} is gone")
            continue
        for kind in ("changed", "removed", "added"):
            if t[kind]:
                out.append(f"data '{name}' {kind}: {', '.join(t[kind][:5])}" + (" …" if len(t[kind]) > 5 else ""))
    if strict and c["code"]["status"] != "ok":
        out.append("code fingerprint differs from the installed code")
    if strict and c["environment"]["status"] != "ok":
        n = len(c["environment"]["differences"])
        out.append(f"environment differs ({n} difference{'s' * (n != 1)})")
    return out
