"""medrun runs list/show/diff/compare and medrun rerun, through the CLI."""

import pytest


@pytest.fixture
def data(tmp_path):
    d = tmp_path / "data"
    d.mkdir()
    (d / "x.txt").write_text("x")
    return d


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
    assert [x["id"][:2] for x in cli("runs", "list", "--runs-dir", runs, "--stage", "train", "--json").json()["runs"]] == ["aa"]
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
    for cmd in (("verify",), ("runs",), ("runs", "list"), ("runs", "show"), ("runs", "diff"), ("runs", "compare")):
        r = cli(*cmd, "--help")
        assert r.code == 0 and "Examples" in r.out, cmd
