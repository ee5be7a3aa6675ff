"""The content-addressed cache writer shared by ph-mci, asd-transformer and drivpocket."""

import os
import time

import numpy as np
import pytest

from medrun.artifacts.cache import clear_stale, load_npz, save_npz


def test_save_is_atomic_and_loads_without_pickle(tmp_path, monkeypatch):
    path = save_npz(tmp_path / "c" / "abc.npz", x=np.arange(3), name=np.array("p1"))
    got = load_npz(path)
    assert got["x"].tolist() == [0, 1, 2] and str(got["name"]) == "p1"
    with pytest.raises(ValueError):
        save_npz(tmp_path / "c" / "obj.npz", x=np.array([{"a": 1}], dtype=object))
    assert not (tmp_path / "c" / "obj.npz").exists() and not list((tmp_path / "c").glob(".*.tmp"))

    def crash(*a, **k):  # a writer killed mid-write leaves neither the entry nor its temp file
        raise KeyboardInterrupt

    monkeypatch.setattr(np, "savez_compressed", crash)
    with pytest.raises(KeyboardInterrupt):
        save_npz(tmp_path / "c" / "def.npz", compressed=True, x=np.arange(3))
    assert not (tmp_path / "c" / "def.npz").exists() and not list((tmp_path / "c").glob(".*.tmp"))


def test_clear_stale_removes_only_old_temp_files(tmp_path):
    old, young, entry = tmp_path / ".a-1.tmp", tmp_path / ".b-2.tmp", tmp_path / "c.npz"
    for p in (old, young, entry):
        p.write_bytes(b"x")
    os.utime(old, (time.time() - 7200, time.time() - 7200))
    os.utime(entry, (time.time() - 7200, time.time() - 7200))
    assert clear_stale(tmp_path) == 1 and not old.exists() and young.exists() and entry.exists()
    assert clear_stale(tmp_path / "missing") == 0
