"""Replicates: --seeds runs one run per seed and a summary run with mean, sd and a 95 % t-interval."""

import json
import math

import numpy as np
import pytest
from scipy import stats

from medrun.pipelines.replicates import summarise


def test_summary_statistics_match_scipy():
    vals = [0.81, 0.86, 0.78, 0.9]
    s = summarise([{"accuracy": v, "n": 10, "split": "test", "flag": True} for v in vals])
    assert set(s) == {"accuracy", "n"}  # strings and booleans are not summarised
    a = s["accuracy"]
    assert math.isclose(a["mean"], np.mean(vals)) and math.isclose(a["sd"], np.std(vals, ddof=1))
    lo, hi = stats.t.interval(0.95, len(vals) - 1, loc=np.mean(vals), scale=stats.sem(vals))
    assert np.allclose(a["ci95"], [lo, hi]) and a["n"] == 4 and a["values"] == vals


def test_bad_seed_lists_are_usage_errors(cli, runs):
    for bad in ("0,x", "3", "1,1"):
        r = cli("train", "ad-lite", "--dataset", "oasis", "--fixture", "--runs-dir", runs, "--seeds", bad)
        assert r.code == 2 and "--seeds" in r.err and "Traceback" not in r.err
    assert not runs.exists()


@pytest.mark.slow
def test_seeds_give_member_runs_and_a_verified_summary(cli, runs):
    args = ("train", "ad-lite", "--dataset", "oasis", "--fixture", "--runs-dir", runs, "-o", "train.epochs=1", "--json")
    r = cli(*args, "--seeds", "0,1")
    assert r.code == 0, r.err
    out = r.json()
    info = json.loads((runs / "ad-lite" / f"replicates-{out['run_id'][:12]}" / "run.json").read_text())
    assert info["stage"] == "replicates" and info["of_stage"] == "train" and info["seeds"] == [0, 1]
    members = [
        json.loads((runs / "ad-lite" / f"train-{m['id'][:12]}" / "run.json").read_text()) for m in info["members"]
    ]
    assert [m["seed"] for m in members] == [0, 1] and all(m["status"] == "complete" for m in members)
    assert members[0]["id"] != members[1]["id"]
    summary = runs / "ad-lite" / f"replicates-{out['run_id'][:12]}"
    metrics = json.loads((summary / "metrics.json").read_text())
    accs = [json.loads((runs / "ad-lite" / f"train-{m['id'][:12]}" / "metrics.json").read_text())["accuracy"]
            for m in info["members"]]
    assert metrics["accuracy"]["values"] == accs and math.isclose(metrics["accuracy"]["mean"], sum(accs) / 2)
    assert "mean ± sd" in (summary / "paper.md").read_text()
    assert cli("verify", summary, "--runs-dir", runs).code == 0
    again = cli(*args, "--seeds", "0,1")
    assert again.code == 0 and again.json()["reused"] and again.json()["run_id"] == out["run_id"]
