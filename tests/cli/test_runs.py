"""medrun runs list/show/diff/compare and medrun rerun, through the CLI."""

import json

import pytest


@pytest.fixture
def two(runs, data, make_run):
    a = make_run(runs, data, run_id="aa" * 32, metrics={"accuracy": 0.5, "f1": 0.4})
    b = make_run(runs, data, run_id="bb" * 32, stage="eval", metrics={"accuracy": 0.75},
                 started="2026-01-02T00:00:00+0000", manifest_text="pipeline: ad-lite\nseed: 2\n")
    return a, b


def test_list_json_and_filters(cli, runs, two):
    r = cli("runs", "list", "--runs-dir", runs, "--json")
    assert r.code == 0, r.err
    assert [x["stage"] for x in r.json()["runs"]] == ["eval", "train"]
    assert [
        x["id"][:2] for x in cli("runs", "list", "--runs-dir", runs, "--stage", "train", "--json").json()["runs"]
    ] == ["aa"]
    assert cli("runs", "list", "--runs-dir", runs, "--status", "failed", "--json").json()["runs"] == []
    table = cli("runs", "list", "--runs-dir", runs)
    assert table.code == 0 and "aaaaaaaaaaaa" in table.out and "accuracy=0.7500" in table.out


def test_list_uses_env_var(cli, runs, two, monkeypatch):
    monkeypatch.setenv("MEDRUN_RUNS", str(runs))
    assert len(cli("runs", "list", "--json").json()["runs"]) == 2


def test_show(cli, runs, two):
    r = cli("runs", "show", "aa", "--runs-dir", runs, "--json")
    assert r.code == 0 and r.json()["complete"] and r.json()["metrics"]["f1"] == 0.4
    text = cli("runs", "show", two[1])
    assert text.code == 0 and "bbbbbbbbbbbb" in text.out and "accuracy" in text.out


def test_diff(cli, runs, two):
    r = cli("runs", "diff", "aa", "bb", "--runs-dir", runs, "--json")
    assert r.code == 0
    assert {"key": "seed", "a": 1, "b": 2} in r.json()["manifest"]
    text = cli("runs", "diff", "aa", "bb", "--runs-dir", runs)
    assert "seed: 1 -> 2" in text.out and "accuracy: 0.5000 -> 0.7500" in text.out and "(same fingerprint)" in text.out


def test_compare(cli, runs, two):
    r = cli("runs", "compare", "aa", "bb", "--runs-dir", runs, "--json")
    assert r.code == 0 and r.json()["columns"] == ["accuracy", "f1"]
    text = cli("runs", "compare", "aa", "bb", "--runs-dir", runs)
    assert "0.7500" in text.out and "0.4000" in text.out


def test_unknown_and_ambiguous(cli, runs, data, make_run):
    make_run(runs, data, run_id="abc1" + "0" * 60)
    make_run(runs, data, run_id="abc2" + "0" * 60)
    for args in (("runs", "show", "zz"), ("runs", "diff", "abc1", "zz"), ("runs", "compare", "zz")):
        r = cli(*args, "--runs-dir", runs)
        assert r.code == 2 and "no run matches 'zz'" in r.err
    many = cli("runs", "show", "abc", "--runs-dir", runs)
    assert many.code == 2 and "matches 2 runs" in many.err


def test_help_has_examples(cli):
    for cmd in (("verify",), ("runs",), ("runs", "list"), ("runs", "show"), ("runs", "diff"), ("runs", "compare"),
                ("rerun",)):
        r = cli(*cmd, "--help")
        assert r.code == 0 and "Examples" in r.out, cmd


# -- rerun ----------------------------------------------------------------------------------------------------
def medrun(*args, check=True):
    """``medrun ARGS`` in a fresh interpreter, as a user runs it: one training per process (see test below)."""
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-m", "medrun.cli.main", *map(str, args)], capture_output=True, text=True)
    assert not check or out.returncode == 0, out.stdout + out.stderr
    return out


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """One real fixture train run (ad-lite, oasis, determinism: strict on CPU) for the whole module."""
    runs = tmp_path_factory.mktemp("rerun") / "runs"
    medrun("train", "ad-lite", "--dataset", "oasis", "--fixture", "--runs-dir", runs, "-o", "train.epochs=2",
           "-o", "dataset.img_size=32")  # small: bitwise identity holds at any size
    (run,) = (runs / "ad-lite").glob("train-*")
    return runs, run


@pytest.mark.slow
def test_rerun_of_fixture_train_run_is_identical(cli, trained):
    """A strict CPU rerun gives bitwise-identical weights and metrics (docs/architecture.md, "Rerun")."""
    import json

    runs, run = trained
    manifest_before = (run / "MANIFEST.sha256").read_text()
    mtimes_before = {p: p.stat().st_mtime_ns for p in run.rglob("*")}
    r = medrun("rerun", run.name.split("-", 1)[1], "--runs-dir", runs, "--compare", "--json", check=False)
    assert r.returncode == 0, r.stdout + r.stderr
    out = json.loads(r.stdout)
    c = out["comparison"]
    assert c["identical"] and c["differences"] == [], c
    assert c["weights_sha256"]["original"] == c["weights_sha256"]["rerun"] is not None  # bitwise-identical weights
    assert out["same_id"] and out["warnings"] == []
    assert "/.reruns/" in out["rerun"] and out["rerun"] != str(run)
    # the original is never touched, and still verifies; the rerun is a complete run that verifies too
    assert (run / "MANIFEST.sha256").read_text() == manifest_before
    assert {p: p.stat().st_mtime_ns for p in run.rglob("*")} == mtimes_before
    assert cli("verify", run, "--strict").code == 0
    assert cli("verify", out["rerun"], "--strict").code == 0
    # reruns stay out of the index (and of `eval`'s search for a train run)
    assert [x["run_dir"] for x in cli("runs", "list", "--runs-dir", runs, "--json").json()["runs"]] == [str(run)]


def test_rerun_refuses_incomplete_run(cli, runs, data, make_run):
    run = make_run(runs, data, status="running")
    r = cli("rerun", run, "--compare")
    assert r.code == 2 and "not complete" in r.err
    assert not (runs / ".reruns").exists()


def test_rerun_unknown_id(cli, runs):
    r = cli("rerun", "ffff", "--runs-dir", runs)
    assert r.code == 2 and "no run matches 'ffff'" in r.err


def test_compare_runs_lists_every_difference(runs, data, make_run):
    from medrun.artifacts import RunDir
    from medrun.artifacts.reruns import compare_runs

    a = make_run(runs, data, run_id="aa" * 32, metrics={"accuracy": 0.5, "eval_seconds": 1.0, "per_class": {"x": 1}})
    b = make_run(runs, data, run_id="bb" * 32, metrics={"accuracy": 0.5, "eval_seconds": 2.0, "per_class": {"x": 2}})
    (b / "checkpoints" / "model.safetensors").write_text("other weights")
    c = compare_runs(RunDir(a), RunDir(b))
    assert not c["identical"]
    assert [d["what"] for d in c["differences"]] == ["metrics.per_class.x", "checkpoints/model.safetensors sha256"]
    assert [d["what"] for d in c["timings"]] == ["metrics.eval_seconds"]  # listed, not a difference
    same = compare_runs(RunDir(a), RunDir(a))
    assert same["identical"]


def test_a_stage_on_a_run_takes_its_dataset_and_fixture(cli, runs):
    """`medrun eval PIPELINE --run ID` needs no --dataset: the dataset and the fixture setting come from that run."""
    tr = cli("train", "ad-lite", "--dataset", "oasis", "--fixture", "-o", "train.epochs=1", "--runs-dir", runs,
             "--json")
    assert tr.code == 0, tr.err
    rid = tr.json()["run_id"]
    ev = cli("eval", "ad-lite", "--run", rid[:10], "--runs-dir", runs, "--json")
    assert ev.code == 0, ev.err
    info = json.loads((runs / "ad-lite" / f"eval-{ev.json()['run_id'][:12]}" / "run.json").read_text())
    assert info["dataset"] == "oasis" and info["fixture"] is True and info["parent"] == rid
    # told otherwise: --data-dir wins over the parent's fixture (here a folder that does not exist: exit 3)
    bad = cli("eval", "ad-lite", "--run", rid[:10], "--data-dir", runs / "nowhere", "--runs-dir", runs)
    assert bad.code == 3 and "nowhere" in bad.err


def test_list_headline_is_the_papers_metric_not_a_count():
    from medrun.cli.runs import headline

    assert headline({"n_cases": 12, "hd95": 3.1, "dice": 0.81}) == ("dice", 0.81)
    assert headline({"n": 40, "epochs": 3, "seconds": 9.1, "accuracy": 0.7}) == ("accuracy", 0.7)
    assert headline({"n_cases": 4, "eval_seconds": 2.0, "ssim": 0.9}) == ("ssim", 0.9)
    assert headline({"n_cases": 4, "ok": True}) is None
