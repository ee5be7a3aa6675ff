"""The chest X-ray fixture is in the Kermany layout; a Kaggle val/ folder is folded into train; bad folders are
named."""

import numpy as np
import pytest
from PIL import Image

from medrun.datasets import chestxray, get
from medrun.errors import DataError


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    return get("chestxray").make_fixture(tmp_path_factory.mktemp("cxr"), 0)


def test_layout_and_labels(root):
    assert root.name == "chest_xray"
    train, test = chestxray.read(root, "train"), chestxray.read(root, "test")
    assert (len(train), len(test)) == (90, 30)
    assert sum(s.label for s in train) == 45 and sum(s.label for s in test) == 15
    for s in train + test:
        assert s.path.suffix == ".jpeg" and s.label == int(s.path.parent.name == "PNEUMONIA")
    assert all(s.path.name.startswith("person") for s in train if s.label == 1)
    img = np.asarray(Image.open(train[0].path))
    assert img.ndim == 2 and img.shape == (64, 64)


def test_opacities_carry_the_class(root):
    from scipy.ndimage import laplace

    energy = {0: [], 1: []}
    for s in chestxray.read(root, "train"):
        g = np.asarray(Image.open(s.path), dtype=float) / 255
        energy[s.label].append(np.abs(laplace(g)).mean())
    assert np.median(energy[1]) > np.percentile(energy[0], 90)


def test_kaggle_val_folder_joins_train(tmp_path):
    root = chestxray.fixture(tmp_path / "k", 0, train_per_class=2, test_per_class=1)
    for c in chestxray.CLASSES:
        (root / "val" / c).mkdir(parents=True)
        src = sorted((root / "train" / c).glob("*.jpeg"))[0]
        src.rename(root / "val" / c / src.name)
    (root / "train" / "NORMAL" / ".DS_Store").write_text("x")
    assert len(chestxray.read(root, "train")) == 4 and len(chestxray.read(root, "test")) == 2


def test_wrong_folders_are_named(tmp_path):
    root = chestxray.fixture(tmp_path / "w", 0, train_per_class=1, test_per_class=1)
    with pytest.raises(DataError, match="use .*chest_xray instead"):
        chestxray.read(root.parent, "train")
    (root / "test" / "PNEUMONIA").rename(root / "test" / "pneumonia_x")
    with pytest.raises(DataError, match="missing folder"):
        chestxray.read(root, "test")
