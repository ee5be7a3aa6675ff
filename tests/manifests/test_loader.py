import pytest

from medrun.errors import UsageError
from medrun.manifests import apply_overrides, load_file, parse_override, validate
from medrun.pipelines.ad_lite.config import AdLiteManifest


def write(tmp_path, name, text):
    p = tmp_path / name
    p.write_text(text)
    return p


def test_extends_merges_and_child_wins(tmp_path):
    write(tmp_path, "base.yaml", "train: {epochs: 5, lr: 0.1}\nseed: 1\n")
    child = write(tmp_path, "child.yaml", "extends: base.yaml\ntrain: {epochs: 7}\n")
    data = load_file(child).data
    assert data == {"train": {"epochs": 7, "lr": 0.1}, "seed": 1}


def test_extends_cycle(tmp_path):
    write(tmp_path, "a.yaml", "extends: b.yaml\n")
    b = write(tmp_path, "b.yaml", "extends: a.yaml\n")
    with pytest.raises(UsageError, match="loops"):
        load_file(b)


def test_env_substitution_with_default(tmp_path, monkeypatch):
    p = write(tmp_path, "m.yaml", "dataset: {name: oasis, root: '${MY_DATA:-/fallback}/Data'}\n")
    assert load_file(p).data["dataset"]["root"] == "/fallback/Data"
    monkeypatch.setenv("MY_DATA", "/real")
    assert load_file(p).data["dataset"]["root"] == "/real/Data"


def test_env_unset_without_default_names_file_and_line(tmp_path):
    p = write(tmp_path, "m.yaml", "seed: 1\ndataset: {name: oasis, root: '${NOPE_NOT_SET}/x'}\n")
    with pytest.raises(UsageError, match=rf"{p}:2.*NOPE_NOT_SET"):
        load_file(p)


@pytest.mark.parametrize("text,expected", [
    ("train.epochs=3", ("train.epochs", 3)), ("train.lr=1e-3", ("train.lr", 1e-3)),
    ("model.pcb=false", ("model.pcb", False)), ("dataset.root=/a b", ("dataset.root", "/a b")),
    ("x.y=[1, 2]", ("x.y", [1, 2])),
])
def test_overrides_are_typed(text, expected):
    assert parse_override(text) == expected


@pytest.mark.parametrize("bad", ["train.epochs", "=3", "train..epochs=3", ".x=1"])
def test_bad_override_syntax(bad):
    with pytest.raises(UsageError, match="expected key=value"):
        parse_override(bad)


def _oasis(tmp_path, extra=""):
    return write(tmp_path, "m.yaml", "pipeline: ad-lite\ndataset: {name: oasis, root: /d}\n" + extra)


def test_unknown_key_names_file_line_and_suggests(tmp_path):
    p = _oasis(tmp_path, "train:\n  epochz: 3\n")
    with pytest.raises(UsageError) as e:
        validate(load_file(p), AdLiteManifest)
    msg = str(e.value)
    assert f"{p}:4" in msg and "'train.epochz'" in msg and "did you mean 'epochs'" in msg


def test_wrong_type_says_expected_and_found(tmp_path):
    p = _oasis(tmp_path, "train: {epochs: many}\n")
    with pytest.raises(UsageError) as e:
        validate(load_file(p), AdLiteManifest)
    assert f"{p}:3" in str(e.value) and "'train.epochs'" in str(e.value) and "found 'many'" in str(e.value)


def test_override_error_names_the_override(tmp_path):
    r = apply_overrides(load_file(_oasis(tmp_path)), ["model.num_clases=3"])
    with pytest.raises(UsageError, match="override model.num_clases=3.*did you mean 'num_classes'"):
        validate(r, AdLiteManifest)


def test_invalid_yaml_reports_line(tmp_path):
    p = write(tmp_path, "m.yaml", "pipeline: ad-lite\ndataset: {name: oasis\n")
    with pytest.raises(UsageError, match=rf"{p}:\d+: invalid YAML"):
        load_file(p)


def test_img_size_must_be_multiple_of_32(tmp_path):
    with pytest.raises(UsageError, match="multiple of 32"):
        validate(load_file(_oasis(tmp_path, "dataset: {name: oasis, root: /d, img_size: 100}\n")), AdLiteManifest)
