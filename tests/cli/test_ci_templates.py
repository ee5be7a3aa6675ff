"""The CI templates users copy (ci/): the GitHub workflow passes actionlint; the GitLab file has the expected jobs."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

CI = Path(__file__).resolve().parents[2] / "ci"


def _actionlint() -> str | None:
    here = Path(sys.executable).parent / "actionlint"  # the dev extra installs it into the environment
    return str(here) if here.exists() else shutil.which("actionlint")


def test_github_workflow_passes_actionlint():
    exe = _actionlint()
    if exe is None:
        pytest.skip("actionlint is not installed: pip install -e '.[dev]' (make setup) installs it")
    r = subprocess.run([exe, "-no-color", str(CI / "github-actions.yml")], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr


def test_github_workflow_runs_setup_test_smoke_and_keeps_the_table():
    wf = yaml.safe_load((CI / "github-actions.yml").read_text())
    steps = wf["jobs"]["test-and-smoke"]["steps"]
    runs = " ".join(s.get("run", "") for s in steps)
    assert "make setup" in runs and "make test" in runs and "medrun smoke" in runs and "> smoke.json" in runs
    cache = next(s for s in steps if s.get("uses", "").startswith("actions/cache@"))
    assert ".medrun-cache" in cache["with"]["path"] and "runs" in cache["with"]["path"].split()
    upload = next(s for s in steps if s.get("uses", "").startswith("actions/upload-artifact@"))
    assert upload["if"] == "always()" and "smoke.json" in upload["with"]["path"]
    assert wf["env"]["MEDRUN_CACHE"].endswith(".medrun-cache") and wf["env"]["MEDRUN_RUNS"].endswith("/runs")


def test_gitlab_file_parses_with_the_expected_jobs():
    gl = yaml.safe_load((CI / "gitlab-ci.yml").read_text())
    assert gl["stages"] == ["test", "smoke"]
    assert gl["test"]["script"] == ["make test"] and gl[".setup"]["before_script"] == ["make setup"]
    smoke = gl["smoke"]
    assert "medrun smoke" in smoke["script"][0] and "smoke.json" in smoke["artifacts"]["paths"]
    assert smoke["artifacts"]["when"] == "always"
    paths = [p for c in smoke["cache"] for p in c["paths"]]
    assert {".medrun-cache", "runs", ".cache/pip"} <= set(paths)
    assert gl["variables"]["MEDRUN_CACHE"] == "$CI_PROJECT_DIR/.medrun-cache"
