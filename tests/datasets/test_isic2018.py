"""The ISIC 2018 fixture is in the official layout (and the UNeXt repo layout on request); the reader finds the
pairs in both, ignores the archive's text files, and rejects bad masks naming the file."""

import numpy as np
import pytest
from PIL import Image

from medrun.datasets import get, isic2018
from medrun.errors import DataError


@pytest.fixture
def root(tmp_path):
    return get("isic2018").make_fixture(tmp_path, 0)


def test_official_layout_and_reader(root):
    images, masks = isic2018.official_dirs(root)
    assert images.name == "ISIC2018_Task1-2_Training_Input" and masks.name == "ISIC2018_Task1_Training_GroundTruth"
    assert (images / "ISIC_0000000.jpg").is_file() and (masks / "ISIC_0000000_segmentation.png").is_file()
    assert (images / "LICENSE.txt").is_file()  # the archive's quirk, not read as an image
    cases = isic2018.read(root)
    assert len(cases) == 24 and cases[3].id == "ISIC_0000003" and isic2018.layout(root) == "official"
    raw = np.asarray(Image.open(cases[0].mask))
    assert raw.shape == (96, 96) and set(np.unique(raw)) == {0, 255}
    img, mask = isic2018.load(cases[0])
    assert img.shape == (96, 96, 3) and img.dtype == np.uint8 and mask.dtype == np.uint8
    assert img[mask > 0].mean() < img[mask == 0].mean() - 40  # the lesion is dark
    fractions = [isic2018.load(c)[1].mean() for c in cases]
    assert 0.1 < np.mean(fractions) < 0.25  # so an all-foreground guess scores Dice ≈ 0.3
    small_img, small_mask = isic2018.load(cases[0], size=64)
    assert small_img.shape == (64, 64, 3) and small_mask.shape == (64, 64) and set(np.unique(small_mask)) <= {0, 1}


def test_unext_repo_layout(tmp_path):
    root = isic2018.fixture(tmp_path, 0, n=5, layout="unext")
    assert root.parts[-2:] == ("inputs", "isic") and isic2018.layout(root) == "unext"
    cases = isic2018.read(root)
    assert [c.mask.parent.name for c in cases] == ["0"] * 5 and cases[0].image.suffix == ".png"
    with pytest.raises(DataError, match=r"one level above.*use .*isic instead"):
        isic2018.read(root.parent)


def test_wrong_or_half_layout(root, tmp_path):
    with pytest.raises(DataError, match="use .*ISIC2018 instead"):
        isic2018.read(root.parent)
    with pytest.raises(DataError, match="not found"):
        isic2018.read(tmp_path / "nowhere")
    for p in isic2018.official_dirs(root)[1].iterdir():
        p.unlink()
    isic2018.official_dirs(root)[1].rmdir()
    with pytest.raises(DataError, match="missing ISIC2018_Task1_Training_GroundTruth"):
        isic2018.read(root)


def test_missing_mask_names_file(root):
    (isic2018.official_dirs(root)[1] / "ISIC_0000005_segmentation.png").unlink()
    with pytest.raises(DataError, match="ISIC_0000005_segmentation.png"):
        isic2018.read(root)


def test_mask_of_other_size_or_values_is_refused(root):
    case = isic2018.read(root)[0]
    Image.fromarray(np.zeros((10, 12), np.uint8)).save(case.mask)
    with pytest.raises(DataError, match=r"ISIC_0000000_segmentation.png is 12×10 but its image is 96×96"):
        isic2018.load(case)
    Image.fromarray(np.full((96, 96), 128, np.uint8)).save(case.mask)
    with pytest.raises(DataError, match="values other than 0 and 255 \\(128\\)"):
        isic2018.load(case)
