"""The cxr fixture is in the Kaggle 'Chest X-ray masks and labels' layout: Montgomery masks by the image's name,
Shenzhen masks as <name>_mask.png, images without a mask left out; bad files are one-line DataErrors."""

import numpy as np
import pytest
from PIL import Image

from medrun.datasets import cxr_lung, get
from medrun.errors import DataError


@pytest.fixture
def root(tmp_path):
    return get("cxr").make_fixture(tmp_path, 0)


def test_layout_reader_and_mask(root):
    assert root.name == "Lung Segmentation"
    assert (root / "masks" / "MCUCXR_0001_1.png").is_file() and (root / "masks" / "CHNCXR_0001_0_mask.png").is_file()
    said = []
    cases = cxr_lung.read(root, said.append)
    assert len(cases) == 24 and said == ["cxr: 1 of 25 images have no lung mask and are left out"]
    assert {c.mask.name for c in cases} == {f"{c.id}.png" if c.id.startswith("MCU") else f"{c.id}_mask.png"
                                            for c in cases}
    assert sum(c.id.startswith("MCU") for c in cases) == 12  # the 25th image (Montgomery-named) has no mask
    image, mask = cxr_lung.load(cases[0], 64)
    assert image.shape == mask.shape == (64, 64) and image.dtype == np.uint8 and set(np.unique(mask)) == {0, 1}
    assert image[mask > 0].mean() < image[mask == 0].mean()  # lungs are dark


def test_wrong_root_and_bad_files(root):
    with pytest.raises(DataError, match="use .*Lung Segmentation instead"):
        cxr_lung.read(root.parent)
    case = cxr_lung.read(root)[0]
    Image.fromarray(np.zeros((10, 10), np.uint8)).save(case.mask)
    with pytest.raises(DataError, match="10×10 but its image is 96×96"):
        cxr_lung.load(case)
    Image.fromarray(np.full((96, 96), 128, np.uint8)).save(case.mask)
    with pytest.raises(DataError, match="values other than 0 and 255"):
        cxr_lung.load(case)
    case.image.write_bytes(b"broken")
    with pytest.raises(DataError, match=f"cannot read .*{case.image.name}"):
        cxr_lung.load(case)
