"""``--detach`` (issue 24): checks and plans in the terminal, then runs the same command in the background."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

ARGS = ["train", "ad-lite", "--dataset", "oasis", "--fixture", "-o", "dataset.img_size=32", "-o", "train.epochs=1"]


def _medrun(args, tmp_path):
    return subprocess.run([sys.executable, "-m", "medrun.cli.main", *map(str, args)], cwd=tmp_path,
                          env={**os.environ, "MEDRUN_PLAIN": "1"}, capture_output=True, text=True, timeout=300)


def test_a_bad_command_fails_in_the_terminal_and_starts_nothing(tmp_path):
    r = _medrun([*ARGS, "-o", "train.epochs=-1", "--detach", "--runs-dir", tmp_path / "runs"], tmp_path)
    assert r.returncode == 2 and "Traceback" not in r.stderr and "train.epochs" in r.stderr
    assert not (tmp_path / "runs").exists()
    r = _medrun([*ARGS, "--detach", "--dry-run"], tmp_path)
    assert r.returncode == 2 and "--detach and --dry-run" in r.stderr


@pytest.mark.slow
def test_detached_run_finishes_in_the_background_and_is_an_ordinary_run(tmp_path):
    runs = tmp_path / "runs"
    r = _medrun([*ARGS, "--detach", "--json", "--runs-dir", runs], tmp_path)
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["status"] == "detached" and out["pid"] > 0 and Path(out["log"]).parent == runs / "ad-lite" / ".detached"
    run = Path(out["run_dir"])
    deadline = time.time() + 240
    while not (run / "MANIFEST.sha256").exists() and time.time() < deadline:
        time.sleep(0.5)
    assert (run / "MANIFEST.sha256").exists(), Path(out["log"]).read_text()
    log = Path(out["log"]).read_text()
    assert "epoch 1/1" in log and "Traceback" not in log
    again = _medrun([*ARGS, "--json", "--runs-dir", runs], tmp_path)  # the same command in the foreground: reused
    assert json.loads(again.stdout)["reused"] and json.loads(again.stdout)["run_id"] == out["run_id"]
