"""``medrun verify``: does a run directory still hold what it recorded?

Four checks, each a category of the report:

- artifacts: every file re-hashed against ``MANIFEST.sha256`` (changed, removed, added files, hidden ones
  included; leftover temp files of atomic writes are a warning);
- data: every tree in ``data.lock.json`` re-fingerprinted in its recorded mode and compared file by file, its
  content re-hashed (``rehash``; by default when the recorded data is at most ``REHASH_MAX_BYTES``) or taken from
  the stat cache; hidden files in the data folders, which the fingerprint leaves out, are a warning;
- code: the recorded code fingerprint against the installed medrun sources it covers, naming the covered
  files that changed;
- environment: ``env.json`` against the running interpreter and installed packages.

Artifacts and data are failures (exit 5); code and environment drift, temp files and hidden data files are
warnings unless ``strict``. With ``signers`` the signature of MANIFEST.sha256 is checked too (``signing``).
Nothing in the run directory is written (re-hashing refreshes the shared stat cache). No torch import: the torch
version is read from package metadata.

What this promises: accidents (bit rot, a half copy, an edited or swapped file, data changed in place) and edits
by anyone who did not also rewrite MANIFEST.sha256 are found. A tamperer who rewrites MANIFEST.sha256 is found
only when the run is signed and checked with ``signers``.
"""

from __future__ import annotations

import json
from pathlib import Path

from medrun.errors import DataError, UsageError, VerifyError

from .env import capture_env
from .fingerprint import StatCache, code_changes, code_fingerprint, fingerprint_tree, hidden_entries, stat_cache_path
from .hashing import sha256_file
from .rundir import MANIFEST, RunDir, resolve_run

ENV_KEYS = ("python", "implementation", "machine")
# Re-hash data by default up to this many recorded bytes: sha256 runs at about 1 GB/s on one core, so 256 MiB takes
# 0.3 s from the page cache and about 2 s from a 150 MB/s disk. Larger data trusts the stat cache unless --rehash.
REHASH_MAX_BYTES = 256 << 20
REHASHED, TRUSTED, STAT_ONLY = (
    "re-hashed",
    "stat cache trusted (use --rehash)",
    "size and mtime only (fingerprint: stat)",
)


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


def check_artifacts(run: RunDir, cache: StatCache | None = None) -> dict:
    """Every file against MANIFEST.sha256. With ``cache`` (the report's quick check) a file whose size and mtime
    match an earlier hash of it is not read again."""
    recorded = read_manifest(run)
    present = dict(run.files())
    digests = _hashes([present[rel] for rel in recorded if rel in present], cache, run.path)
    changed = [rel for rel, sha in recorded.items() if rel in present and digests[present[rel]] != sha]
    removed = [rel for rel in recorded if rel not in present]
    added = [rel for rel in present if rel not in recorded]
    ok = not (changed or removed or added)
    return {"status": "ok" if ok else "fail", "files": len(recorded), "changed": changed, "removed": removed,
            "added": added, "temp_files": run.temp_files() if (run.path / MANIFEST).exists() else []}


def _hashes(paths: list[Path], cache: StatCache | None, root: Path) -> dict[Path, str | None]:
    """sha256 of each file; with ``cache``, a file whose (size, mtime_ns) matches its cached row is not read."""
    if cache is None:
        return {p: _sha_or_none(p) for p in paths}
    known = cache.load_under(str(root))
    out, new = {}, []
    for p in paths:
        try:
            st = p.stat()
        except OSError:
            out[p] = None
            continue
        hit = known.get(str(p))
        if hit and hit[0] == st.st_size and hit[1] == st.st_mtime_ns:
            out[p] = hit[2]
            continue
        out[p] = _sha_or_none(p)
        if out[p] is not None:
            new.append((str(p), st.st_size, st.st_mtime_ns, out[p]))
    cache.store(new)
    return out


def _sha_or_none(path: Path) -> str | None:
    """A file that cannot be read (permissions, a vanished target) counts as changed, not as a crash."""
    try:
        return sha256_file(path)
    except OSError:
        return None


def rehash_default(lock: dict) -> tuple[bool, int]:
    """(re-hash?, recorded bytes of the content-mode trees): re-hash when that is at most ``REHASH_MAX_BYTES``."""
    size = sum(int(v[0]) for fp in lock.get("trees", {}).values() if fp.get("mode", "content") == "content"
               for v in (fp.get("files") or {}).values())
    return size <= REHASH_MAX_BYTES, size


def check_data(run: RunDir, rehash: bool | None = None) -> dict:
    """Re-fingerprint every recorded data tree. ``rehash``: True re-hashes content, False trusts the stat cache,
    None decides by size (``rehash_default``). Each tree says which check it got."""
    try:
        lock = json.loads((run.path / "data.lock.json").read_text())
    except (OSError, ValueError):
        return {"status": "fail", "trees": {}, "problem": "data.lock.json is missing or unreadable"}
    if not _lock_shape_ok(lock):  # valid JSON of another shape: the artifacts check names the edited file
        return {"status": "fail", "trees": {}, "problem": "data.lock.json does not have the shape medrun writes"}
    auto, size = rehash_default(lock)
    rehash = auto if rehash is None else rehash
    trees: dict[str, dict] = {}
    cache = StatCache(stat_cache_path())
    try:
        for name, fp in sorted(lock.get("trees", {}).items()):
            trees[name] = _check_tree(fp, cache, rehash)
    finally:
        cache.close()
    ok = all(t["status"] == "ok" for t in trees.values())
    stat_only = bool(trees) and all(t["mode"] == "stat" for t in trees.values())
    return {"status": "ok" if ok else "fail", "fingerprint": lock.get("fingerprint"), "rehash": rehash,
            "bytes": size, "check": STAT_ONLY if stat_only else REHASHED if rehash else TRUSTED, "trees": trees}


def _lock_shape_ok(lock) -> bool:
    trees = lock.get("trees", {}) if isinstance(lock, dict) else None
    return isinstance(trees, dict) and all(
        isinstance(fp, dict) and isinstance(fp.get("files", {}), dict)
        and all(isinstance(v, list) and len(v) == 2 and isinstance(v[0], int) for v in fp.get("files", {}).values())
        for fp in trees.values())


def _check_tree(fp: dict, cache: StatCache, rehash: bool) -> dict:
    root, mode, rec = Path(fp.get("root", "")), fp.get("mode", "content"), fp.get("files", {})
    out = {"status": "fail", "root": str(root), "mode": mode, "check": STAT_ONLY if mode == "stat" else
           REHASHED if rehash else TRUSTED, "missing_root": False, "files": len(rec), "changed": [], "removed": [],
           "added": [], "hidden": []}
    if not root.exists():
        return {**out, "missing_root": True, "removed": sorted(rec)}
    try:
        now = fingerprint_tree(root, cache, mode, rehash=rehash)["files"]
        out["hidden"] = hidden_entries(root)
    except (DataError, OSError) as e:  # a symlink loop, an unreadable file: the data is not what was recorded
        return {**out, "problem": e.line() if isinstance(e, DataError) else f"{e.filename}: {e.strerror}"}
    out["changed"] = sorted(r for r, v in rec.items() if r in now and list(now[r]) != list(v))
    out["removed"] = sorted(r for r in rec if r not in now)
    out["added"] = sorted(r for r in now if r not in rec)
    out["status"] = "fail" if out["changed"] or out["removed"] or out["added"] else "ok"
    return out


def check_code(run: RunDir, current: dict | None = None) -> dict:
    """The recorded code fingerprint against the installed sources, from the same start modules (``roots``), so
    the covered set is recomputed: a file the run's code imports since then shows as ``added``. A run recorded
    before per-stage fingerprints (no ``roots``) is compared against every source, without file names."""
    recorded = run.info().get("code") or {}
    roots = recorded.get("roots")
    ok_roots = isinstance(roots, list) and all(isinstance(r, str) for r in roots)
    current = current or code_fingerprint(roots if ok_roots else None)
    same = recorded.get("sha256") == current["sha256"]
    named = not same and isinstance(recorded.get("files"), dict)
    keys = ("version", "sha256", "git_commit")
    return {"status": "ok" if same else "drift", "recorded": {k: recorded.get(k) for k in keys},
            "current": {k: current.get(k) for k in keys},
            "files": code_changes(recorded, current) if named else {"changed": [], "removed": [], "added": []}}


def env_differences(recorded: dict, current: dict) -> list[dict]:
    """Differences in the interpreter and installed packages, as {key, recorded, current} (None = absent)."""
    diffs = [{"key": k, "recorded": recorded.get(k), "current": current.get(k)}
             for k in ENV_KEYS if recorded.get(k) != current.get(k)]
    rp, cp = recorded.get("packages", {}) or {}, current.get("packages", {}) or {}
    for name in sorted(set(rp) | set(cp)):
        if rp.get(name) != cp.get(name):
            diffs.append({"key": f"packages.{name}", "recorded": rp.get(name), "current": cp.get(name)})
    return diffs


def check_env(run: RunDir, current: dict | None = None) -> dict:
    try:
        recorded = json.loads((run.path / "env.json").read_text())
    except (OSError, ValueError):
        return {"status": "drift", "differences": [], "problem": "env.json is missing or unreadable"}
    diffs = env_differences(recorded, current or capture_env())
    return {"status": "ok" if not diffs else "drift", "differences": diffs}


def verify_run(run: RunDir, rehash: bool | None = None, signers: Path | None = None) -> dict:
    """The full report. Raises ``UsageError`` (exit 2) for a run with no ``MANIFEST.sha256``."""
    info = run.info()
    if not (run.path / MANIFEST).exists():
        raise UsageError(f"run {run.path} is not complete (status: {info.get('status', 'unknown')}; "
                         f"no {MANIFEST}), so there is nothing to verify against",
                         fix="finish it with the command in its run.json, or verify a complete run")
    report = {"run_dir": str(run.path), "id": info.get("id"), "pipeline": info.get("pipeline"),
              "stage": info.get("stage"), "status": info.get("status"),
              "categories": {"artifacts": check_artifacts(run), "data": check_data(run, rehash),
                             "code": check_code(run), "environment": check_env(run)},
              "signature": check_signature(run, signers)}
    return report


def failures(report: dict, strict: bool = False) -> list[str]:
    """One short phrase per failing category (warnings count under ``strict``)."""
    c = report["categories"]
    out = []
    a = c["artifacts"]
    for kind in ("changed", "removed", "added"):
        if a[kind]:
            out.append(f"artifacts {kind}: {_few(a[kind], 10)}")
    if strict and a.get("temp_files"):
        out.append(f"temporary files in a sealed run: {_few(a['temp_files'], 10)}")
    d = c["data"]
    if d.get("problem"):
        out.append(f"data: {d['problem']}")
    for name, t in d["trees"].items():
        if t.get("missing_root"):
            out.append(f"data '{name}': folder {t['root']} is gone")
            continue
        if t.get("problem"):
            out.append(f"data '{name}': {t['problem']}")
        for kind in ("changed", "removed", "added"):
            if t[kind]:
                out.append(f"data '{name}' {kind}: {_few(t[kind], 5)}")
        if strict and t.get("hidden"):
            out.append(f"data '{name}' hidden files: {_few(t['hidden'], 5)}")
    sig = report.get("signature") or {}
    if sig.get("status") == "fail":
        out.append(f"signature: {sig['problem']}")
    if strict and c["code"]["status"] != "ok":
        files = [f for fs in (c["code"].get("files") or {}).values() for f in fs]
        out.append("code fingerprint differs from the installed code" + (f": {_few(files, 5)}" if files else ""))
    if strict and c["environment"]["status"] != "ok":
        n = len(c["environment"]["differences"])
        out.append(f"environment differs ({n} difference{'s' * (n != 1)})")
    return out


def _few(items: list[str], n: int) -> str:
    return ", ".join(items[:n]) + (" …" if len(items) > n else "")


def check_signature(run: RunDir, signers: Path | None) -> dict:
    """``none`` (no MANIFEST.sha256.sig), ``unchecked`` (signed, no ``signers`` given), or with ``signers``:
    ``ok`` naming the signer, or ``fail`` with the reason (unsigned, unknown key, bad signature)."""
    from . import signing

    signed = (run.path / signing.SIGNATURE).exists()
    if signers is None:
        return {"status": "unchecked" if signed else "none"}
    return signing.verify(run, signers)
