"""CoNSeP: png + .mat layout, type mapping to PanNuke's classes, and clear errors for bad labels."""

import numpy as np
import pytest
from PIL import Image
from scipy.io import loadmat, savemat

from medrun.datasets import consep, get
from medrun.errors import DataError


@pytest.fixture
def root(tmp_path):
    return get("consep").make_fixture(tmp_path, 0)


def test_layout_and_reader(root):
    train, test = consep.read(root, "Train"), consep.read(root, "Test")
    assert [c.id for c in train] == ["train_1", "train_2", "train_3", "train_4"] and len(test) == 2
    with Image.open(train[0].image) as im:
        assert im.mode == "RGBA" and im.size == (128, 128)  # CoNSeP's PNGs carry an alpha channel
    mat = loadmat(train[0].label)
    assert {"inst_map", "type_map", "inst_type", "inst_centroid"} <= set(mat)
    img, inst, types = consep.load(train[0])
    assert img.shape == (128, 128, 3) and inst.max() == len(mat["inst_type"])
    lut = np.array([consep.TO_PANNUKE[k] for k in range(8)])
    assert np.array_equal(types, lut[mat["type_map"]])
    assert consep.TO_PANNUKE[4] == 1 and consep.TO_PANNUKE[3] == 5 and consep.TO_PANNUKE[1] == 0


def test_label_of_other_size_names_the_file(root):
    case = consep.read(root, "Test")[0]
    mat = loadmat(case.label)
    savemat(case.label, {**{k: v for k, v in mat.items() if not k.startswith("__")},
                         "inst_map": mat["inst_map"][:100]})
    with pytest.raises(DataError, match="do not match the image") as e:
        consep.load(case)
    assert str(case.label) in str(e.value)


def test_missing_key_and_missing_label(root):
    case = consep.read(root, "Train")[1]
    savemat(case.label, {"type_map": np.zeros((128, 128))})
    with pytest.raises(DataError, match="has no 'inst_map'"):
        consep.load(case)
    case.label.unlink()
    with pytest.raises(DataError, match="label missing"):
        consep.read(root, "Train")
    with pytest.raises(DataError, match="one level above"):
        consep.check_layout(root.parent)
