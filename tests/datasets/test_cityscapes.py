"""The Cityscapes fixture is in the public layout; the reader pairs images with labelIds and rejects bad input."""

import numpy as np
import pytest
from PIL import Image

from medrun.datasets import cityscapes, get
from medrun.errors import DataError


@pytest.fixture
def root(tmp_path):
    return get("cityscapes").make_fixture(tmp_path, 0)


def test_layout_reader_and_person_mask(root):
    assert (root / "leftImg8bit" / "train" / "aachen" / "aachen_000000_000019_leftImg8bit.png").is_file()
    assert (root / "gtFine" / "train" / "aachen" / "aachen_000000_000019_gtFine_labelIds.png").is_file()
    cases = cityscapes.read(root, "train")
    assert len(cases) == 12 and cases[0].id == "aachen_000000_000019" and cases[0].city == "aachen"
    assert len(cityscapes.read(root, "val")) == 2
    image, mask = cityscapes.load(cases[0])
    ids = np.asarray(Image.open(cases[0].label))
    assert image.shape == (64, 128, 3) and image.dtype == np.float32 and 0 <= image.min() and image.max() <= 1
    assert np.array_equal(mask > 0, ids == 24) and mask.any()
    assert {7, 11, 23, 24} <= set(np.unique(ids).tolist())
    assert image[mask > 0, 0].mean() > image[mask == 0, 0].mean()  # persons are red
    _, cars = cityscapes.load(cases[0], label=26)
    assert cars.any() and not (cars & mask).any()


def test_wrong_root_and_missing_split(root, tmp_path):
    with pytest.raises(DataError, match="does not have the Cityscapes layout: missing leftImg8bit, gtFine"):
        cityscapes.read(root.parent)
    with pytest.raises(DataError, match="no test split"):
        cityscapes.read(root, "test")


def test_missing_label_names_file(root):
    (root / "gtFine" / "train" / "aachen" / "aachen_000003_000019_gtFine_labelIds.png").unlink()
    with pytest.raises(DataError, match="aachen_000003_000019_gtFine_labelIds.png"):
        cityscapes.read(root)


def test_unreadable_image_and_wrong_label_size(root):
    case = cityscapes.read(root)[0]
    Image.fromarray(np.zeros((10, 10), np.uint8)).save(case.label)
    with pytest.raises(DataError, match="10×10 but its image is 128×64"):
        cityscapes.load(case)
    case.image.write_bytes(b"not a png")
    with pytest.raises(DataError, match="cannot read image .*aachen_000000_000019_leftImg8bit.png"):
        cityscapes.load(case)
