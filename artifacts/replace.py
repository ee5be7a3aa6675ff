"""Replacing a folder without ever deleting something medrun did not write.

Every command that replaces a folder (``export --force``, ``fixture --out``, the fixture cache, ``--force`` on a run)
goes through here, because a typo in ``--out`` (``.``, ``~``, the runs folder, ``/``) must never cost a user their
files. ``check_target`` resolves symlinks first, then refuses the file system root, the home folder, the current
folder and the runs folders (and every folder holding one of them), the source the command reads from, a path that
is a file, and an existing non-empty folder without medrun's marker file in it. ``replace_dir`` builds the new
content in a hidden folder beside the target, renames the old folder aside, renames the new one into place, and
only then removes the renamed-aside folder: the one ``rmtree`` it does is of a folder already checked to be
medrun's, and a failure at any step leaves the old folder where it was.
"""

from __future__ import annotations

import errno
import json
import os
import secrets
import shutil
import tempfile
from collections.abc import Callable, Iterable
from pathlib import Path

from medrun.errors import UsageError

from .rundir import umask

BUNDLE_MARKER = ".medrun-bundle.json"
FIXTURE_MARKER = ".medrun-fixture.json"
RUN_MARKERS = ("run.json", ".lock")  # .lock is a run's first file, run.json comes a few writes later


def _resolve(p: Path) -> Path:
    return Path(p).expanduser().resolve()


def check_target(target: Path, *, marker: str | tuple[str, ...], force: bool, runs: Iterable[Path] = (),
                 sources: Iterable[Path] = (), option: str = "--out") -> Path:
    """The resolved target, or a UsageError saying why replacing it could destroy what is not medrun's.

    ``runs``: runs folders (refused with every folder holding them); ``sources``: folders the command reads (also
    refused when the target lies inside them or holds them)."""
    t = _resolve(target)
    if t.exists() and not t.is_dir():
        raise UsageError(f"{option} {t} is a file, not a folder", fix=f"pass a new or empty folder as {option}")
    home, cwd = _resolve(Path.home()), _resolve(Path.cwd())
    guarded = [("the file system root", Path(t.anchor)), ("your home folder", home), ("the current folder", cwd),
               *(("the runs folder", _resolve(r)) for r in runs)]
    for what, p in guarded:
        if t == p or t in p.parents:
            why = f"it is {what}" if t == p else f"it holds {what} {p}"
            raise UsageError(f"refusing to replace {t}: {why}", fix=f"pass a new folder of its own as {option}")
    for s in map(_resolve, sources):
        why = "it is" if t == s else "it holds" if t in s.parents else "it lies inside" if s in t.parents else None
        if why:
            raise UsageError(
                f"refusing to write {t}: {why} the source {s}", fix=f"pass a folder outside {s} as {option}"
            )
    markers = (marker,) if isinstance(marker, str) else marker
    if t.is_dir() and any(t.iterdir()):
        if not any((t / m).exists() for m in markers):
            raise UsageError(f"{t} is not empty and was not written by medrun (it has no {markers[0]})",
                             fix=f"pass a new or empty folder as {option}; medrun replaces only folders it wrote")
        if not force:
            raise UsageError(
                f"{t} exists and is not empty", fix=f"choose another {option}, or add --force to replace it"
            )
    return t


def replace_dir(
    target: Path,
    build: Callable[[Path], object],
    *,
    marker: str,
    marker_data: Callable[[Path, object], dict],
    force: bool,
    runs: Iterable[Path] = (),
    sources: Iterable[Path] = (),
    option: str = "--out",
    lost_race_ok: bool = False,
) -> tuple[Path, object]:
    """Check ``target``, let ``build(folder)`` fill a new hidden folder beside it, write the marker (with
    ``marker_data(folder, build's result)``) and swap the folder into place. Returns (resolved target, result).

    ``lost_race_ok``: another process may put the same content in place first (the fixture cache); then its
    folder is kept and ours dropped."""
    t = check_target(target, marker=marker, force=force, runs=runs, sources=sources, option=option)
    t.parent.mkdir(parents=True, exist_ok=True)
    new = Path(tempfile.mkdtemp(prefix=f".{t.name}.new-", dir=t.parent))
    try:
        os.chmod(new, 0o777 & ~umask())  # mkdtemp's 0700 would make a bundle or fixture private to this user
        result = build(new)
        (new / marker).write_text(json.dumps(marker_data(new, result), indent=1) + "\n")
        _swap_in(new, t, marker if lost_race_ok else None)
    except BaseException:
        shutil.rmtree(new, ignore_errors=True)  # ours: made by mkdtemp above
        raise
    return t, result


def _swap_in(new: Path, target: Path, race_marker: str | None) -> None:
    aside = None
    if target.exists():
        aside = target.with_name(f".{target.name}.old-{secrets.token_hex(4)}")
        os.rename(target, aside)
    try:
        os.rename(new, target)
    except OSError as e:
        if race_marker and e.errno in (errno.ENOTEMPTY, errno.EEXIST) and (target / race_marker).exists():
            shutil.rmtree(new, ignore_errors=True)  # another process won the rename with the same content
            return
        if aside is not None:
            os.rename(aside, target)  # put the old folder back
        raise
    if aside is not None:
        shutil.rmtree(aside, ignore_errors=True)


def remove_dir(path: Path, *, marker: str | tuple[str, ...]) -> bool:
    """Remove a folder medrun wrote (it holds ``marker``): rename it aside first, so a half-removed folder never
    looks whole. Returns False (and removes nothing) when the marker is missing."""
    markers = (marker,) if isinstance(marker, str) else marker
    if not any((path / m).exists() for m in markers):
        return False
    aside = path.with_name(f".{path.name}.old-{secrets.token_hex(4)}")
    os.rename(path, aside)
    shutil.rmtree(aside, ignore_errors=True)
    return True
