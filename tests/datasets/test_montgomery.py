"""The Montgomery fixture is in the NLM layout; the reader merges left and right masks and rejects bad input."""

import numpy as np
import pytest
from PIL import Image

from medrun.datasets import get, montgomery
from medrun.errors import DataError


@pytest.fixture
def root(tmp_path):
    return get("montgomery").make_fixture(tmp_path, 0)


def test_layout_reader_and_merged_mask(root):
    assert root.name == "MontgomerySet"
    cases = montgomery.read(root)
    assert len(cases) == 24 and cases[0].id == "MCUCXR_0001_0" and cases[2].tb == 1
    image, mask = montgomery.load(cases[0])
    left = np.asarray(Image.open(cases[0].masks[0])) > 0
    right = np.asarray(Image.open(cases[0].masks[1])) > 0
    assert image.dtype == np.float32 and 0 <= image.min() and image.max() <= 1
    assert np.array_equal(mask > 0, left | right) and left.any() and right.any() and not (left & right).any()
    assert image[mask > 0].mean() < image[mask == 0].mean()  # lungs are dark
    small_img, small_mask = montgomery.load(cases[0], size=64)
    assert small_img.shape == small_mask.shape == (64, 64)


def test_wrong_root_suggests_inner_folder(root):
    with pytest.raises(DataError, match="use .*MontgomerySet instead"):
        montgomery.read(root.parent)


def test_missing_mask_names_file(root):
    (root / "ManualMask" / "rightMask" / "MCUCXR_0003_1.png").unlink()
    with pytest.raises(DataError, match="MCUCXR_0003_1.png"):
        montgomery.read(root)


def test_mask_of_other_size_or_values_is_refused(root):
    case = montgomery.read(root)[0]
    Image.fromarray(np.zeros((10, 10), np.uint8)).save(case.masks[0])
    with pytest.raises(DataError, match="10×10 but its image is 128×128"):
        montgomery.load(case)
    Image.fromarray(np.full((128, 128), 7, np.uint8)).save(case.masks[0])
    with pytest.raises(DataError, match="values other than 0 and 255"):
        montgomery.load(case)
