"""MIMIC-CXR-JPG v2.0.0 (datasets/mimic.py): the fixture is PhysioNet's layout (gzip CSVs, files/p1X/pN/sN/<dicom>.jpg,
laterals beside frontals, uncertain and empty CheXpert values), the reader keeps frontal images with U-zeros labels
and the official split, and bad input is one DataError naming the file."""

import gzip
import shutil

import numpy as np
import pytest

from medrun.datasets import get, mimic, nih
from medrun.errors import DataError


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    return get("mimic").make_fixture(tmp_path_factory.mktemp("mimic") / "mimic", 0)


@pytest.fixture
def copy(root, tmp_path):
    return shutil.copytree(root, tmp_path / "mimic")


def _lines(path):
    return gzip.decompress(path.read_bytes()).decode().splitlines()


def _write(path, lines):
    path.write_bytes(gzip.compress(("\n".join(lines) + "\n").encode()))


def test_fixture_is_the_physionet_layout(root):
    for name in mimic.CSVS.values():
        assert (root / name).read_bytes()[:2] == b"\x1f\x8b"  # gzip
    chex = _lines(root / mimic.CSVS["chexpert"])
    assert chex[0].split(",") == ["subject_id", "study_id", *mimic.LABELS] and len(mimic.LABELS) == 14
    assert any(",-1.0" in line for line in chex) and any(",," in line for line in chex)
    jpgs = list((root / "files").glob("p1?/p*/s*/*.jpg"))
    assert len(jpgs) > 300 and len(jpgs) == len(list((root / "files").rglob("*.jpg")))
    assert all(p.parent.parent.name.startswith(p.parent.parent.parent.name) for p in jpgs)
    meta = _lines(root / mimic.CSVS["metadata"])
    assert any(",LATERAL," in line for line in meta)
    assert sum(p.stat().st_size for p in jpgs) < 6_000_000


def test_reader_keeps_frontal_images_official_split_u_zeros(root):
    s = mimic.read_split(root)
    assert set(s) == {"train_val", "val", "test"} and all(len(v) > 20 for v in s.values())
    assert all(e.view in ("PA", "AP") for v in s.values() for e in v)
    patients = {k: {e.patient for e in v} for k, v in s.items()}
    assert not patients["train_val"] & patients["test"] and not patients["val"] & patients["test"]
    # uncertain (-1.0) and empty are negatives: only the drawn findings and No Finding are ever positive
    labels = {lab for v in s.values() for e in v for lab in e.labels}
    assert labels == {*mimic.PATTERNS, "No Finding"}


def test_signal_follows_labels(root):
    entries = mimic.read_split(root)["train_val"]
    arr = nih.image_array([e.path for e in entries], 64).astype(float)
    card = np.array(["Cardiomegaly" in e.labels for e in entries])
    centre = arr[:, 30:48, 24:44].mean((1, 2))
    assert centre[card].mean() > centre[~card].mean() + 15


def test_missing_csv_and_folder(copy, tmp_path):
    (copy / mimic.CSVS["split"]).unlink()
    with pytest.raises(DataError, match="mimic-cxr-2.0.0-split.csv.gz not found.*--fixture"):
        mimic.read_split(copy)
    with pytest.raises(DataError, match="not found"):
        mimic.read_split(tmp_path / "nowhere")


def test_missing_frontal_image_is_named(copy):
    s = mimic.read_split(copy)
    victim = s["test"][2].path
    victim.unlink()
    with pytest.raises(DataError, match=f"metadata.csv.gz names 1 frontal image.*{victim.name}"):
        mimic.read_split(copy)


def test_label_value_and_split_outside_the_set(copy):
    p = copy / mimic.CSVS["chexpert"]
    lines = _lines(p)
    original = list(lines)
    cells = lines[3].split(",")
    cells[2] = "2.0"
    lines[3] = ",".join(cells)
    _write(p, lines)
    with pytest.raises(DataError, match="line 4.*Atelectasis is '2.0', not 1.0, 0.0, -1.0 or empty"):
        mimic.read_split(copy)
    _write(p, original)
    p = copy / mimic.CSVS["split"]
    lines = _lines(p)
    lines[1] = lines[1].rsplit(",", 1)[0] + ",val"
    _write(p, lines)
    with pytest.raises(DataError, match="split.csv.gz, line 2.*'val' is not train, validate or test"):
        mimic.read_split(copy)
