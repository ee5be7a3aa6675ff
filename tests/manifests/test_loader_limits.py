"""Loader limits in-process (issue 14, item 3): one parse per file, the pure-Python YAML fallback is bounded too,
overrides pass through the same checks, and error lines carry no square brackets (rich markup)."""

from __future__ import annotations

import pytest
import yaml

from medrun.errors import UsageError
from medrun.manifests import apply_overrides, load_file, loader, parse_override, validate
from medrun.pipelines.ad_lite.config import AdLiteManifest


def test_each_file_is_parsed_once(tmp_path, monkeypatch):
    calls = []

    class Counting(loader._Loader):
        def __init__(self, text):
            calls.append(len(text))
            super().__init__(text)

    monkeypatch.setattr(loader, "_Loader", Counting)
    monkeypatch.setattr(yaml, "safe_load", None)  # the old second parse
    (tmp_path / "base.yaml").write_text("seed: 1\ntrain: {epochs: 2}\n")
    child = tmp_path / "child.yaml"
    child.write_text("extends: base.yaml\npipeline: ad-lite\ntrain:\n  lr: 0.5\n")
    res = load_file(child)
    assert len(calls) == 2  # one per file
    assert res.data["train"] == {"epochs": 2, "lr": 0.5}
    assert res.lines["train.lr"] == f"{child}:4" and res.lines["train.epochs"] == f"{tmp_path / 'base.yaml'}:2"


@pytest.mark.parametrize("text,needle", [
    ("a: &x [1, 2]\nb: *x\n", ":2: YAML anchors and aliases"),
    ("a: " + "[" * 5000 + "]" * 5000 + "\n", "nested"),
])
def test_pure_python_yaml_is_bounded_too(tmp_path, monkeypatch, text, needle):
    monkeypatch.setattr(loader, "_Loader", yaml.SafeLoader)  # where libyaml is missing
    p = tmp_path / "m.yaml"
    p.write_text(text)
    with pytest.raises(UsageError, match=needle):
        load_file(p)


def test_nesting_cap_is_below_libyaml_s(tmp_path):
    p = tmp_path / "m.yaml"
    p.write_text("a: " + "[" * 100 + "]" * 100 + "\n")
    with pytest.raises(UsageError, match=rf"{p}:1: YAML nested more than {loader.MAX_DEPTH} levels"):
        load_file(p)


def test_override_values_pass_the_same_limits():
    with pytest.raises(UsageError, match="override model.x:1: YAML anchors"):
        parse_override("model.x=[&a [1], *a]")
    with pytest.raises(UsageError, match="override model.x: over the 1 MiB limit"):
        parse_override("model.x=" + "1" * (loader.MAX_BYTES + 1))
    assert parse_override("model.x=a: b: c") == ("model.x", "a: b: c")  # not YAML: kept as text, as before


def test_name_keys_checked_after_overrides_too(tmp_path):
    p = tmp_path / "m.yaml"
    p.write_text("pipeline: ad-lite\ndataset: {name: oasis, root: /d}\n")
    with pytest.raises(UsageError, match=r"override pipeline=a list \('x'\): 'pipeline' must be a name"):
        apply_overrides(load_file(p), ["pipeline=[x]"])


def test_validation_errors_show_lists_without_brackets(tmp_path):
    p = tmp_path / "m.yaml"
    p.write_text("pipeline: ad-lite\ndataset: {name: [oasis], root: /d}\n")
    with pytest.raises(UsageError) as e:
        validate(load_file(p), AdLiteManifest)
    assert f"{p}:2" in str(e.value) and "a list ('oasis')" in str(e.value)
    assert "[" not in str(e.value) and "]" not in str(e.value)


def test_extends_chain_is_bounded(tmp_path):
    for i in range(loader.MAX_DEPTH + 1):
        (tmp_path / f"m{i}.yaml").write_text(f"extends: m{i + 1}.yaml\n" if i < loader.MAX_DEPTH else "seed: 1\n")
    with pytest.raises(UsageError, match="chain longer than"):
        load_file(tmp_path / "m0.yaml")
    assert load_file(tmp_path / "m2.yaml").data == {"seed": 1}
