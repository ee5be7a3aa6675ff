"""Brain Tumor Classification (MRI): the fixture is the Kaggle layout (Training/ + Testing/ class folders, arbitrary
names with spaces and parentheses, grey stored as RGB), the reader merges both splits, wrong layouts fail clearly."""

import shutil

import numpy as np
import pytest
from PIL import Image

from medrun.datasets import brain_tumor_mri as btm
from medrun.datasets import get
from medrun.errors import DataError


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    return get("brain-tumor-mri").make_fixture(tmp_path_factory.mktemp("btm") / "data", 0)


def test_layout_names_and_format(root):
    for split, n in (("Training", 16), ("Testing", 4)):
        assert sorted(p.name for p in (root / split).iterdir()) == btm.CLASSES
        for cls in btm.CLASSES:
            assert len(list((root / split / cls).iterdir())) == n
    names = {p.name for p in root.rglob("*") if p.is_file()}
    assert "gg (1).jpg" in names and "image(2).jpg" in names and "image(2).JPG" in names
    with Image.open(root / "Training" / "glioma_tumor" / "gg (1).jpg") as im:
        assert im.format == "JPEG" and im.mode == "RGB" and im.size == (64, 64)
        a = np.asarray(im).astype(int)
    assert np.abs(a[..., 0] - a[..., 1]).max() <= 12  # grey stored as three channels (JPEG noise aside)


def test_reader_merges_training_and_testing(root):
    samples = btm.read(root)
    assert len(samples) == 80
    assert {s.split for s in samples} == {"Training", "Testing"}
    assert [sum(s.label == i for s in samples) for i in range(4)] == [20, 20, 20, 20]


def test_fixture_signal_is_where_the_card_puts_it(root):
    def mean_img(cls):
        return np.mean([np.asarray(Image.open(p).convert("L"), float)
                        for p in (root / "Training" / cls).iterdir()], axis=0)

    g, m, n, p = (mean_img(c) for c in btm.CLASSES)  # glioma, meningioma, no_tumor, pituitary
    assert g[15:25, 15:25].mean() > n[15:25, 15:25].mean() + 40  # glioma top-left
    assert m[15:25, 39:49].mean() > n[15:25, 39:49].mean() + 40  # meningioma top-right
    assert p[43:52, 28:36].mean() > n[43:52, 28:36].mean() + 40  # pituitary bottom-centre


def test_wrong_layouts_name_the_folder_and_the_fix(root, tmp_path):
    with pytest.raises(DataError, match="no Testing/ folder"):
        shutil.copytree(root / "Training", tmp_path / "a" / "Training")
        btm.check_layout(tmp_path / "a")
    with pytest.raises(DataError, match="use .*inner"):
        shutil.copytree(root, tmp_path / "b" / "inner")
        btm.check_layout(tmp_path / "b")
    odd = tmp_path / "c"
    shutil.copytree(root, odd)
    (odd / "Training" / "astrocytoma").mkdir()
    with pytest.raises(DataError, match="astrocytoma.*not one of the card's classes"):
        btm.read(odd)
    with pytest.raises(DataError, match="not found"):
        btm.check_layout(tmp_path / "nowhere")
