"""The NCNP ECoG image layout: the fixture is the card's layout, and the readers reject malformed inputs."""

import csv

import numpy as np
import pytest
from PIL import Image

from medrun.datasets import get, ncnp_ecog
from medrun.errors import DataError


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    return get("ncnp-ecog").make_fixture(tmp_path_factory.mktemp("ncnp"), 0)


def test_fixture_layout_counts_and_ratios(root):
    data = ncnp_ecog.read(root)
    for task, pos in (("hfo", 87), ("ied", 114)):  # ≈29 % HFO, ≈38 % IED as the paper's data
        samples = data[task]
        assert len(samples) == 300 and sum(s.label for s in samples) == pos
        assert sorted({s.patient for s in samples}) == ["pt01", "pt02", "pt03", "pt04", "pt05"]
        assert all(s.path.parent.name == ncnp_ecog.CLASSES[task][s.label] for s in samples)
    with Image.open(data["hfo"][0].path) as im:
        assert im.size == (227, 227) and im.mode == "RGB"
    rows = list(csv.DictReader(open(root / "labels.csv")))
    assert len(rows) == 600 and set(rows[0]) == {"task", "patient", "file", "label"}
    size = sum(p.stat().st_size for p in root.rglob("*") if p.is_file())
    assert size < 10 * 2**20  # the lost version's fixture was ~20 MB


def test_load_images_resizes_to_28(root):
    samples = ncnp_ecog.read(root)["hfo"][:3]
    x = ncnp_ecog.load_images(samples, 28)
    assert x.shape == (3, 3, 28, 28) and x.dtype == np.float32 and 0 <= x.min() and x.max() <= 1


def test_labels_csv_overrides_folder_label(root, tmp_path):
    import shutil

    copy = tmp_path / "d"
    shutil.copytree(root, copy)
    rows = list(csv.DictReader(open(copy / "labels.csv")))
    first = rows[0]
    flipped = ncnp_ecog.CLASSES[first["task"]][1 - ncnp_ecog.CLASSES[first["task"]].index(first["label"])]
    rows[0] = {**first, "label": flipped}
    with open(copy / "labels.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(first))
        w.writeheader()
        w.writerows(rows)
    s = next(s for s in ncnp_ecog.read(copy)[first["task"]] if s.rel(copy) == first["file"])
    assert ncnp_ecog.CLASSES[first["task"]][s.label] == flipped

    (copy / "labels.csv").write_text("task,patient,file\nhfo,pt01,x.png\n")
    with pytest.raises(DataError, match="lacks column"):
        ncnp_ecog.read(copy)
    (copy / "labels.csv").write_text("task,patient,file,label\nhfo,pt01,HFO/missing.png,HFO\n")
    with pytest.raises(DataError, match=r"labels.csv:2: file 'HFO/missing.png' of patient 'pt01'"):
        ncnp_ecog.read(copy)
    (copy / "labels.csv").write_text(f"task,patient,file,label\nhfo,pt01,{rows[1]['file']},maybe\n")
    with pytest.raises(DataError, match="label 'maybe'"):
        ncnp_ecog.read(copy)


def test_wrong_size_image_is_named(root, tmp_path):
    import shutil

    copy = tmp_path / "d"
    shutil.copytree(root, copy)
    bad = sorted((copy / "ied" / "pt03" / "IED").iterdir())[2]
    Image.new("RGB", (100, 80)).save(bad)
    with pytest.raises(DataError) as e:
        ncnp_ecog.read(copy)
    assert str(bad) in str(e.value) and "100×80" in str(e.value) and "image_size=null" in str(e.value)
    assert len(ncnp_ecog.read(copy, image_size=None)["ied"]) == 300


def test_layout_errors(root, tmp_path):
    with pytest.raises(DataError, match="not found"):
        ncnp_ecog.check_layout(tmp_path / "nowhere")
    with pytest.raises(DataError, match=f"use {root}"):
        ncnp_ecog.check_layout(root.parent)
    (tmp_path / "x" / "hfo" / "pt01" / "HFOs").mkdir(parents=True)
    (tmp_path / "x" / "ied" / "pt01" / "IED").mkdir(parents=True)
    with pytest.raises(DataError, match="HFOs is not a class folder of hfo"):
        ncnp_ecog.read(tmp_path / "x")


def test_fold_file(tmp_path):
    f = tmp_path / "folds.csv"
    f.write_text("patient,fold\npt01,0\npt02,0\npt03,1\n")
    assert ncnp_ecog.read_folds(f, ["pt01", "pt02", "pt03"]) == {"pt01": 0, "pt02": 0, "pt03": 1}
    f.write_text("patient,fold\npt01,0\npt02,1\npt01,1\n")
    with pytest.raises(DataError, match=r"patient pt01 is in two folds \(0 and 1\)"):
        ncnp_ecog.read_folds(f, ["pt01", "pt02"])
    f.write_text("patient,fold\npt01,0\n")
    with pytest.raises(DataError, match="patient pt02 is not in"):
        ncnp_ecog.read_folds(f, ["pt01", "pt02"])
    f.write_text("patient,group\npt01,0\n")
    with pytest.raises(DataError, match="needs columns patient,fold"):
        ncnp_ecog.read_folds(f, ["pt01"])
