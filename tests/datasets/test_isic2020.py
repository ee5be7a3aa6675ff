"""The ISIC 2020 fixture is in the official layout; the reader accepts the Kaggle layout too, splits by patient and
names bad input."""

import numpy as np
import pytest
from PIL import Image

from medrun.datasets import get, isic2020
from medrun.errors import DataError


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    return get("isic2020").make_fixture(tmp_path_factory.mktemp("isic2020"), 0)


def test_layout_labels_and_csv_columns(root):
    assert (root / "ISIC_2020_Training_JPEG" / "train").is_dir()
    header = (root / "ISIC_2020_Training_GroundTruth.csv").read_text().splitlines()[0].split(",")
    assert tuple(header) == isic2020.COLUMNS
    samples = isic2020.read(root)
    assert len(samples) == 120 and sum(s.label for s in samples) == 60
    assert all(
        s.path.name.startswith("ISIC_") and s.path.suffix == ".jpg" and s.patient.startswith("IP_") for s in samples
    )
    img = np.asarray(Image.open(samples[0].path))
    assert img.shape == (64, 64, 3) and img.dtype == np.uint8


def test_texture_carries_the_class(root):
    """Malignant discs carry high-frequency texture: the Laplacian energy inside the image separates the classes."""
    from scipy.ndimage import laplace

    energy = {0: [], 1: []}
    for s in isic2020.read(root):
        g = np.asarray(Image.open(s.path).convert("L"), dtype=float) / 255
        energy[s.label].append(np.abs(laplace(g))[16:48, 16:48].mean())
    assert min(energy[1]) > np.median(energy[0])


def test_split_is_grouped_by_patient_and_stratified(root):
    samples = isic2020.read(root)
    train, test = isic2020.split(samples, seed=0)
    assert len(train) + len(test) == 120 and 18 <= len(test) <= 30
    assert not {s.patient for s in train} & {s.patient for s in test}
    assert 0.3 < np.mean([s.label for s in test]) < 0.7


def test_kaggle_layout(tmp_path):
    root = isic2020.fixture(tmp_path / "k", 0, per_class=3)
    (root / "ISIC_2020_Training_JPEG" / "train").rename(root / "jpeg")
    (root / "jpeg").rename(root / "tmp")
    (root / "jpeg").mkdir()
    (root / "tmp").rename(root / "jpeg" / "train")
    (root / "ISIC_2020_Training_GroundTruth.csv").rename(root / "train.csv")
    (root / "ISIC_2020_Training_JPEG").rmdir()
    assert len(isic2020.read(root)) == 6


def test_bad_input_is_named(tmp_path):
    root = isic2020.fixture(tmp_path / "b", 0, per_class=3)
    with pytest.raises(DataError, match="one level above"):
        isic2020.read(tmp_path / "b" / ".." / "b" / "..")  # the parent of the root
    first = sorted((root / "ISIC_2020_Training_JPEG" / "train").glob("*.jpg"))[0]
    first.unlink()
    with pytest.raises(DataError, match=first.name):
        isic2020.read(root)
    (root / "ISIC_2020_Training_GroundTruth.csv").unlink()
    with pytest.raises(DataError, match="no ISIC_2020_Training_GroundTruth.csv"):
        isic2020.read(root)
