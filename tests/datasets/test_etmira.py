"""The ETMIRA fixture is in the repository layout (<ID>/PS/<ID>_<side>_depth.tif, GT_REL RGBA drawings, MASKS_REL
masks); the reader finds the annotated sides, falls back to albedo-Otsu for a missing mask, and names the file and
the fix for a missing depth map, a drawing of another size or a wrong folder."""

import numpy as np
import pytest
import tifffile
from PIL import Image

from medrun.datasets import etmira, get
from medrun.errors import DataError


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    return get("etmira").make_fixture(tmp_path_factory.mktemp("etmira"), 0)


def test_layout_and_reader(root):
    sides = etmira.sides(root)
    assert [s.key for s in sides] == ["ANSA-VI-1700_R", "KHM-0001_R", "KHM-0001_V", "KHM-0002_R"]
    s = sides[0]
    assert s.depth == root / "ANSA-VI-1700" / "PS" / "ANSA-VI-1700_R_depth.tif"
    assert (root / "GT_REL" / "ANSA-VI-1700_R_drawings.png").is_file() and s.mask.name == "ANSA-VI-1700_R_mask.png"
    with Image.open(s.gt) as im:
        assert im.mode == "RGBA" and np.asarray(im)[..., :3].max() == 0  # lines live in alpha only
    assert tifffile.imread(s.depth).dtype == np.float32
    depth, gt, mask, source = etmira.load(s)
    assert depth.shape == gt.shape == mask.shape == (336, 448) and source == "sam"
    assert 0.02 < gt.mean() < 0.12 and 0.4 < mask.mean() < 0.65 and not (gt & ~mask).any()
    otsu = etmira.load(sides[3])
    assert sides[3].mask is None and otsu[3] == "otsu" and 0.4 < otsu[2].mean() < 0.65


def test_missing_depth_names_file_and_suffix(root, tmp_path):
    with pytest.raises(DataError, match=r"ANSA-VI-1700_R_D\.tif.*dataset\.depth_suffix"):
        etmira.sides(root, depth_suffix="D")


def test_drawing_of_another_size(root, tmp_path):
    import shutil

    copy = tmp_path / "ETMIRA"
    shutil.copytree(root, copy)
    gt = copy / "GT_REL" / "KHM-0001_R_drawings.png"
    Image.new("RGBA", (100, 80)).save(gt)
    side = next(s for s in etmira.sides(copy) if s.key == "KHM-0001_R")
    with pytest.raises(DataError, match=r"KHM-0001_R_drawings\.png is 100×80 but its depth map is 448×336"):
        etmira.load(side)


def test_wrong_folder(root, tmp_path):
    with pytest.raises(DataError, match="one level above"):
        etmira.sides(root.parent)
    with pytest.raises(DataError, match="not found"):
        etmira.sides(tmp_path / "nowhere")
    with pytest.raises(DataError, match="no GT_REL"):
        etmira.sides(tmp_path)
