"""A damaged image anywhere in the data stops a run before training (issue 14, item 8): before, a truncated image in
the test split was found only after every epoch had trained."""

from __future__ import annotations

import time

from medrun.datasets import get


def test_truncated_test_split_jpeg_fails_before_anything_is_written(medrun_proc, tmp_path, snap, one_line_error):
    root = get("chestxray").make_fixture(tmp_path / "data", 0)
    bad = sorted((root / "test" / "NORMAL").iterdir())[0]
    bad.write_bytes(bad.read_bytes()[: bad.stat().st_size // 2])  # header intact, scan data cut short
    before = snap(root)
    env = {"MEDRUN_CACHE": str(tmp_path / "cache"), "MEDRUN_RUNS": str(tmp_path / "runs")}
    t0 = time.monotonic()
    proc = medrun_proc("train", "cycleadvgan", "--dataset", "chestxray", "--data-dir", root, env=env)
    assert time.monotonic() - t0 < 30  # no model was built, no epoch ran
    one_line_error(proc, 3, str(bad), "corrupt")
    assert not (tmp_path / "runs").exists()
    assert not list((tmp_path / "cache").glob("header-checks/*.ok"))  # a failed check is not remembered
    assert snap(root) == before
