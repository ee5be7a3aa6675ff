"""A shared run store: ``medrun runs push|pull`` and ``--store`` (reuse a colleague's complete run like a build cache).

A store is a folder on a shared file system or any fsspec URL (``s3://bucket/runs``, ``gs://…``, ``ssh://host/path``,
where that fsspec backend is installed). It holds complete runs only, in the runs folder's own layout,
``<store>/<pipeline>/<stage>-<id12>/``: a run id is a content hash, so two labs' pushes of different runs never
collide, and two pushes of one id are the same run.

- push: the run must be complete and pass ``verify`` (artifacts and data). Its files (those ``MANIFEST.sha256``
  lists, then ``MANIFEST.sha256`` itself and a signature) are written under a hidden temporary name beside the target
  and renamed into place, so a half-copied run is never visible; on a store without an atomic folder rename (object
  stores) the files go straight to the target and ``MANIFEST.sha256`` is written last: a stored run without it is
  not there. A push that finds the run already stored (a concurrent push, a colleague's) checks the stored copy
  against its own ``MANIFEST.sha256`` and leaves it. Nothing outside ``<pipeline>/<stage>-<id12>/`` (and its
  temporary twin) is ever written or removed, so a store folder that also holds other files loses none.
- pull: the stored run must be complete; it is downloaded into a hidden folder of the runs folder, every file
  re-hashed against its ``MANIFEST.sha256`` (a changed, missing or extra file is exit 5, and the download is
  deleted), then renamed into place. Its data is not checked (the data lies on the pusher's machine; ``medrun
  verify`` checks it where it exists).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import posixpath
import shutil
import uuid
from pathlib import Path

from medrun.errors import EnvError, UsageError, VerifyError

from .rundir import MANIFEST, SIGNATURE, RunDir, resolve_run


def open_store(url: str):
    """(fsspec file system, root path inside it) for a folder or URL; exit 4 when its backend is missing."""
    import fsspec
    from fsspec.implementations.local import LocalFileSystem

    text = str(url)
    try:
        fs, root = fsspec.core.url_to_fs(text)
    except (ImportError, ValueError) as e:
        scheme = text.split("://", 1)[0] if "://" in text else "file"
        raise EnvError(f"store {text}: no fsspec backend for '{scheme}://' ({str(e).splitlines()[0][:120]})",
                       fix={"s3": "pip install s3fs", "gs": "pip install gcsfs", "ssh": "pip install paramiko",
                            "sftp": "pip install paramiko"}.get(scheme, "install the fsspec backend for it")) from None
    if isinstance(fs, LocalFileSystem):
        root = os.path.abspath(root)
        if os.path.exists(root) and not os.path.isdir(root):
            raise UsageError(f"store {text} is a file, not a folder", fix="name a folder (or an fsspec URL)")
    return fs, root.rstrip("/") or "/"


def _local(fs) -> bool:
    from fsspec.implementations.local import LocalFileSystem

    return isinstance(fs, LocalFileSystem)


def _rel(run: RunDir) -> str:
    info = run.info()
    return f"{info.get('pipeline')}/{run.path.name}"


def _sha(fs, path: str) -> str | None:
    h = hashlib.sha256()
    try:
        with fs.open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
    except (FileNotFoundError, IsADirectoryError):
        return None
    return h.hexdigest()


def _parse_manifest(text: str, where: str) -> dict[str, str]:
    out = {}
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        sha, sep, rel = line.partition("  ")
        if not sep or len(sha) != 64 or rel.startswith("/") or ".." in rel.split("/"):
            raise VerifyError(f"{where}:{n}: malformed line {line[:80]!r}", fix="the stored run cannot be trusted")
        out[rel] = sha
    return out


def stored_problems(fs, target: str) -> list[str]:
    """What is wrong with a stored run (every file re-hashed against its MANIFEST.sha256): [] when intact."""
    try:
        with fs.open(posixpath.join(target, MANIFEST), "rb") as f:
            recorded = _parse_manifest(f.read().decode(errors="replace"), posixpath.join(target, MANIFEST))
    except FileNotFoundError:
        return ["not complete (no MANIFEST.sha256)"]
    present = {posixpath.relpath(p, target) for p in fs.find(target)}
    out = []
    changed = [rel for rel, sha in recorded.items() if rel in present and _sha(fs, posixpath.join(target, rel)) != sha]
    removed = [rel for rel in recorded if rel not in present]
    added = sorted(present - set(recorded) - {MANIFEST, SIGNATURE})
    for kind, items in (("changed", changed), ("removed", removed), ("added", added)):
        if items:
            out.append(f"{kind}: {', '.join(items[:5])}{' …' if len(items) > 5 else ''}")
    return out


# -- push -----------------------------------------------------------------------------------------------------
def push(run: RunDir, store: str, log=print) -> dict:
    """Put one complete, verified run into the store; ``{"run_dir", "stored", "status": pushed|present}``."""
    from .verify import failures, verify_run

    if not run.is_complete():
        raise UsageError(f"run {run.path} is not complete (status: {run.info().get('status', 'unknown')}); only "
                         "complete runs go to a store", fix="finish it with the command in its run.json")
    bad = failures(verify_run(run))
    if bad:
        raise VerifyError(f"run {run.path} failed verification, not pushed: " + "; ".join(bad),
                          fix="`medrun verify` names what changed; re-run it with `medrun rerun`")
    fs, root = open_store(store)
    rel = _rel(run)
    target = posixpath.join(root, rel)
    if fs.exists(posixpath.join(target, MANIFEST)):
        return _present(fs, target, run, store)
    if fs.exists(target):
        raise UsageError(f"{store}: {rel} exists but is not a stored run (no MANIFEST.sha256); it is left alone",
                         fix="remove it from the store if it is a half copy, or push to another store")
    files = [rel_ for rel_ in _manifest_of(run)] + [MANIFEST] + ([SIGNATURE] if (run.path / SIGNATURE).exists() else [])
    parent = posixpath.dirname(target)
    fs.makedirs(parent, exist_ok=True)
    if _local(fs):
        tmp = posixpath.join(parent, f".{posixpath.basename(target)}.push-{uuid.uuid4().hex[:12]}")
        try:
            _upload(fs, run, files, tmp)
            try:
                os.rename(tmp, target)  # atomic; fails when another push got there first
            except OSError:
                if fs.exists(posixpath.join(target, MANIFEST)):
                    return _present(fs, target, run, store)
                raise
        finally:
            if os.path.isdir(tmp):
                shutil.rmtree(tmp, ignore_errors=True)
    else:  # no atomic folder rename (object stores, ssh): MANIFEST.sha256 written last marks the run present
        _upload(fs, run, files, target)
    log(f"pushed {run.path} -> {store.rstrip('/')}/{rel}")
    return {"run_dir": str(run.path), "stored": f"{store.rstrip('/')}/{rel}", "status": "pushed"}


def _manifest_of(run: RunDir) -> list[str]:
    return list(_parse_manifest((run.path / MANIFEST).read_text(), str(run.path / MANIFEST)))


def _upload(fs, run: RunDir, files: list[str], dest: str) -> None:
    for rel in files:  # in MANIFEST order, MANIFEST.sha256 (and its signature) last
        remote = posixpath.join(dest, rel)
        fs.makedirs(posixpath.dirname(remote), exist_ok=True)
        fs.put_file(str(run.path / rel), remote)


def _present(fs, target: str, run: RunDir, store: str) -> dict:
    bad = stored_problems(fs, target)
    if bad:
        raise VerifyError(f"{store}: the stored copy of {run.path.name} is damaged ({'; '.join(bad)})",
                          fix="ask the store's owner to remove it, then push again")
    return {"run_dir": str(run.path), "stored": f"{store.rstrip('/')}/{_rel(run)}", "status": "present"}


# -- pull -----------------------------------------------------------------------------------------------------
def find(fs, root: str, ref: str) -> str:
    """The stored run for ``<pipeline>/<stage>-<id12>``, a run id or a unique id prefix."""
    ref = ref.strip().strip("/")
    if "/" in ref:
        target = posixpath.join(root, ref)
        if not fs.exists(target):
            raise UsageError(f"no run {ref} in the store {root}", fix="list it with `ls` on the store")
        return target
    short = ref[:12]
    hits = sorted({p.rstrip("/") for p in fs.glob(posixpath.join(root, "*", f"*-{short}*"))
                   if not posixpath.basename(p.rstrip("/")).startswith(".")})
    if len(ref) > 12:  # a full id: the run.json must agree
        hits = [h for h in hits if _stored_info(fs, h).get("id", "").startswith(ref)]
    if not hits:
        raise UsageError(f"no run matches {ref!r} in the store {root}", fix="push it first, or check the id")
    if len(hits) > 1:
        raise UsageError(f"{ref!r} matches {len(hits)} stored runs", fix="give more characters of the id")
    return hits[0]


def _stored_info(fs, target: str) -> dict:
    try:
        with fs.open(posixpath.join(target, "run.json"), "rb") as f:
            return json.loads(f.read())
    except (OSError, ValueError):
        return {}


def pull(ref: str, store: str, runs_dir: Path, log=print, *, run_id: str | None = None) -> dict:
    """Copy one complete stored run into the runs folder (verified; nothing is left behind when it fails)."""
    fs, root = open_store(store)
    target = find(fs, root, ref)
    info = _stored_info(fs, target)
    name = posixpath.basename(target)
    pipeline = posixpath.basename(posixpath.dirname(target))
    if not fs.exists(posixpath.join(target, MANIFEST)) or info.get("status") != "complete":
        raise UsageError(f"{store}: {pipeline}/{name} is not a complete run (status: {info.get('status', 'unknown')})",
                         fix="only complete runs can be pulled; push it again from where it finished")
    if run_id is not None and info.get("id") != run_id:
        raise VerifyError(f"{store}: {pipeline}/{name} holds run {str(info.get('id'))[:12]}, not {run_id[:12]}",
                          fix="the store's copy is misnamed; ask its owner to remove it")
    if info.get("pipeline") != pipeline or name.rsplit("-", 1)[-1] != str(info.get("id", ""))[:12]:
        raise VerifyError(f"{store}: {pipeline}/{name} is not where its run.json says it belongs",
                          fix="the store's copy is misplaced or edited; ask its owner to remove it")
    dest = Path(runs_dir) / pipeline / name
    existing = RunDir(dest)
    if existing.is_complete():
        log(f"already here: {dest}")
        return {"stored": f"{store.rstrip('/')}/{pipeline}/{name}", "run_dir": str(dest), "status": "present"}
    runs_dir = Path(runs_dir)
    created = [p for p in (runs_dir, runs_dir / pipeline) if not p.exists()]
    runs_dir.mkdir(parents=True, exist_ok=True)
    tmp = runs_dir / f".pull-{uuid.uuid4().hex[:12]}"
    try:
        fs.get(target.rstrip("/") + "/", str(tmp / "run") + "/", recursive=True)
        got = RunDir(tmp / "run")
        from .verify import check_artifacts

        try:
            art = check_artifacts(got)
        except VerifyError as e:
            raise VerifyError(f"{store}: {pipeline}/{name}: {e.message}", fix="nothing was copied") from None
        problems = [f"{k}: {', '.join(art[k][:5])}" for k in ("changed", "removed", "added") if art[k]]
        if problems:
            raise VerifyError(f"{store}: {pipeline}/{name} failed verification on the way in ({'; '.join(problems)})",
                              fix="nothing was copied; ask the store's owner to push it again")
        dest.parent.mkdir(parents=True, exist_ok=True)
        if existing.exists() or dest.exists():  # an interrupted local run of this id: the stored one replaces it
            if existing.lock_held():
                raise UsageError(f"run {dest} is being written by another medrun process", fix="wait for it")
            dest.rename(tmp / "old")
        os.rename(tmp / "run", dest)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        for p in reversed(created):
            with contextlib.suppress(OSError):
                if p.exists() and not any(p.iterdir()):
                    p.rmdir()
    log(f"pulled {store.rstrip('/')}/{pipeline}/{name} -> {dest}")
    return {"stored": f"{store.rstrip('/')}/{pipeline}/{name}", "run_dir": str(dest), "status": "pulled"}


def fetch(store: str, runs_dir: Path, path: Path, run_id: str, log=print) -> bool:
    """``--store``: pull the planned run from the store when it is complete there; False when it is not stored."""
    fs, root = open_store(store)
    rel = f"{Path(path).parent.name}/{Path(path).name}"
    target = posixpath.join(root, rel)
    if not fs.exists(posixpath.join(target, MANIFEST)) or _stored_info(fs, target).get("id") != run_id:
        return False
    pull(rel, store, runs_dir, log=log, run_id=run_id)
    return True


def resolve_local(runs_dir: Path, ref: str) -> RunDir:
    return resolve_run(runs_dir, ref)
