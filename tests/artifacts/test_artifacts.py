import json
import os

import pytest

from medrun.artifacts import RunDir, drop_keys, run_id, sha256_file
from medrun.artifacts import fingerprint as fp
from medrun.errors import EnvError, UsageError


def test_run_id_is_stable_and_sensitive():
    base = dict(manifest={"a": 1, "b": {"c": 2}}, code="c1", data="d1", stage="train")
    assert run_id(**base) == run_id(**{**base, "manifest": {"b": {"c": 2}, "a": 1}})  # key order is irrelevant
    for change in (
        {"manifest": {"a": 2, "b": {"c": 2}}},
        {"code": "c2"},
        {"data": "d2"},
        {"stage": "eval"},
        {"parent": "p"},
    ):
        assert run_id(**{**base, **change}) != run_id(**base)


def test_drop_keys():
    assert drop_keys({"dataset": {"root": "/x", "name": "o"}, "paper": {}}, ["dataset.root", "paper", "no.such"]) == \
        {"dataset": {"name": "o"}}


def test_rundir_lifecycle(tmp_path):
    run = RunDir(tmp_path / "p" / "train-abc").open()
    run.write_json("run.json", {"id": "abc", "status": "running"})
    run.write_json("metrics.json", {"accuracy": 0.5})
    (run.path / "checkpoints" / "w.bin").write_bytes(b"123")
    assert not run.is_complete()
    run.seal()
    assert run.is_complete()
    lines = (run.path / "MANIFEST.sha256").read_text().splitlines()
    listed = {line.split("  ")[1]: line.split("  ")[0] for line in lines}
    assert set(listed) == {"run.json", "metrics.json", "checkpoints/w.bin"}
    assert listed["checkpoints/w.bin"] == sha256_file(run.path / "checkpoints" / "w.bin")
    assert json.loads((run.path / "run.json").read_text())["status"] == "complete"
    run.close()
    reopened = RunDir(run.path).open()  # reopening (to resume or force) un-completes the run first
    assert not reopened.is_complete()
    reopened.close()


def test_lock_keeps_second_writer_out(tmp_path):
    first = RunDir(tmp_path / "r").open()
    with pytest.raises(UsageError, match="another medrun process"):
        RunDir(tmp_path / "r").open()
    first.close()
    RunDir(tmp_path / "r").open().close()


def test_unwritable_runs_dir(tmp_path):
    ro = tmp_path / "ro"
    ro.mkdir()
    os.chmod(ro, 0o500)
    try:
        if os.access(ro, os.W_OK):  # root ignores permissions: use a path under a file instead
            target = tmp_path / "file"
            target.write_text("")
            with pytest.raises(EnvError, match="cannot write run directory"):
                RunDir(target / "r").open()
        else:
            with pytest.raises(EnvError, match="cannot write run directory"):
                RunDir(ro / "r").open()
    finally:
        os.chmod(ro, 0o700)


def test_atomic_write_leaves_no_temp_on_failure(tmp_path):
    from medrun.artifacts import atomic_write

    class Boom(str):
        def encode(self):
            raise RuntimeError("boom")

    atomic_write(tmp_path / "f.txt", "old")
    with pytest.raises(RuntimeError):
        atomic_write(tmp_path / "f.txt", Boom("new"))
    assert (tmp_path / "f.txt").read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["f.txt"]


def _tree(tmp_path):
    root = tmp_path / "data"
    (root / "a").mkdir(parents=True)
    (root / "a" / "x.jpg").write_bytes(b"x" * 100)
    (root / "y.png").write_bytes(b"y")
    (root / ".hidden").write_bytes(b"h")
    return root


def test_fingerprint_uses_stat_cache(tmp_path, monkeypatch):
    root = _tree(tmp_path)
    cache = fp.StatCache(tmp_path / "c.sqlite")
    first = fp.fingerprint_tree(root, cache)
    assert sorted(first["files"]) == ["a/x.jpg", "y.png"]
    calls = []
    monkeypatch.setattr(fp, "sha256_file", lambda p: calls.append(p) or "z")
    assert fp.fingerprint_tree(root, cache)["sha256"] == first["sha256"]
    assert calls == []  # nothing re-hashed
    (root / "y.png").write_bytes(b"changed")
    fp.fingerprint_tree(root, cache)
    assert calls == [str(root / "y.png")]


def test_fingerprint_changes_with_content_not_location(tmp_path):
    a = fp.fingerprint_tree(_tree(tmp_path / "one"), None)
    b = fp.fingerprint_tree(_tree(tmp_path / "two"), None)
    assert a["sha256"] == b["sha256"]
    (tmp_path / "two" / "data" / "y.png").write_bytes(b"Y")
    assert fp.fingerprint_tree(tmp_path / "two" / "data", None)["sha256"] != a["sha256"]


def test_code_fingerprint_follows_source(tmp_path, monkeypatch):
    src = tmp_path / "pkg"
    src.mkdir()
    (src / "m.py").write_text("x = 1\n")
    monkeypatch.setattr(fp, "_source_dirs", lambda: [src])
    one = fp.code_fingerprint()["sha256"]
    assert fp.code_fingerprint()["sha256"] == one
    (src / "m.py").write_text("x = 2\n")
    assert fp.code_fingerprint()["sha256"] != one


@pytest.mark.parametrize("mask", [0o022, 0o002, 0o077])
def test_run_files_honour_the_umask(tmp_path, mask):
    """Atomic writes get the mode a plain open() would give (mkstemp alone makes them 0600)."""
    from medrun.artifacts import atomic_write

    old = os.umask(mask)
    try:
        run = RunDir(tmp_path / "p" / "train-abc").open()
        run.write_json("metrics.json", {"accuracy": 0.5})
        atomic_write(run.path / "paper.md", "# paper\n")
        run.seal()
        plain = tmp_path / "plain"
        plain.write_text("x")
    finally:
        os.umask(old)
    want = plain.stat().st_mode & 0o777
    assert want == 0o666 & ~mask
    for name in ("metrics.json", "paper.md", "MANIFEST.sha256", "run.json"):
        path = run.path / name
        if path.exists():
            assert path.stat().st_mode & 0o777 == want, name
    run.close()


def test_find_runs_of_a_stage_does_not_match_a_longer_stage_name(tmp_path):
    """`train` must not find `train-init-…` runs (fusing-forces has both stages; the eval parent is the train run)."""
    from medrun.artifacts.rundir import find_runs

    for name in ("train-aaaaaaaaaaaa", "train-init-bbbbbbbbbbbb"):
        (tmp_path / "p" / name).mkdir(parents=True)
        (tmp_path / "p" / name / "run.json").write_text("{}")
    assert [r.path.name for r in find_runs(tmp_path, "p", "train")] == ["train-aaaaaaaaaaaa"]
    assert [r.path.name for r in find_runs(tmp_path, "p", "train-init")] == ["train-init-bbbbbbbbbbbb"]
    assert len(find_runs(tmp_path, "p")) == 2
