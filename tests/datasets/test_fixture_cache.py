"""The fixture cache keeps one version per dataset and seed: a new module version replaces the earlier ones."""

import json

from medrun.pipelines.runner import fixture_root


def test_new_fixture_version_removes_earlier_ones(tmp_path, monkeypatch):
    monkeypatch.setenv("MEDRUN_CACHE", str(tmp_path))
    fixtures = tmp_path / "fixtures"
    stale = fixtures / "oasis-seed0-0000000000"  # an earlier version of the oasis module's fixture
    other_seed = fixtures / "oasis-seed1-0000000000"
    for d in (stale, other_seed):
        d.mkdir(parents=True)
        (d / ".medrun-fixture.json").write_text(json.dumps({"dataset": "oasis", "seed": 0, "root": "."}))
    root = fixture_root("oasis", log=lambda *_: None)
    assert root.exists() and not stale.exists() and other_seed.exists()
    assert sorted(p.name for p in fixtures.iterdir()) == sorted([root.relative_to(fixtures).parts[0], other_seed.name])
