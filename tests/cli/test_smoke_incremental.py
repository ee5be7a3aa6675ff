"""Incremental smoke (issue 25): ``--changed-since`` maps changed files to the pipelines that cover them."""

from __future__ import annotations

import subprocess

import pytest

from medrun.artifacts import fingerprint
from medrun.pipelines import smoke


def _git(root, *args):
    subprocess.run(["git", "-C", str(root), "-c", "user.email=t@t", "-c", "user.name=t", *args], check=True,
                   capture_output=True)


@pytest.fixture
def repo(tmp_path):
    root = tmp_path / "repo"
    for rel in ("pipelines/ad_lite/pipeline.py", "models/unext.py", "README.md"):
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text("x = 1\n")
    (root / ".gitignore").write_text("runs/\n")
    _git(root, "init", "-q")
    _git(root, "add", ".")
    _git(root, "commit", "-q", "-m", "one")
    return root


def test_changed_files_are_the_diff_plus_untracked_not_ignored(repo):
    assert smoke.changed_files("HEAD", repo) == set()
    (repo / "models/unext.py").write_text("x = 2\n")
    (repo / "pipelines/ad_lite/new.py").write_text("y = 1\n")
    (repo / "runs").mkdir()
    (repo / "runs/ignored.py").write_text("")
    _git(repo, "rm", "-q", "README.md")
    assert smoke.changed_files("HEAD", repo) == {"models/unext.py", "pipelines/ad_lite/new.py", "README.md"}


@pytest.mark.parametrize("changed, want", [
    ({"pipelines/ad_lite/pipeline.py"}, ["ad-lite"]),
    ({"models/unext.py"}, ["sc-unext"]),
    ({"pipelines/runner.py"}, ["ad-lite", "sc-unext"]),
    ({"artifacts/rundir.py"}, ["ad-lite", "sc-unext"]),
    ({"manifests/sc-unext/isic2018.fixture.yaml"}, ["sc-unext"]),
    ({"manifests/_base/classification.yaml"}, ["ad-lite", "sc-unext"]),
    ({"README.md", "docs/performance.md", "cli/info.py", "pipelines/sm_safe/pipeline.py"}, []),
])
def test_affected_pipelines(changed, want):
    assert smoke.affected(["ad-lite", "sc-unext"], changed) == want


def test_changed_since_runs_only_affected_pipelines(cli, runs, monkeypatch):
    seen = []
    monkeypatch.setattr(smoke, "changed_files", lambda ref: {"models/unext.py"})
    monkeypatch.setattr(smoke, "run", lambda slugs, *a, **k: (seen.append(slugs), ([], 0))[1])
    r = cli("smoke", "ad-lite", "sc-unext", "--changed-since", "origin/main", "--runs-dir", runs, "--json")
    assert r.code == 0, r.err
    assert seen == [["sc-unext"]] and r.json()["skipped"] == ["ad-lite"]
    assert "unchanged since origin/main, not run: ad-lite" in r.err


def test_changed_since_with_nothing_changed_runs_nothing(cli, runs, monkeypatch):
    monkeypatch.setattr(smoke, "changed_files", lambda ref: {"README.md"})
    monkeypatch.setattr(smoke, "run", lambda *a, **k: pytest.fail("nothing should run"))
    r = cli("smoke", "--changed-since", "HEAD", "--runs-dir", runs, "--json")
    assert r.code == 0 and r.json()["rows"] == [] and "ad-lite" in r.json()["skipped"]


def test_changed_since_outside_a_git_checkout_is_a_usage_error(cli, runs, tmp_path, monkeypatch):
    """An installed wheel has no git history to compare with (an unknown ref: tests/hostile)."""
    bare = tmp_path / "bare"
    bare.mkdir()
    monkeypatch.setattr(fingerprint, "source_root", lambda: bare)
    r = cli("smoke", "--changed-since", "HEAD", "--runs-dir", runs)
    assert r.code == 2 and "git checkout" in r.err and len(r.err.strip().splitlines()) == 1
