"""Harness for the hostile-user suite: run ``medrun`` as a user would (a subprocess with real files, real signals
and resource limits) and check what it left behind.

``medrun_proc(*args, env=..., cwd=..., preexec=...)`` returns the CompletedProcess (text mode). ``snapshot(root)``
records every path under ``root`` with its size, mtime and content hash, so a test can assert that nothing outside a
run directory changed: ``assert snapshot(home) == before``. ``assert_one_line_error(proc, code)`` checks the exit code,
that stderr holds no traceback, and that the error is a single line.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import pytest


@pytest.fixture
def medrun_proc(tmp_path):
    def run(*args, env: dict | None = None, cwd: Path | None = None, timeout: float = 300, preexec=None, input=None):
        full_env = {**os.environ, "MEDRUN_PLAIN": "1", **(env or {})}
        return subprocess.run([sys.executable, "-m", "medrun.cli.main", *map(str, args)], env=full_env,
                              cwd=str(cwd or tmp_path), capture_output=True, text=True, timeout=timeout,
                              preexec_fn=preexec, input=input)

    return run


def snapshot(root: Path) -> dict[str, tuple]:
    """{relative path: (kind, size, mtime_ns, sha256 or link target)} of everything under root (links not followed)."""
    out = {}
    root = Path(root)
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        for name in dirnames + filenames:
            p = Path(dirpath) / name
            st = p.lstat()
            rel = p.relative_to(root).as_posix()
            if p.is_symlink():
                out[rel] = ("link", os.readlink(p))
            elif p.is_dir():
                out[rel] = ("dir",)
            else:
                out[rel] = ("file", st.st_size, st.st_mtime_ns, hashlib.sha256(p.read_bytes()).hexdigest())
    return out


@pytest.fixture
def snap():
    return snapshot


def assert_one_line_error(proc, code: int, *needles: str) -> str:
    """Exit ``code``, no traceback, one ``error:`` line on stderr containing each needle (case-insensitive)."""
    err = proc.stderr
    assert proc.returncode == code, f"exit {proc.returncode}, want {code}\nstdout: {proc.stdout}\nstderr: {err}"
    assert "Traceback" not in err, err
    lines = [ln for ln in err.splitlines() if ln.startswith("error:")]
    assert len(lines) == 1, err
    for n in needles:
        assert n.lower() in lines[0].lower(), f"{n!r} not in {lines[0]!r}"
    return lines[0]


@pytest.fixture
def one_line_error():
    return assert_one_line_error
