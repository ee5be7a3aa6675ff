"""A shared run store (issue 24): ``medrun runs push|pull`` and ``--store``: complete, verified runs only, under
their id, never half-copied, a damaged stored copy refused with exit 5, a store folder's other files untouched."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from medrun.artifacts import RunDir


def _tree(root: Path) -> dict[str, str]:
    return {p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def _sealed(run: Path) -> dict[str, str]:
    return {k: v for k, v in _tree(run).items() if k != ".lock"}


def test_push_then_pull_into_a_second_runs_folder(cli, runs, make_run, data, tmp_path):
    run = make_run(runs, data)
    store = tmp_path / "store"
    r = cli("runs", "push", run.name.split("-", 1)[1], "--to", store, "--runs-dir", runs, "--json")
    assert r.code == 0, r.err
    assert r.json()[0]["status"] == "pushed"
    stored = store / "ad-lite" / run.name
    assert (stored / "MANIFEST.sha256").exists() and not (stored / ".lock").exists()
    assert [p.name for p in (store / "ad-lite").iterdir()] == [run.name]  # no temporary folder left
    again = cli("runs", "push", str(run), "--to", store, "--runs-dir", runs, "--json")
    assert again.code == 0 and again.json()[0]["status"] == "present"
    other = tmp_path / "runs2"
    p = cli("runs", "pull", "abab", "--from", store, "--runs-dir", other, "--json")
    assert p.code == 0, p.err
    pulled = other / "ad-lite" / run.name
    assert p.json()[0]["run_dir"] == str(pulled) and RunDir(pulled).is_complete()
    assert _sealed(pulled) == _sealed(run)
    assert sorted(x.name for x in other.iterdir()) == ["ad-lite"]  # no download folder left behind
    assert cli("verify", pulled, "--runs-dir", other).code == 0
    by_path = cli("runs", "pull", f"ad-lite/{run.name}", "--from", store, "--runs-dir", other, "--json")
    assert by_path.code == 0 and by_path.json()[0]["status"] == "present"


def test_a_concurrent_push_of_the_same_run_is_harmless(runs, make_run, data, tmp_path):
    from medrun.artifacts.store import push

    run = RunDir(make_run(runs, data))
    store = tmp_path / "store"
    results, errors = [], []
    barrier = threading.Barrier(4)

    def go():
        barrier.wait()
        try:
            results.append(push(run, str(store), log=lambda *_: None)["status"])
        except Exception as e:  # noqa: BLE001 — the test reports it
            errors.append(e)

    threads = [threading.Thread(target=go) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and sorted(results).count("pushed") == 1 and len(results) == 4
    assert [p.name for p in (store / "ad-lite").iterdir()] == [run.path.name]
    assert _sealed(store / "ad-lite" / run.path.name) == _sealed(run.path)


def test_a_corrupted_object_in_the_store_is_refused_and_nothing_is_copied(cli, runs, make_run, data, tmp_path):
    run = make_run(runs, data)
    store = tmp_path / "store"
    assert cli("runs", "push", str(run), "--to", store, "--runs-dir", runs).code == 0
    (store / "ad-lite" / run.name / "metrics.json").write_text('{"accuracy": 0.99}\n')
    other = tmp_path / "runs2"
    r = cli("runs", "pull", "abab", "--from", store, "--runs-dir", other)
    assert r.code == 5 and "failed verification" in r.err and "metrics.json" in r.err and "Traceback" not in r.err
    assert not other.exists()  # nothing half-copied, not even an empty folder
    existing = tmp_path / "runs3"
    (existing / "ad-lite").mkdir(parents=True)
    assert cli("runs", "pull", "abab", "--from", store, "--runs-dir", existing).code == 5
    assert [p.name for p in existing.rglob("*")] == ["ad-lite"]
    # pushing the damaged copy's run again finds the store's copy damaged: exit 5, the copy is left for its owner
    r = cli("runs", "push", str(run), "--to", store, "--runs-dir", runs)
    assert r.code == 5 and "damaged" in r.err


def test_only_complete_runs_go_in_or_out(cli, runs, make_run, data, tmp_path):
    store = tmp_path / "store"
    incomplete = make_run(runs, data, run_id="cd" * 32, status="running")
    r = cli("runs", "push", str(incomplete), "--to", store, "--runs-dir", runs)
    assert r.code == 2 and "not complete" in r.err and not store.exists()
    run = make_run(runs, data)
    assert cli("runs", "push", str(run), "--to", store, "--runs-dir", runs).code == 0
    (store / "ad-lite" / run.name / "MANIFEST.sha256").unlink()
    r = cli("runs", "pull", "abab", "--from", store, "--runs-dir", tmp_path / "runs2")
    assert r.code == 2 and "not a complete run" in r.err and not (tmp_path / "runs2").exists()
    r = cli("runs", "pull", "ffff", "--from", store, "--runs-dir", tmp_path / "runs2")
    assert r.code == 2 and "no run matches" in r.err


def test_a_tampered_run_is_not_pushed(cli, runs, make_run, data, tmp_path):
    run = make_run(runs, data)
    (run / "metrics.json").write_text("{}\n")
    store = tmp_path / "store"
    r = cli("runs", "push", str(run), "--to", store, "--runs-dir", runs)
    assert r.code == 5 and "metrics.json" in r.err
    assert not list(store.rglob("*")) if store.exists() else True


def test_a_store_folder_with_user_files_loses_none(cli, runs, make_run, data, tmp_path):
    run = make_run(runs, data)
    store = tmp_path / "mine"
    (store / "ad-lite").mkdir(parents=True)
    (store / "thesis.tex").write_text("chapter 1")
    (store / "ad-lite" / "notes.txt").write_text("keep me")
    squatter = store / "ad-lite" / run.name  # a folder of the user's that happens to have a run's name
    squatter.mkdir()
    (squatter / "draft.txt").write_text("mine")
    before = _tree(store)
    r = cli("runs", "push", str(run), "--to", store, "--runs-dir", runs)
    assert r.code == 2 and "not a stored run" in r.err and _tree(store) == before
    (squatter / "draft.txt").unlink()
    squatter.rmdir()
    del before[f"ad-lite/{run.name}/draft.txt"]
    assert cli("runs", "push", str(run), "--to", store, "--runs-dir", runs).code == 0
    after = _tree(store)
    assert {k: v for k, v in after.items() if k in before} == before
    assert all(k.startswith(f"ad-lite/{run.name}/") for k in set(after) - set(before))
    r = cli("runs", "push", str(run), "--to", store / "thesis.tex", "--runs-dir", runs)
    assert r.code == 2 and "is a file" in r.err


def test_a_store_url_without_its_backend_is_an_environment_error(cli, runs, make_run, data):
    run = make_run(runs, data)
    r = cli("runs", "push", str(run), "--to", "nosuchproto://bucket/x", "--runs-dir", runs)
    assert r.code == 4 and "fsspec" in r.err and "Traceback" not in r.err


@pytest.mark.slow
def test_a_stage_with_store_reuses_a_stored_run_instead_of_training(tmp_path):
    tiny = ["train", "ad-lite", "--dataset", "oasis", "--fixture", "-o", "dataset.img_size=32", "-o",
            "train.epochs=1", "-o", "dataset.folds=3", "-o", "dataset.fold=0", "-o", "train.batch_size=16", "--json"]
    env = {**os.environ, "MEDRUN_PLAIN": "1", "MEDRUN_CACHE": str(tmp_path / "cache"), "OMP_NUM_THREADS": "1"}

    def medrun(*args):
        return subprocess.run([sys.executable, "-m", "medrun.cli.main", *map(str, args)], env=env,
                              capture_output=True, text=True, timeout=600)

    first = medrun(*tiny, "--runs-dir", tmp_path / "a")
    assert first.returncode == 0, first.stderr
    original = Path(json.loads(first.stdout)["run_dir"])
    store = tmp_path / "store"
    assert medrun("runs", "push", original, "--to", store, "--runs-dir", tmp_path / "a").returncode == 0
    second = medrun(*tiny, "--runs-dir", tmp_path / "b", "--store", store)
    assert second.returncode == 0, second.stderr
    out = json.loads(second.stdout)
    pulled = Path(out["run_dir"])
    assert out["reused"] and pulled == tmp_path / "b" / "ad-lite" / original.name
    assert "epoch 1/1" not in second.stderr and "reused from the store" in second.stderr  # nothing trained
    assert (pulled / "logs" / "events.jsonl").read_text() == (original / "logs" / "events.jsonl").read_text()
    assert _sealed(pulled) == _sealed(original)
