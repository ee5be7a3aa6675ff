"""EndoVis17/18 fixtures are in the challenge layouts; readers map tool folders and colour codes to the card's
classes."""

import json

import numpy as np
import pytest
from PIL import Image

from medrun.datasets import endovis, get
from medrun.datasets.surgical import check_same_size
from medrun.errors import DataError


@pytest.fixture(scope="module")
def root17(tmp_path_factory):
    return get("endovis17").make_fixture(tmp_path_factory.mktemp("e17"), 0)


@pytest.fixture(scope="module")
def root18(tmp_path_factory):
    return get("endovis18").make_fixture(tmp_path_factory.mktemp("e18"), 0)


def test_endovis17_tools(root17):
    train = endovis.read17(root17, "train", [1, 2])
    assert len(train) == 8 and train[0].id == "train/instrument_dataset_1/frame000"
    assert {n for n, _ in train[0].parts} == set(endovis.CLASSES17)  # Other_labels ignored
    assert len(endovis.read17(root17, "test")) == 8
    image, masks = endovis.load17(train[0], endovis.CLASSES17)
    bipolar = (
        np.asarray(
            Image.open(train[0].image.parents[1] / "ground_truth" / "Maryland_Bipolar_Forceps_labels" / "frame000.png")
        )
        > 0
    )
    assert image.shape == (64, 96, 3) and np.array_equal(masks[1], bipolar)
    assert masks.any(axis=(1, 2)).sum() >= 1


def test_endovis17_errors(tmp_path):
    root = get("endovis17").make_fixture(tmp_path, 0)
    odd = root / "train" / "instrument_dataset_1" / "ground_truth" / "Scalpel_labels"
    odd.mkdir()
    with pytest.raises(DataError, match="unknown tool folder .*Scalpel_labels"):
        endovis.read17(root, "train")
    odd.rmdir()
    (root / "train" / "instrument_dataset_2" / "ground_truth" / "Vessel_Sealer_labels" / "frame001.png").unlink()
    with pytest.raises(DataError, match="Vessel_Sealer_labels/frame001.png"):
        endovis.read17(root, "train")
    with pytest.raises(DataError, match="no train/ or test/"):
        endovis.read17(root / "train", "train")


def test_endovis18_merges_instrument_parts(root18):
    frames = endovis.read18(root18, "train", [1, 3])
    assert len(frames) == 8 and {f.video for f in frames} == {"train/seq_1", "train/seq_3"}
    cmap = endovis.colour_map(frames[0].parts[0][1])
    assert sorted(set(cmap.values())) == sorted(endovis.CLASSES18) and len(endovis.CLASSES18) == 10
    for f in frames:
        image, masks = endovis.load18(f, endovis.CLASSES18)
        lab = np.asarray(Image.open(f.label))
        parts = np.isin(
            lab.reshape(-1, 3).view([("", lab.dtype)] * 3).ravel(),
            np.array([(0, 255, 0), (0, 255, 255), (125, 255, 12)], dtype=lab.dtype).view([("", lab.dtype)] * 3).ravel(),
        )
        assert np.array_equal(masks[1].ravel(), parts)  # shaft + clasper + wrist = robotic instrument
        assert (masks.sum(0) == 1).all()  # every pixel has exactly one class


def test_endovis18_unknown_colour(tmp_path):
    root = get("endovis18").make_fixture(tmp_path, 0)
    f = endovis.read18(root, "test")[0]
    Image.fromarray(np.full((64, 96, 3), 3, np.uint8)).save(f.label)
    with pytest.raises(DataError, match=r"colour \(3, 3, 3\) not in"):
        endovis.load18(f, endovis.CLASSES18)
    (f.label.parents[1] / "labels.json").write_text(json.dumps([{"name": "spleen", "color": [1, 2, 3], "classid": 1}]))
    with pytest.raises(DataError, match="unknown class 'spleen'"):
        endovis.read18(root, "test")


def test_mixed_sizes_name_the_file(root17, tmp_path):
    frames = endovis.read17(root17, "train")
    odd = tmp_path / "odd.png"
    Image.fromarray(np.zeros((70, 100, 3), np.uint8)).save(odd)
    with pytest.raises(DataError, match="odd.png is 100×70 but the other frames are 96×64"):
        check_same_size([f.image for f in frames] + [odd])
