"""isic2019: the fixture in the public layout, the readers, other years' CSVs, and layout errors."""

import pytest

from medrun.datasets import isic2019
from medrun.errors import DataError


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    return isic2019.fixture(tmp_path_factory.mktemp("isic2019"))


def test_fixture_layout_and_reader(root):
    samples = isic2019.read(root)
    assert len(samples) == 96 and {s.label for s in samples} == set(range(8))
    assert all(s.path.parent.name == "ISIC_2019_Training_Input" and s.path.suffix == ".jpg" for s in samples)
    splits = isic2019.read_splits(root / "splits.csv", [s.id for s in samples])
    assert sorted(list(splits.values()).count(k) for k in ("train", "val", "test")) == [16, 16, 64]
    concepts = isic2019.read_concepts(root / "concepts.csv")
    assert len(concepts) == 96 and any(v[0] is None for v in concepts.values()) and any(v[0] == 1.0 for v in
                                                                                         concepts.values())


def test_isic2020_csv_is_mapped_and_unknown_dropped(root, tmp_path):
    import shutil

    src = tmp_path / "isic"
    shutil.copytree(root, src)
    (src / "train").mkdir()
    for name in ("ISIC_0000000", "ISIC_0000001", "ISIC_9999999"):
        shutil.copy(root / "ISIC_2019_Training_Input" / "ISIC_0000002.jpg", src / "train" / f"{name}.jpg")
    (src / "ISIC_2020_Training_GroundTruth.csv").write_text(
        "image_name,patient_id,diagnosis\nISIC_0000000,p,nevus\nISIC_9999999,p,Lentigo NOS\nISIC_0000001,p,unknown\n")
    out = isic2019.read(src, [isic2019.SOURCE_2019, ("train", "ISIC_2020_Training_GroundTruth.csv")])
    assert len(out) == 97  # ISIC_0000000 kept once (the 2019 row), the unknown diagnosis dropped
    extra = next(s for s in out if s.id == "ISIC_9999999")
    assert isic2019.CLASSES[extra.label] == "BKL"


def test_layout_errors_name_the_folder(tmp_path, root):
    with pytest.raises(DataError, match="lacks ISIC_2019_Training_Input"):
        isic2019.read(tmp_path)
    (tmp_path / "inner").symlink_to(root)
    with pytest.raises(DataError, match="one level above"):
        isic2019.read(tmp_path)


def test_image_missing_for_a_csv_row(tmp_path, root):
    import shutil

    src = tmp_path / "isic"
    shutil.copytree(root, src)
    (src / "ISIC_2019_Training_Input" / "ISIC_0000005.jpg").unlink()
    with pytest.raises(DataError, match="ISIC_0000005, which is not in"):
        isic2019.read(src)
