"""Concurrent first use of ``--fixture`` (parallel CI jobs, sweeps): three commands on an empty cache all succeed
and agree, in each of three rounds; and an earlier fixture version is removed only when no process uses it."""

from __future__ import annotations

import fcntl
import json
import os
import subprocess
import sys

from medrun.pipelines import runner


def test_three_first_uses_at_once_all_succeed(tmp_path):
    for round_ in range(3):
        cache = tmp_path / f"cache{round_}"
        env = {**os.environ, "MEDRUN_PLAIN": "1", "MEDRUN_CACHE": str(cache), "MEDRUN_RUNS": str(tmp_path / "runs")}
        procs = [subprocess.Popen([sys.executable, "-m", "medrun.cli.main", "show", "ad-lite", "--dataset", "oasis",
                                   "--fixture", "--json"], env=env, cwd=tmp_path, stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, text=True) for _ in range(3)]
        outs = [(p.communicate(timeout=300), p.returncode) for p in procs]
        for (_out, err), code in outs:
            assert code == 0 and "Traceback" not in err, err
        ids = {json.loads(out)["run_id"] for (out, _), _ in outs}
        assert len(ids) == 1 and None not in ids, outs
        assert [p.name for p in (cache / "fixtures").iterdir()] == [f"oasis-seed0-{_version()}"]  # no leftovers


def _version() -> str:
    import importlib

    from medrun import datasets
    from medrun.artifacts import sha256_file

    return sha256_file(importlib.import_module(datasets.get("oasis").fixture.split(":")[0]).__file__)[:10]


def test_an_old_version_in_use_is_kept(tmp_path, monkeypatch):
    monkeypatch.setenv("MEDRUN_CACHE", str(tmp_path))
    old = tmp_path / "fixtures" / "oasis-seed0-0000000000"  # an older module's fixture, still read by a process
    old.mkdir(parents=True)
    (old / ".medrun-fixture.json").write_text(json.dumps({"dataset": "oasis", "seed": 0, "root": "."}))
    (tmp_path / "locks").mkdir()
    fd = os.open(tmp_path / "locks" / f"{old.name}.use", os.O_RDWR | os.O_CREAT)
    fcntl.flock(fd, fcntl.LOCK_SH)  # what that process's fixture_root holds for its lifetime
    try:
        runner.fixture_root("oasis", log=lambda *_: None)
        assert old.exists()
    finally:
        os.close(fd)
    runner._remove_unused_fixture(old)  # once nobody uses it, the next writer of a new version removes it
    assert not old.exists()
