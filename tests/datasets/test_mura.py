"""The MURA fixture is in the MURA-v1.1 layout; the reader labels from study folders and rejects bad input."""

import numpy as np
import pytest
from PIL import Image

from medrun.datasets import get, mura
from medrun.errors import DataError


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    return get("mura").make_fixture(tmp_path_factory.mktemp("mura"), 0)


def test_layout_csvs_and_labels(root):
    assert root.name == "MURA-v1.1"
    train, valid = mura.read(root, "train"), mura.read(root, "valid")
    assert (len(train), len(valid)) == (40, 16)
    assert sum(s.label for s in train) == 20 and sum(s.label for s in valid) == 8
    for s in train + valid:
        assert s.path.parent.name.startswith("study1_") and s.label == int(s.path.parent.name.endswith("positive"))
        assert s.patient.startswith("patient") and len(s.patient) == len("patient00001")
    listed = (root / "train_image_paths.csv").read_text().split()
    assert sorted(listed) == sorted(f"MURA-v1.1/{s.path.relative_to(root).as_posix()}" for s in train)
    studies = [line.split(",") for line in (root / "valid_labeled_studies.csv").read_text().split()]
    assert all(p.startswith("MURA-v1.1/valid/XR_ELBOW/patient") and p.endswith("/") and y == str(int("positive" in p))
               for p, y in studies)
    img = np.asarray(Image.open(valid[0].path))
    assert img.ndim == 2 and img.dtype == np.uint8 and img.shape == (64, 64)


def test_lesions_mark_the_bright_blob(root):
    lesions = mura.read_lesions(root)
    abnormal = [s for s in mura.read(root, "valid") if s.label == 1]
    assert all(s.path.relative_to(root).as_posix() in lesions for s in abnormal) and len(lesions) == 28
    for s in abnormal:
        cy, cx, r = lesions[s.path.relative_to(root).as_posix()]
        img = np.asarray(Image.open(s.path)).astype(float)
        assert img[int(round(cy)), int(round(cx))] > np.median(img) + 60
    assert mura.read_lesions(root.parent) == {}


def test_wrong_root_suggests_inner_folder(root):
    with pytest.raises(DataError, match="use .*MURA-v1.1 instead"):
        mura.read(root.parent, "train")


def test_missing_study_type_lists_present(root):
    with pytest.raises(DataError, match="no XR_WRIST folder.*found: XR_ELBOW"):
        mura.read(root, "train", "XR_WRIST")


def test_bad_study_folder_name(tmp_path):
    r = get("mura").make_fixture(tmp_path, 1)
    study = next((r / "valid" / "XR_ELBOW").glob("patient*/study1_*"))
    study.rename(study.with_name("study1"))
    with pytest.raises(DataError, match="study1 is not named studyK_positive"):
        mura.read(r, "valid")
