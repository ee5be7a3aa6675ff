"""The Shenzhen fixture is in the NLM + third-party-mask layout; cases without a mask are left out."""

import numpy as np
import pytest
from PIL import Image

from medrun.datasets import get, shenzhen
from medrun.errors import DataError


@pytest.fixture
def root(tmp_path):
    return get("shenzhen").make_fixture(tmp_path, 0)


def test_layout_reader_and_mask(root):
    assert root.name == "ChinaSet_AllFiles" and (root / "mask" / "CHNCXR_0001_0_mask.png").is_file()
    said = []
    cases = shenzhen.read(root, said.append)
    assert len(cases) == 16 and cases[1].id == "CHNCXR_0002_1" and cases[1].tb == 1
    assert said == ["shenzhen: 4 images have no lung mask and are left out"]
    image, mask = shenzhen.load(cases[0])
    assert image.shape == mask.shape == (128, 128) and set(np.unique(mask)) == {0, 1}
    assert image[mask > 0].mean() < image[mask == 0].mean()  # lungs are dark


def test_wrong_root_and_bad_files(root):
    with pytest.raises(DataError, match="use .*ChinaSet_AllFiles instead"):
        shenzhen.read(root.parent)
    case = shenzhen.read(root)[0]
    Image.fromarray(np.zeros((10, 10), np.uint8)).save(case.mask)
    with pytest.raises(DataError, match="10×10 but its image is 128×128"):
        shenzhen.load(case)
    case.image.write_bytes(b"broken")
    with pytest.raises(DataError, match="cannot read image .*CHNCXR_0001_0.png"):
        shenzhen.load(case)
