"""Launchers for sweep children (issue 24): ``--launcher local:N`` runs the children that are not complete in N
worker processes, and the results are bitwise those of the sequential sweep; a killed child resumes on the next
call; the launcher never changes a run id."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from medrun.errors import UsageError
from medrun.pipelines import launch

TINY = ["--dataset", "oasis", "--fixture", "-o", "dataset.img_size=32", "-o", "train.epochs=1",
        "-o", "dataset.folds=3", "-o", "train.batch_size=16", "-o", "trainer.checkpoint_every_n_steps=2"]


def _medrun(args, runs, cache, **env):
    return subprocess.run([sys.executable, "-m", "medrun.cli.main", *map(str, args), "--runs-dir", str(runs)],
                          env={**os.environ, "MEDRUN_PLAIN": "1", "MEDRUN_CACHE": str(cache), "OMP_NUM_THREADS": "1",
                               **env},
                          capture_output=True, text=True, timeout=900)


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _results(out: dict) -> dict:
    """Each child's weights sha256, by child name, from the parent's run.json (a cv) or the members (replicates).
    By name, not by run id: the launcher never changes ids (``test_the_launcher_never_changes_a_run_id``), but in a
    tree that other people edit while this runs, the code fingerprint of two calls minutes apart may differ."""
    info = json.loads((Path(out["run_dir"]) / "run.json").read_text())
    children = info.get("children") or [{"name": f"seed{m['seed']}", **m} for m in info.get("members", [])]
    return {c["name"]: _sha(Path(c["run_dir"]) / "checkpoints" / "model.safetensors") for c in children}


def _same_metrics(a: dict, b: dict) -> dict:
    timing = ("seconds", "secs_per")
    keep = lambda d: {k: v for k, v in d.items() if not any(t in k for t in timing)}  # noqa: E731
    assert keep(a) == keep(b)
    return keep(a)


# -- fast ---------------------------------------------------------------------------------------------------------
def test_parse_launchers():
    assert launch.parse(None) == launch.Launcher("local", 1) and not launch.parse("local").parallel
    assert launch.parse("local:3") == launch.Launcher("local", 3) and launch.parse("local:3").parallel
    assert str(launch.parse("local:2")) == "local:2" and launch.parse("submitit-local").kind == "submitit-local"
    assert launch.parse("submitit-local:2") == launch.Launcher("submitit-local", 2) and launch.parse("slurm").parallel
    for bad in ("local:0", "local:x", "gpu", "slurm:3", "local:"):
        with pytest.raises(UsageError):
            launch.parse(bad)
    assert launch.child_threads(1) == launch.cpu_count() and launch.child_threads(10_000) == 1


def test_request_survives_the_process_boundary():
    from medrun.pipelines.runner import Request

    req = Request(pipeline="ad-lite", stage="train", dataset="oasis", overrides=["seed=3"], fixture=True,
                  runs_dir=Path("/x/runs"), checkpoint=Path("/x/a.ckpt"), trainer={"devices": 1}, argv=["medrun"],
                  log_to=("mlflow",), launcher="local:4")
    back = launch.request_from_json(json.loads(json.dumps(launch.request_to_json(req))))
    assert back == Request(**{**req.__dict__, "launcher": "local"})  # a worker runs nested sweeps in turn


def test_a_bad_launcher_is_one_line_and_exit_2(cli, runs):
    r = cli("cv", "ad-lite", "--dataset", "oasis", "--fixture", "--launcher", "cluster", "--runs-dir", runs)
    assert r.code == 2 and "unknown launcher 'cluster'" in r.err and "Traceback" not in r.err
    assert not runs.exists()


def test_the_launcher_never_changes_a_run_id(cli, runs):
    base = ["train", "ad-lite", *TINY, "--runs-dir", runs, "--dry-run", "--json"]
    plain = cli(*base)
    assert plain.code == 0, plain.err
    other = cli(*base, "--launcher", "local:2", "-o", "launcher.gpus=2", "-o", "launcher.partition=gpu",
                "-o", "launcher.time_min=30")
    assert other.code == 0, other.err
    assert other.json()["run_id"] == plain.json()["run_id"]


def test_doctor_names_the_launchers(cli):
    r = cli("doctor", "--json")
    launchers = r.json()["launchers"]
    assert launchers["local"].startswith("yes") and set(launchers) == {"local", "submitit-local", "slurm"}


# -- end to end ---------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def sequential_cv(tmp_path_factory):
    """The 3-fold cv run in turn in one process: what every launcher must reproduce bit for bit."""
    runs = tmp_path_factory.mktemp("seq")
    seq = _medrun(["cv", "ad-lite", *TINY, "--json"], runs, _cache())
    assert seq.returncode == 0, seq.stderr
    return json.loads(seq.stdout)


def _cache() -> Path:  # the session's fixture cache: the oasis fixture is generated once
    return Path(os.environ["MEDRUN_CACHE"])


@pytest.mark.slow
def test_cv_on_local_2_equals_the_sequential_cv_and_a_killed_child_resumes(tmp_path, sequential_cv):
    par_runs = tmp_path / "par"
    killed = _medrun(["cv", "ad-lite", *TINY, "--launcher", "local:2"], par_runs, _cache(),
                     MEDRUN_TEST_KILL_AT_STEP="3")
    assert killed.returncode == 130, killed.stderr  # killed by a signal: interrupted, resumable
    err = killed.stderr.strip().splitlines()[-1]
    assert "failed: killed by SIGKILL" in err and "run dir" in err and "launcher.log" in err, killed.stderr
    assert "Traceback" not in killed.stderr and "epoch 1/1" not in killed.stderr  # children's output stays in logs
    assert not list(par_runs.glob("ad-lite/cv-*/MANIFEST.sha256"))  # nothing marked complete
    assert any((p / "checkpoints" / "last.ckpt").exists() for p in par_runs.glob("ad-lite/train-*"))
    done = _medrun(["cv", "ad-lite", *TINY, "--launcher", "local:2", "--json"], par_runs, _cache())
    assert done.returncode == 0, done.stderr
    assert "epoch 1/1" not in done.stderr and "complete" in done.stderr
    a, b = sequential_cv, json.loads(done.stdout)
    _same_metrics(a["metrics"], b["metrics"])
    weights = _results(b)
    assert len(weights) == 3 and weights == _results(a)
    for child in json.loads((par_runs / Path(b["run_dir"]).relative_to(par_runs) / "run.json").read_text())["children"]:
        log = Path(child["run_dir"]) / "logs" / "launcher.log"
        assert "epoch 1/1" in log.read_text() and not child["reused"]
    from medrun.artifacts import RunDir
    from medrun.artifacts.verify import failures, verify_run

    for run in [Path(b["run_dir"]), *par_runs.glob("ad-lite/train-*")]:
        assert not failures(verify_run(RunDir(run))), run


@pytest.mark.slow
def test_submitit_local_gives_the_sequential_cv(tmp_path, sequential_cv):
    pytest.importorskip("submitit")
    sub = _medrun(["cv", "ad-lite", *TINY, "--json", "--launcher", "submitit-local:2"], tmp_path / "sub", _cache())
    assert sub.returncode == 0, sub.stderr
    a, b = sequential_cv, json.loads(sub.stdout)
    _same_metrics(a["metrics"], b["metrics"])
    weights = _results(b)
    assert len(weights) == 3 and weights == _results(a)
    assert list((tmp_path / "sub" / ".submitit").iterdir())  # submitit's own files, outside any run
    for run in (tmp_path / "sub").glob("ad-lite/train-*"):
        assert "epoch 1/1" in (run / "logs" / "launcher.log").read_text()


@pytest.mark.slow
def test_replicates_on_local_2_equal_the_sequential_ones(tmp_path):
    args = ["train", "ad-lite", *TINY, "--seeds", "0,1", "--json"]
    seq = _medrun(args, tmp_path / "seq", _cache())
    assert seq.returncode == 0, seq.stderr
    par = _medrun([*args, "--launcher", "local:2"], tmp_path / "par", _cache())
    assert par.returncode == 0, par.stderr
    a, b = json.loads(seq.stdout), json.loads(par.stdout)
    _same_metrics(a["metrics"], b["metrics"])
    weights = _results(b)
    assert len(weights) == 2 and weights == _results(a)
    again = _medrun([*args, "--launcher", "local:2"], tmp_path / "par", _cache())  # all complete: reused, no worker
    assert again.returncode == 0 and json.loads(again.stdout)["reused"] and "running" not in again.stderr


def test_a_child_another_process_is_writing_is_waited_for_then_reused(runs, make_run, data):
    import fcntl
    import threading
    from types import SimpleNamespace

    from medrun.pipelines.runner import Request

    path = make_run(runs, data)
    plan = SimpleNamespace(path=path, run_id="ab" * 32, spec=SimpleNamespace(slug="ad-lite"),
                           request=Request(pipeline="ad-lite", stage="train", runs_dir=runs), manifest=None)
    fd = os.open(path / ".lock", os.O_RDWR)
    fcntl.flock(fd, fcntl.LOCK_EX)  # as a medrun process writing this run holds it
    threading.Timer(1.0, lambda: os.close(fd)).start()
    lines = []
    assert launch.launch_children(launch.parse("local:2"), [("fold1", plan)], log=lines.append, title="fold") == set()
    assert any(": waiting " in ln for ln in lines) and any(": reused " in ln for ln in lines), lines
