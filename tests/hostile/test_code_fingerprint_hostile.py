"""Unlucky users of per-pipeline fingerprints and incremental smoke (issue 25): a bad git ref, a damaged or
unwritable parse cache."""

from __future__ import annotations

import json


def _env(tmp_path):
    return {"MEDRUN_CACHE": str(tmp_path / "cache"), "MEDRUN_RUNS": str(tmp_path / "runs")}


def test_changed_since_unknown_ref_is_one_line_exit_2(medrun_proc, one_line_error, tmp_path, snap):
    before = snap(tmp_path)
    proc = medrun_proc("smoke", "--changed-since", "no-such-ref-0123", env=_env(tmp_path))
    one_line_error(proc, 2, "--changed-since", "no-such-ref-0123")
    assert snap(tmp_path) == before  # nothing ran, nothing written


def test_damaged_parse_cache_is_rewritten(medrun_proc, tmp_path):
    cache = tmp_path / "cache" / "code-imports.json"
    cache.parent.mkdir(parents=True)
    cache.write_text('{"scanner": 1, "entries": [')
    proc = medrun_proc("show", "ad-lite", "--dataset", "oasis", "--json", env=_env(tmp_path))
    assert proc.returncode == 0, proc.stderr
    assert "pipelines/ad_lite/pipeline.py" in json.loads(proc.stdout)["code"]["files"]
    assert json.loads(cache.read_text())["entries"]


def test_unwritable_parse_cache_costs_only_time(medrun_proc, tmp_path):
    (tmp_path / "cache" / "code-imports.json").mkdir(parents=True)  # a folder where the file goes
    first = medrun_proc("show", "sc-unext", "--dataset", "isic2018", "--json", env=_env(tmp_path))
    again = medrun_proc("show", "sc-unext", "--dataset", "isic2018", "--json", env=_env(tmp_path))
    assert first.returncode == 0 and again.returncode == 0, first.stderr + again.stderr
    assert json.loads(first.stdout)["code"] == json.loads(again.stdout)["code"]
    assert not [p for p in (tmp_path / "cache").iterdir() if p.name.endswith(".tmp")]
