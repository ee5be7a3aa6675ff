"""The BUSI fixture is in the Kaggle layout; the reader merges extra masks, skips nothing silently and rejects bad
masks with the file's name."""

import numpy as np
import pytest
from PIL import Image

from medrun.datasets import busi, get
from medrun.errors import DataError


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    return get("busi").make_fixture(tmp_path_factory.mktemp("busi"), 0)


def test_layout_labels_and_merged_masks(root):
    assert root.name == "Dataset_BUSI_with_GT"
    assert (root / "normal" / "normal (1)_mask.png").is_file()  # present in the layout, not read by default
    cases = busi.read(root)
    assert len(cases) == 24 and sum(c.label for c in cases) == 12
    assert [c.id for c in cases[:3]] == ["benign (1)", "benign (2)", "benign (3)"]  # numeric order
    two = next(c for c in cases if c.id == "malignant (8)")
    assert [p.name for p in two.masks] == ["malignant (8)_mask.png", "malignant (8)_mask_1.png"]
    image, mask = busi.load(two)
    parts = [np.asarray(Image.open(p)) > 0 for p in two.masks]
    assert parts[0].any() and parts[1].any() and not (parts[0] & parts[1]).any()
    assert np.array_equal(mask > 0, parts[0] | parts[1])
    assert image.dtype == np.float32 and image.shape == (64, 64)
    assert image[mask > 0].mean() < image[mask == 0].mean()  # hypoechoic lesion
    small_img, small_mask = busi.load(two, size=32)
    assert small_img.shape == small_mask.shape == (32, 32) and set(np.unique(small_mask)) <= {0, 1}


def test_wrong_root_and_missing_files(root, tmp_path):
    with pytest.raises(DataError, match="use .*Dataset_BUSI_with_GT instead"):
        busi.read(root.parent)
    with pytest.raises(DataError, match="missing folder"):
        busi.read(root / "benign")
    copy = tmp_path / "Dataset_BUSI_with_GT"
    for cls in ("benign", "malignant"):
        (copy / cls).mkdir(parents=True)
        (copy / cls / f"{cls} (1).png").write_bytes((root / cls / f"{cls} (1).png").read_bytes())
    with pytest.raises(DataError, match=r"no mask for .*benign \(1\)\.png"):
        busi.read(copy)


def _copy_case(root, tmp_path, name="benign (5)"):
    case = next(c for c in busi.read(root) if c.id == name)
    dst = tmp_path / "m.png"
    dst.write_bytes(case.masks[0].read_bytes())
    return busi.Case(case.id, case.image, (dst,), case.label)


def test_mask_of_other_size_is_refused(root, tmp_path):
    case = _copy_case(root, tmp_path)
    Image.fromarray(np.zeros((10, 12), np.uint8)).save(case.masks[0])
    with pytest.raises(DataError, match=r"m\.png is 12×10 but its image benign \(5\)\.png is 64×64"):
        busi.load(case)


def test_mask_with_other_values_is_refused(root, tmp_path):
    case = _copy_case(root, tmp_path)
    Image.fromarray(np.full((64, 64), 7, np.uint8)).save(case.masks[0])
    with pytest.raises(DataError, match=r"m\.png has values other than 0 and 255"):
        busi.load(case)
