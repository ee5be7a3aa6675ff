"""Fixtures are written in the public layouts, and the readers read them (and reject wrong layouts clearly)."""

import pytest

from medrun.datasets import alzheimer, get
from medrun.errors import DataError, UsageError


@pytest.fixture(scope="module")
def fixtures(tmp_path_factory):
    out = tmp_path_factory.mktemp("alz")
    return {name: get(name).make_fixture(out / name, 0) for name in ("ad", "adni", "oasis", "merged")}


def test_ad_layout_and_reader(fixtures):
    root = fixtures["ad"]
    assert root.name == "Alzheimer_s Dataset"
    for split in ("train", "test"):
        assert sorted(p.name for p in (root / split).iterdir()) == alzheimer.AD_CLASSES
    samples, classes = alzheimer.read_ad(root)
    assert classes == alzheimer.AD_CLASSES
    n_files = sum(1 for _ in root.rglob("*.jpg"))
    assert len(samples) == n_files  # train and test are merged, as the authors' code does
    counts = [sum(s.label == i for s in samples) for i in range(4)]
    assert counts[1] == min(counts)  # Moderate stays the rarest class


def test_adni_layout(fixtures):
    samples, classes = alzheimer.read_adni(fixtures["adni"])
    assert fixtures["adni"].name == "Axial" and classes == ["AD", "CI", "CN"] and len(samples) == 90


def test_oasis_undersampling_is_seeded_and_capped(fixtures):
    caps = {"Non Demented": 50, "Very mild Dementia": 45}
    a, classes = alzheimer.read_oasis(fixtures["oasis"], caps)
    b, _ = alzheimer.read_oasis(fixtures["oasis"], caps)
    assert [s.path for s in a] == [s.path for s in b]
    counts = {c: sum(classes[s.label] == c for s in a) for c in classes}
    assert counts == {"Mild Dementia": 40, "Moderate Dementia": 20, "Non Demented": 50, "Very mild Dementia": 45}
    assert len(alzheimer.read_oasis(fixtures["oasis"])[0]) == 185
    with pytest.raises(DataError, match="unknown OASIS class"):
        alzheimer.read_oasis(fixtures["oasis"], {"Nondemented": 3})


def test_merged_maps_ad_classes(fixtures):
    samples, classes = alzheimer.read_merged(fixtures["merged"] / "Alzheimer_s Dataset", fixtures["merged"] / "Axial")
    assert classes == ["AD", "CI", "CN"]
    ad, _ = alzheimer.read_ad(fixtures["merged"] / "Alzheimer_s Dataset")
    mapped = {alzheimer.AD_CLASSES[s.label]: classes[m.label] for s, m in zip(ad, samples, strict=False)}
    assert mapped == alzheimer.AD_TO_MERGED


def test_one_level_above_is_explained(fixtures):
    with pytest.raises(DataError, match="one level above.*use .*Data"):
        alzheimer.read_oasis(fixtures["oasis"].parent)
    with pytest.raises(DataError, match="use .*Alzheimer_s Dataset"):
        alzheimer.read_ad(fixtures["ad"].parent)


def test_missing_folder_points_at_fixture(tmp_path):
    with pytest.raises(DataError, match="--fixture"):
        alzheimer.read_adni(tmp_path / "nope")


def test_unknown_dataset_suggests():
    with pytest.raises(UsageError, match="did you mean 'oasis'"):
        get("oasys")
