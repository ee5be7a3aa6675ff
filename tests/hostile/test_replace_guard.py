"""Commands that replace a folder (``export --force``, ``fixture --out``, ``--force`` on a run) refuse anything that
is not a folder medrun wrote: the current folder, home, ``/``, the runs folder, the source run, a user's folder. Each
refusal exits 2 with one line and changes nothing; replacing an earlier bundle or fixture works."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from medrun.artifacts import RunDir
from medrun.artifacts.replace import BUNDLE_MARKER, FIXTURE_MARKER, replace_dir
from medrun.errors import UsageError


def trained_run() -> tuple[Path, Path]:
    """A complete one-epoch ad-lite train run at 32 px. It lives beside the session's fixture cache, so every
    hostile module that asks for it after the first reuses the same run (same id) instead of training again; one
    runs folder per xdist worker, so one worker's snapshot never sees another's writes."""
    from medrun.cli.main import main

    runs = Path(os.environ["MEDRUN_CACHE"]) / f"hostile-runs-{os.environ.get('PYTEST_XDIST_WORKER', 'main')}"
    args = ["train", "ad-lite", "--dataset", "oasis", "--fixture", "-o", "train.epochs=1", "-o", "dataset.img_size=32",
            "--runs-dir", str(runs)]
    assert main(args) == 0
    return runs, next((runs / "ad-lite").glob("train-*"))


@pytest.fixture(scope="module")
def trained():
    return trained_run()


@pytest.fixture
def work(tmp_path):
    """A user's folder with files in it, the cwd of the commands."""
    w = tmp_path / "work"
    (w / "notes").mkdir(parents=True)
    (w / "notes" / "thesis.tex").write_text("years of work")
    (w / "scan.png").write_bytes(b"\x89PNG real image")
    return w


def _env(runs: Path, **extra) -> dict:
    return {"MEDRUN_RUNS": str(runs), **extra}


@pytest.mark.parametrize("where", [".", "runs", "/", "home", "source", "inside-source", "user", "runs-link"])
def test_export_force_refuses_what_it_did_not_write(where, trained, work, tmp_path, medrun_proc, snap, one_line_error):
    runs, run = trained
    home = tmp_path / "home"
    (home / ".ssh").mkdir(parents=True)
    (home / ".ssh" / "id_ed25519").write_text("key")
    (work / "runs-link").symlink_to(runs)
    out = {".": ".", "runs": runs, "/": "/", "home": home, "source": run, "inside-source": run / "figures",
           "user": work / "notes", "runs-link": "runs-link"}[where]
    watched = [work, runs, home]
    before = [snap(d) for d in watched]
    proc = medrun_proc("export", run, "--out", out, "--force", env=_env(runs, HOME=str(home)), cwd=work)
    line = one_line_error(proc, 2)
    assert "refusing" in line or "not written by medrun" in line
    assert [snap(d) for d in watched] == before


def test_export_into_a_file_is_refused(trained, work, medrun_proc, snap, one_line_error):
    runs, run = trained
    before = snap(work)
    one_line_error(medrun_proc("export", run, "--out", work / "scan.png", env=_env(runs), cwd=work), 2, "is a file")
    assert snap(work) == before


def test_export_replaces_an_earlier_bundle_only_with_force(trained, work, medrun_proc, snap, one_line_error):
    runs, run = trained
    bundle = work / "bundle"
    first = medrun_proc("export", run, "--out", bundle, env=_env(runs), cwd=work)
    assert first.returncode == 0, first.stderr
    assert (bundle / BUNDLE_MARKER).is_file() and (bundle / "models" / "model.pt").is_file()
    one_line_error(medrun_proc("export", run, "--out", bundle, env=_env(runs), cwd=work), 2, "not empty")
    (bundle / "docs" / "README.md").write_text("edited")
    outside = snap(work / "notes"), snap(runs)
    again = medrun_proc("export", run, "--out", bundle, "--force", env=_env(runs), cwd=work)
    assert again.returncode == 0, again.stderr
    assert (bundle / "docs" / "README.md").read_text() != "edited"
    assert (snap(work / "notes"), snap(runs)) == outside
    assert sorted(p.name for p in work.iterdir()) == ["bundle", "notes", "scan.png"]  # nothing left aside


def test_fixture_out_refuses_a_non_empty_folder(tmp_path, medrun_proc, snap, one_line_error):
    mine = tmp_path / "mine"
    (mine / "Data" / "Mild Dementia").mkdir(parents=True)
    real = mine / "Data" / "Mild Dementia" / "OAS1_0028_MR1_mpr-1_100.jpg"
    real.write_bytes(b"a real patient slice")
    before = snap(tmp_path)
    for extra in ([], ["--force"]):  # not medrun's: refused even with --force
        one_line_error(medrun_proc("fixture", "oasis", "--out", mine, *extra), 2, str(mine))
    one_line_error(medrun_proc("fixture", "oasis", "--out", real), 2, "is a file")
    assert snap(tmp_path) == before


def test_fixture_out_replaces_its_own_fixture_with_force(tmp_path, medrun_proc, snap, one_line_error):
    out = tmp_path / "mini"
    assert medrun_proc("fixture", "oasis", "--out", out).returncode == 0
    assert (out / FIXTURE_MARKER).is_file()
    rel = next(p for p in out.rglob("*.jpg")).relative_to(out)
    elsewhere = tmp_path / "elsewhere" / rel  # a user's file with the same relative name, in another folder
    elsewhere.parent.mkdir(parents=True)
    elsewhere.write_bytes(b"a real patient slice")
    one_line_error(medrun_proc("fixture", "oasis", "--out", out), 2, "not empty")
    before = snap(tmp_path / "elsewhere")
    (out / rel).write_bytes(b"stale")
    proc = medrun_proc("fixture", "oasis", "--out", out, "--force")
    assert proc.returncode == 0, proc.stderr
    assert (out / rel).read_bytes() != b"stale" and snap(tmp_path / "elsewhere") == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["elsewhere", "mini"]


def test_force_on_a_run_refuses_a_folder_that_is_not_a_run(tmp_path, snap):
    folder = tmp_path / "runs" / "ad-lite" / "train-abc"
    folder.mkdir(parents=True)
    (folder / "results.csv").write_text("mine")
    before = snap(tmp_path)
    with pytest.raises(UsageError, match="not written by medrun"):
        RunDir(folder).open(force=True)
    assert snap(tmp_path) == before


def test_force_on_a_run_empties_it_and_keeps_its_lock(tmp_path):
    run = RunDir(tmp_path / "runs" / "ad-lite" / "train-abc").open()
    run.write_json("run.json", {"status": "failed"})
    run.write_text("checkpoints/last.ckpt", "old")
    run.close()
    lock_inode = (run.path / ".lock").stat().st_ino
    again = RunDir(run.path).open(force=True)
    try:
        assert sorted(p.name for p in run.path.iterdir()) == [".lock", "checkpoints", "figures", "logs"]
        assert not any((run.path / "checkpoints").iterdir())
        assert (run.path / ".lock").stat().st_ino == lock_inode
    finally:
        again.close()


def test_a_failed_build_leaves_the_old_folder_and_no_leftovers(tmp_path, snap):
    old = tmp_path / "out"
    old.mkdir()
    (old / BUNDLE_MARKER).write_text("{}")
    (old / "model.pt").write_text("previous")
    before = snap(tmp_path)

    def build(folder: Path):
        (folder / "model.pt").write_text("half")
        raise OSError(28, "No space left on device")

    with pytest.raises(OSError):
        replace_dir(old, build, marker=BUNDLE_MARKER, marker_data=lambda *_: {}, force=True)
    assert snap(tmp_path) == before
