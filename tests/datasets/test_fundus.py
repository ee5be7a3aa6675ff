"""MuReD, ODIR-5K and EyePACS (datasets/fundus.py): each fixture is its public layout (names, formats, CSV quirks),
the readers read it with the labels the card lists, the drawn patterns follow the labels, and bad input (missing
CSV, a row naming a missing image, a label or value outside the set) is one DataError naming the file."""

import shutil

import numpy as np
import pytest
from PIL import Image

from medrun.datasets import fundus, get, nih
from medrun.errors import DataError


@pytest.fixture(scope="module")
def roots(tmp_path_factory):
    base = tmp_path_factory.mktemp("fundus")
    return {name: get(name).make_fixture(base / name, 0) for name in ("mured", "odir", "eyepacs")}


@pytest.fixture
def copy(roots, tmp_path):
    def make(name):
        return shutil.copytree(roots[name], tmp_path / name)

    return make


def test_mured_layout_and_reader(roots):
    root = roots["mured"]
    header = (root / "train_data.csv").read_text().splitlines()[0].split(",")
    assert header == ["ID", *fundus.MURED_LABELS] and len(fundus.MURED_LABELS) == 20
    with Image.open(root / "images" / "1.png") as im:
        assert im.format == "PNG" and im.mode == "RGB"
    s = fundus.read_mured(root)
    assert len(s["train"]) == 240 and len(s["test"]) == 80
    labels = {lab for e in s["train"] for lab in e.labels}
    assert set(fundus.PATTERNS["mured"]) <= labels and "NORMAL" in labels
    assert all(("NORMAL" in e.labels) != bool(set(e.labels) & set(fundus.PATTERNS["mured"])) for e in s["train"])
    assert sum(p.stat().st_size for p in (root / "images").iterdir()) < 6_000_000


def test_odir_layout_and_reader(roots):
    root = roots["odir"]
    lines = (root / "full_df.csv").read_text().splitlines()
    assert lines[0] == fundus.ODIR_HEADER and "\"['" in lines[1] and "Training Images/" in lines[1]
    assert (root / "ODIR-5K" / "Training Images" / "0_left.jpg").is_file()
    entries = fundus.read_odir(root)
    assert len(entries) == 320 and {e.patient for e in entries} == {str(i) for i in range(160)}
    split = fundus.read_split("odir", root, 0)
    assert not {e.patient for e in split["train_val"]} & {e.patient for e in split["test"]}
    assert set(fundus.PATTERNS["odir"]) <= {lab for e in entries for lab in e.labels}


def test_eyepacs_layout_and_reader(roots):
    root = roots["eyepacs"]
    assert (root / "trainLabels.csv").read_text().startswith("image,level\n")
    jpegs = sorted((root / "train").glob("*.jpeg"))
    assert len(jpegs) == 240 and all(p.stem.endswith(("_left", "_right")) for p in jpegs)
    entries = fundus.read_eyepacs(root)
    assert len(entries) == 240 and all(len(e.labels) == 1 for e in entries)
    (root / "trainLabels.csv").rename(root / "x.csv")  # labels are optional (unused for SSL)
    try:
        assert all(not e.labels for e in fundus.read_eyepacs(root))
    finally:
        (root / "x.csv").rename(root / "trainLabels.csv")


def test_fundus_signal_follows_labels(roots):
    """ODIR: cataract draws a milky (brighter) haze over the retina, glaucoma a large bright disc; both visible in
    grey."""
    entries = fundus.read_odir(roots["odir"])
    arr = nih.image_array([e.path for e in entries], 64).astype(float)
    haze = np.array(["C" in e.labels for e in entries])
    cup = np.array(["G" in e.labels for e in entries])
    centre = arr[:, 20:44, 20:44].mean((1, 2))
    assert centre[haze].mean() > centre[~haze].mean() + 30
    assert (arr[cup] > 200).mean() > (arr[~cup & ~haze] > 200).mean() * 2


@pytest.mark.parametrize("name, csv", [("mured", "val_data.csv"), ("odir", "full_df.csv")])
def test_missing_csv(copy, name, csv):
    root = copy(name)
    (root / csv).unlink()
    with pytest.raises(DataError, match=f"{csv}.*--fixture"):
        fundus.read_split(name, root)


def test_missing_image_is_named(copy):
    root = copy("mured")
    (root / "images" / "7.png").unlink()
    with pytest.raises(DataError, match=r"train_data.csv names 1 image.*7\.png"):
        fundus.read_mured(root)
    root = copy("odir")
    (root / "ODIR-5K" / "Training Images" / "3_right.jpg").unlink()
    with pytest.raises(DataError, match=r"full_df.csv names 1 image.*3_right\.jpg"):
        fundus.read_odir(root)
    root = copy("eyepacs")
    victim = sorted((root / "train").iterdir())[5]
    victim.unlink()
    with pytest.raises(DataError, match=f"trainLabels.csv names 1 image.*{victim.name}"):
        fundus.read_eyepacs(root)


def test_values_outside_the_set(copy):
    root = copy("mured")
    p = root / "train_data.csv"
    lines = p.read_text().splitlines()
    lines[3] = lines[3][:-1] + "2"
    p.write_text("\n".join(lines) + "\n")
    with pytest.raises(DataError, match="line 4.*OTHER is '2', not 0 or 1"):
        fundus.read_mured(root)
    lines[0] = lines[0].replace("ARMD", "AMD")
    p.write_text("\n".join(lines) + "\n")
    with pytest.raises(DataError, match="AMD not among MuReD's 20 labels"):
        fundus.read_mured(root)
    root = copy("odir")
    p = root / "full_df.csv"
    p.write_text(p.read_text().replace("\"['", "\"['X", 1))
    with pytest.raises(DataError, match="line 2.*'X"):
        fundus.read_odir(root)
    root = copy("eyepacs")
    p = root / "trainLabels.csv"
    lines = p.read_text().splitlines()
    lines[2] = lines[2].rsplit(",", 1)[0] + ",5"
    p.write_text("\n".join(lines) + "\n")
    with pytest.raises(DataError, match="line 3.*level '5' is not a DR grade"):
        fundus.read_eyepacs(root)


def test_not_a_folder(tmp_path):
    for name in ("mured", "odir", "eyepacs"):
        with pytest.raises(DataError, match="not found"):
            fundus.read_split(name, tmp_path / "nowhere")
