"""The generic image/mask pair folder (unet-lrp's NDT layout): fixture, reader and bad input."""

import numpy as np
import pytest
from PIL import Image

from medrun.datasets import get, pairs
from medrun.errors import DataError


@pytest.fixture
def root(tmp_path):
    return get("pairs").make_fixture(tmp_path, 0)


def test_layout_reader_and_pores(root):
    import warnings

    from medrun.datasets.images import DataWarning

    cases = pairs.read(root)
    assert len(cases) == 16 and cases[0].id == "slice_0000" and cases[0].mask == root / "masks" / "slice_0000.png"
    assert [c.image.name for c in cases[:3]] == ["slice_0000.png", "slice_0001.tif", "slice_0002.dcm"]
    assert Image.open(cases[0].image).mode.startswith("I;16")  # a 16-bit PNG, as scanners export
    with warnings.catch_warnings():
        warnings.simplefilter("error", DataWarning)  # the default handling clips nothing
        for case in cases[:3]:  # 16-bit PNG, float TIFF, DICOM with 12-bit values
            image, mask = pairs.load(case)
            assert image.shape == mask.shape == (96, 96) and 0 < mask.mean() < 0.2, case.image
            assert image[mask > 0].mean() < image[mask == 0].mean() - 0.3, case.image  # pores are dark
            assert len(np.unique(image)) > 1000, case.image  # more than 8 bits' worth of levels survive
    rgb, _ = pairs.load(cases[0], channels=3)
    assert rgb.shape == (96, 96, 3)


def test_bad_input(root):
    with pytest.raises(DataError, match="does not have the image/mask pair layout: missing images, masks"):
        pairs.read(root.parent)
    case = pairs.read(root)[0]
    Image.fromarray(np.full((96, 96), 9, np.uint8)).save(case.mask)
    with pytest.raises(DataError, match="values other than 0 and 255"):
        pairs.load(case)
    case.image.write_bytes(b"junk")
    with pytest.raises(DataError, match="cannot read image .*slice_0000.png"):
        pairs.load(case)
    (root / "masks" / "slice_0003.png").unlink()
    with pytest.raises(DataError, match="mask missing for .*slice_0003.png"):
        pairs.read(root)
