"""``medrun smoke --launcher local:2`` (issue 24): the smoke runs are computed in worker processes — parents of
stages on finished runs first, then those stages — and the table is the one the sequential smoke writes."""

from __future__ import annotations

import os
from types import SimpleNamespace

import pytest

from medrun.pipelines import get, smoke
from medrun.pipelines.runner import Request

TINY = ["dataset.img_size=32", "train.epochs=1"]


def _items(runs, force):
    """Two ad-lite smoke items at a tiny size: a train run, and an eval run on a train run (a parent stage)."""
    spec = get("ad-lite")

    def req(stage):
        return Request(pipeline="ad-lite", stage=stage, dataset="oasis", fixture=True, runs_dir=runs, overrides=TINY,
                       argv=["medrun", stage, "ad-lite"], force=force)

    m = SimpleNamespace(smoke=SimpleNamespace(stage="train", min={"accuracy": 0.0}, max={}))
    m_eval = SimpleNamespace(smoke=SimpleNamespace(stage="eval", min={"accuracy": 0.0}, max={}))
    return [(spec, "oasis", m, None, req("train")), (spec, "oasis", m_eval, req("train"), req("eval"))]


@pytest.mark.slow
def test_smoke_on_local_2_runs_in_workers_and_gives_the_sequential_table(tmp_path, monkeypatch):
    runs = tmp_path / "runs"
    monkeypatch.setattr(smoke, "_requests", lambda slugs, runs_dir, force: iter(_items(runs, force)))
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    lines = []
    rows, failed = smoke.run(["ad-lite"], runs, force=True, log=lines.append, launcher="local:2")
    assert failed == 0 and [r["stage"] for r in rows] == ["train", "eval"]
    assert all(r["reused"] for r in rows), (rows, lines)  # computed by the workers, then reused (not forced again)
    train_run = next((runs / "ad-lite").glob("train-*"))
    eval_run = next((runs / "ad-lite").glob("eval-*"))
    for run in (train_run, eval_run):  # each ran in a worker of its own round
        assert "launcher.log" in os.listdir(run / "logs")
    assert rows[1]["run_dir"] == str(eval_run)


def test_a_bad_launcher_stops_smoke_before_anything_runs(cli, runs):
    r = cli("smoke", "ad-lite", "--launcher", "cluster", "--runs-dir", runs)
    assert r.code == 2 and "unknown launcher 'cluster'" in r.err and not runs.exists()
