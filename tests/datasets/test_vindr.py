"""VinDr-CXR (datasets/vindr.py): the fixture is the PhysioNet layout (DICOM train/ and test/, three radiologists
per training image, some MONOCHROME1), image labels are any radiologist's findings, pixels come out upright, the
Kaggle VinBigData layout (train.csv of boxes) is read too, and bad input is one DataError naming the file."""

import shutil

import numpy as np
import pytest

from medrun.datasets import get, vindr
from medrun.errors import DataError


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    return get("vindr").make_fixture(tmp_path_factory.mktemp("vindr") / "vindr", 0)


@pytest.fixture
def copy(root, tmp_path):
    return shutil.copytree(root, tmp_path / "vindr")


def test_fixture_is_the_physionet_layout(root):
    import pydicom

    dicoms = sorted((root / "train").glob("*.dicom"))
    assert len(dicoms) == 160 and len(list((root / "test").glob("*.dicom"))) == 60
    photometric = {str(pydicom.dcmread(p, stop_before_pixels=True).PhotometricInterpretation) for p in dicoms}
    assert photometric == {"MONOCHROME1", "MONOCHROME2"}
    train = (root / "annotations" / "image_labels_train.csv").read_text().splitlines()
    assert train[0].startswith("image_id,rad_ID,Aortic enlargement") and train[0].endswith("No finding")
    assert len(train) == 1 + 3 * 160
    assert (root / "annotations" / "image_labels_test.csv").read_text().startswith("image_id,Aortic")
    assert sum(p.stat().st_size for p in root.rglob("*.dicom")) < 6_000_000


def test_reader_any_radiologist(root):
    s = vindr.read_split(root)
    assert len(s["train_val"]) == 160 and len(s["test"]) == 60
    assert {lab for e in s["train_val"] for lab in e.labels} == set(vindr.PATTERNS)
    rows = (root / "annotations" / "image_labels_train.csv").read_text().splitlines()
    col = rows[0].split(",").index("Cardiomegaly")
    marked = {r.split(",")[0] for r in rows[1:] if r.split(",")[col] == "1"}
    assert marked == {e.patient for e in s["train_val"] if "Cardiomegaly" in e.labels}


def test_pixels_upright_and_signal(root):
    import pydicom

    entries = vindr.read_split(root)["train_val"]
    arr = vindr.image_array([e.path for e in entries], 64).astype(float)
    mono1 = np.array([str(pydicom.dcmread(e.path, stop_before_pixels=True).PhotometricInterpretation)
                      == "MONOCHROME1" for e in entries])
    corner = arr[:, :6, :6].mean((1, 2))  # background is dark in every image after MONOCHROME1 is inverted
    assert corner[mono1].mean() < 60 and corner[~mono1].mean() < 60
    card = np.array(["Cardiomegaly" in e.labels for e in entries])
    centre = arr[:, 30:48, 24:44].mean((1, 2))
    assert centre[card].mean() > centre[~card].mean() + 15


def test_kaggle_layout(root, tmp_path):
    k = tmp_path / "vinbig"
    shutil.copytree(root / "train", k / "train")
    lines = ["image_id,class_name,class_id,rad_id,x_min,y_min,x_max,y_max"]
    for e in vindr.read_split(root)["train_val"]:
        for lab in e.labels or ("No finding",):
            cid = vindr.LABELS.index(lab) if lab in vindr.LABELS else 14
            lines.append(f"{e.patient},{lab},{cid},R9,1,2,30,40" if cid < 14 else f"{e.patient},{lab},14,R9,,,,")
    (k / "train.csv").write_text("\n".join(lines) + "\n")
    s = vindr.read_split(k)
    assert len(s["train_val"]) == 128 and len(s["test"]) == 32
    (k / "train.csv").write_text("\n".join([*lines, f"{s['test'][0].patient},Covid,15,R9,,,,"]) + "\n")
    with pytest.raises(DataError, match=f"line {len(lines) + 1}.*'Covid' is not one of the 14"):
        vindr.read_split(k)


def test_bad_inputs(copy, tmp_path):
    p = copy / "annotations" / "image_labels_test.csv"
    lines = p.read_text().splitlines()
    victim = lines[5].split(",")[0]
    (copy / "test" / f"{victim}.dicom").unlink()
    with pytest.raises(DataError, match=f"image_labels_test.csv names 1 image.*{victim}.dicom"):
        vindr.read_split(copy)
    lines = lines[:5] + lines[6:]
    lines[2] = lines[2][:-1] + "7"
    p.write_text("\n".join(lines) + "\n")
    with pytest.raises(DataError, match="line 3.*No finding is '7', not 0 or 1"):
        vindr.read_split(copy)
    p.write_text("\n".join([lines[0].replace("ILD", "Covid"), *lines[1:]]) + "\n")
    with pytest.raises(DataError, match="Covid not among VinDr-CXR's labels"):
        vindr.read_split(copy)
    p.unlink()
    with pytest.raises(DataError, match="image_labels_test.csv.*--fixture"):
        vindr.read_split(copy)
    (copy / "train" / "x.dicom").write_bytes(b"not a dicom")
    with pytest.raises(DataError, match="x.dicom"):
        vindr.load_gray(copy / "train" / "x.dicom", 32)
