"""PanNuke: the fixture is written in the public fold layout, the reader relabels instances over the five class
channels, and wrong folders or mismatched arrays are DataErrors naming the file."""

import numpy as np
import pytest

from medrun.datasets import get, pannuke
from medrun.errors import DataError


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    return get("pannuke").make_fixture(tmp_path_factory.mktemp("pn"), 0)


def test_layout_and_dtypes_are_the_public_ones(root):
    for k in (1, 2, 3):
        f = pannuke.fold_files(root, k)
        assert f["images"] == root / f"Fold {k}" / "images" / f"fold{k}" / "images.npy"
        images, masks, types = np.load(f["images"]), np.load(f["masks"]), np.load(f["types"])
        assert images.shape == (12, 64, 64, 3) and images.dtype == np.float64 and images.max() <= 255
        assert masks.shape == (12, 64, 64, 6)
        assert set(types.tolist()) <= set(pannuke.TISSUES)
        fg = masks[..., :5].max(-1) > 0
        assert np.array_equal(masks[..., 5] == 1, ~fg)  # channel 5 is background
    assert sum(p.stat().st_size for p in root.rglob("*.npy")) < 8e6


def test_reader_relabels_instances_and_types(root):
    f = pannuke.read_fold(root, 2)
    masks = np.load(pannuke.fold_files(root, 2)["masks"])
    assert f.images.dtype == np.uint8 and f.inst.shape == (12, 64, 64) and f.ids[0] == "fold2_0000"
    for i in range(12):
        n = sum(len(np.unique(masks[i, ..., c])) - 1 for c in range(5))
        assert f.inst[i].max() == n and len(np.unique(f.inst[i])) == n + 1
        for c in range(5):
            assert np.array_equal(f.types[i] == c + 1, masks[i, ..., c] > 0)
    # every class appears, and tissue shifts the class mix (the metadata carries signal)
    assert set(np.unique(f.types)) == set(range(6))


def test_ids_repeated_across_channels_become_distinct_instances():
    m = np.zeros((1, 8, 8, 6))
    m[0, :4, :4, 0] = 1
    m[0, 4:, 4:, 1] = 1  # the same id in another class channel
    inst, types = pannuke.split_masks(m)
    assert set(np.unique(inst)) == {0, 1, 2} and types[0, 0, 0] == 1 and types[0, 7, 7] == 2


def test_mask_count_differing_from_images_names_the_file(tmp_path):
    root = pannuke.fixture(tmp_path, 0, n=4, size=32)
    masks = pannuke.fold_files(root, 1)["masks"]
    np.save(masks, np.load(masks)[:3])
    with pytest.raises(DataError, match="holds 3 masks but images.npy holds 4") as e:
        pannuke.read_fold(root, 1)
    assert str(masks) in str(e.value) and e.value.exit_code == 3


def test_wrong_folders(tmp_path):
    root = pannuke.fixture(tmp_path / "a", 0, n=2, size=32)
    with pytest.raises(DataError, match="one level above"):
        pannuke.check_layout(root.parent)
    with pytest.raises(DataError, match="is one fold"):
        pannuke.check_layout(root / "Fold 1")
    (pannuke.fold_files(root, 3)["types"]).unlink()
    with pytest.raises(DataError, match="fold 3 lacks types.npy"):
        pannuke.check_layout(root)
