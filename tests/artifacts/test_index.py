"""The run index: built from run.json files, refreshed when they change, rebuilt when deleted; diff and compare."""

import json
import os
import shutil
import time

import pytest

from medrun.artifacts import RunDir
from medrun.artifacts.index import INDEX, Index, diff_runs, flatten, metrics_table


@pytest.fixture
def two(runs, data, make_run):
    a = make_run(runs, data, run_id="aa" * 32, metrics={"accuracy": 0.5, "f1": 0.4},
                 started="2026-01-01T00:00:00+0000")
    b = make_run(runs, data, run_id="bb" * 32, stage="eval", metrics={"accuracy": 0.7},
                 started="2026-01-02T00:00:00+0000", manifest_text="pipeline: ad-lite\nseed: 2\ntrain: {lr: 0.1}\n")
    return a, b


def test_built_from_run_json_and_filtered(runs, two):
    idx = Index(runs)
    assert (runs / INDEX).exists()
    assert idx.last_refresh["rebuilt"] and idx.last_refresh["indexed"] == 2
    assert [r["id"][:2] for r in idx.list()] == ["bb", "aa"]  # newest first
    assert [r["stage"] for r in idx.list(stage="train")] == ["train"]
    assert idx.list(pipeline="nope") == []
    assert len(idx.list(status="complete")) == 2
    idx.close()
    again = Index(runs)
    assert again.last_refresh["added_or_updated"] == 0 and not again.last_refresh["rebuilt"]  # nothing stale
    again.close()


def test_rebuilt_when_deleted(runs, two):
    Index(runs).close()
    (runs / INDEX).unlink()
    idx = Index(runs)
    assert idx.last_refresh["rebuilt"] and len(idx.list()) == 2


def test_damaged_index_is_rebuilt(runs, two):
    (runs / INDEX).write_bytes(b"this is not sqlite" * 100)
    idx = Index(runs)
    assert len(idx.list()) == 2


def test_refreshed_when_run_json_changes(runs, two):
    a, _ = two
    Index(runs).close()
    info = json.loads((a / "run.json").read_text())
    info["status"] = "failed"
    time.sleep(0.01)
    (a / "run.json").write_text(json.dumps(info))
    st = (a / "run.json").stat()
    os.utime(a / "run.json", ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000))
    idx = Index(runs)
    assert idx.last_refresh["added_or_updated"] == 1
    assert [r["status"] for r in idx.list(status="failed")] == ["failed"]


def test_new_and_gone_dirs(runs, two, data, make_run):
    a, _ = two
    Index(runs).close()
    shutil.rmtree(a)
    make_run(runs, data, run_id="cc" * 32)
    idx = Index(runs)
    assert idx.last_refresh["removed"] == 1
    assert sorted(r["id"][:2] for r in idx.list()) == ["bb", "cc"]


def test_unsealed_complete_run_is_incomplete(runs, two):
    a, _ = two
    (a / "MANIFEST.sha256").unlink()
    idx = Index(runs)
    assert [r["id"][:2] for r in idx.list(status="incomplete")] == ["aa"]


def test_reruns_and_dot_dirs_not_indexed(runs, two, data, make_run):
    make_run(runs / ".reruns" / "20260101T000000", data, run_id="dd" * 32)
    assert len(Index(runs).list()) == 2


def test_missing_runs_dir_is_empty(tmp_path):
    idx = Index(tmp_path / "nothing")
    assert idx.list() == [] and not (tmp_path / "nothing").exists()


def test_diff_and_compare(two):
    a, b = (RunDir(p) for p in two)
    d = diff_runs(a, b)
    keys = {x["key"]: x for x in d["manifest"]}
    assert keys["seed"] == {"key": "seed", "a": 1, "b": 2} and keys["train.lr"]["a"] is None
    assert {x["key"] for x in d["metrics"]} == {"accuracy", "f1"}
    assert d["environment"] == [] and d["data"]["same"] and d["code"]["same"]
    t = metrics_table([a, b])
    assert t["columns"] == ["accuracy", "f1"] and t["rows"][1]["metrics"] == {"accuracy": 0.7}


def test_flatten():
    assert flatten({"a": {"b": 1, "c": {"d": [1, 2]}}, "e": {}}) == {"a.b": 1, "a.c.d": [1, 2], "e": {}}
