"""The CholecSeg8k fixture is in the Kaggle layout; the reader decodes watershed grey values and rejects bad input."""

import numpy as np
import pytest
from PIL import Image

from medrun.datasets import cholecseg8k, get
from medrun.errors import DataError


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    return get("cholecseg8k").make_fixture(tmp_path_factory.mktemp("c8k"), 0)


def test_layout_and_decoding(root):
    frames = cholecseg8k.read(root)
    assert len(frames) == 24 and {f.video for f in frames} == {"video01", "video09", "video12"}
    f = frames[0]
    assert f.id == "video01/video01_00080/frame_80" and f.image.name == "frame_80_endo.png"
    for suffix in cholecseg8k.MASK_SUFFIXES:
        assert (f.image.parent / f"frame_80{suffix}").is_file()
    image, masks = cholecseg8k.load(f, ["liver", "grasper", "gallbladder", "blood"])
    grey = np.asarray(Image.open(f.label))
    assert grey.ndim == 3 and (grey[..., 0] == grey[..., 1]).all()  # RGB watershed, R = G = B, as released
    assert image.shape == (64, 96, 3) and masks.shape == (4, 64, 96)
    assert np.array_equal(masks[0], grey[..., 0] == 21) and np.array_equal(masks[2], grey[..., 0] == 22)
    assert not masks[3].any()  # blood is absent: an empty target
    assert not (masks[0] & masks[1]).any()
    assert len(cholecseg8k.CLASSES) == 12
    assert [f.video for f in cholecseg8k.read(root, ["video12"])] == ["video12"] * 8


def test_missing_mask_names_the_file(tmp_path):
    root = get("cholecseg8k").make_fixture(tmp_path, 0)
    gone = root / "video09" / "video09_00160" / "frame_163_endo_watershed_mask.png"
    gone.unlink()
    with pytest.raises(DataError, match="frame_163_endo_watershed_mask.png"):
        cholecseg8k.read(root)


def test_unknown_grey_value_and_wrong_root(tmp_path):
    root = get("cholecseg8k").make_fixture(tmp_path, 0)
    f = cholecseg8k.read(root)[0]
    Image.fromarray(np.full((64, 96, 3), 77, np.uint8)).save(f.label)
    with pytest.raises(DataError, match=r"grey values \[77\]"):
        cholecseg8k.load(f, ["liver"])
    with pytest.raises(DataError, match="use .*cholecseg8k instead"):
        cholecseg8k.read(root.parent)
    with pytest.raises(DataError, match="video33"):
        cholecseg8k.read(root, ["video01", "video33"])
