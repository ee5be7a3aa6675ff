"""NIH ChestX-ray14: the fixture is the Kaggle layout (header quirk included), the reader reads it and names what is
wrong, pixels come out as the reference code makes them, and the authors' released .npy names are parsed robustly."""

import numpy as np
import pytest
from PIL import Image

from medrun.datasets import get, nih
from medrun.errors import DataError


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    return get("nih").make_fixture(tmp_path_factory.mktemp("nih") / "nih", 0)


def test_fixture_is_the_kaggle_layout(root):
    assert (root / "Data_Entry_2017.csv").read_text().splitlines()[0] == nih.CSV_HEADER
    pngs = sorted((root / "images_001" / "images").glob("*.png"))
    assert len(pngs) == 400 and pngs[0].name == "00000001_000.png"
    with Image.open(pngs[0]) as im:
        assert im.mode == "L" and im.size == (128, 128)
    train_val = (root / "train_val_list.txt").read_text().split()
    test = (root / "test_list.txt").read_text().split()
    assert len(train_val) + len(test) == 400 and not set(train_val) & set(test)
    assert sum(p.stat().st_size for p in pngs) < 5_000_000


def test_reader_reads_the_fixture(root):
    entries = nih.read_entries(root)
    assert len(entries) == 400
    labels = {lab for e in entries for lab in e.labels}
    assert labels <= {*nih.PATTERNS, "Hernia"} and set(nih.PATTERNS) <= labels
    assert sum(not e.labels for e in entries) > 0  # No Finding rows are read, with no labels
    assert all(e.path.is_file() and e.patient for e in entries)
    y = nih.multi_hot(entries, nih.FINDINGS)
    assert y.shape == (400, 14) and y.sum(1).max() <= 4
    # the official lists are patient-disjoint
    tv, te = nih.read_list(root, "train_val", entries), nih.read_list(root, "test", entries)
    assert not {e.patient for e in tv} & {e.patient for e in te}


def test_fixture_signal_follows_labels(root):
    """The drawn patterns make labels visible: Cardiomegaly images are brighter in the centre, Pneumothorax darker
    at the upper left."""
    entries = nih.read_entries(root)
    arr = nih.image_array([e.path for e in entries], 64).astype(float)
    card = np.array(["Cardiomegaly" in e.labels for e in entries])
    pneu = np.array(["Pneumothorax" in e.labels for e in entries])
    centre, corner = arr[:, 30:48, 24:44].mean((1, 2)), arr[:, 8:24, 8:24].mean((1, 2))
    assert centre[card].mean() > centre[~card].mean() + 15
    assert corner[pneu].mean() < corner[~pneu].mean() - 10


def test_missing_folder_and_one_level_above(tmp_path, root):
    with pytest.raises(DataError, match="not found.*--fixture"):
        nih.read_entries(tmp_path / "nowhere")
    with pytest.raises(DataError, match="one level above.*use"):
        nih.read_entries(root.parent)
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no Data_Entry_2017"):
        nih.read_entries(tmp_path / "empty")


def test_bad_csv_rows(tmp_path):
    r = nih.fixture(tmp_path / "d", 1, n=12, size=64)
    csv = r / "Data_Entry_2017.csv"
    text = csv.read_text()
    csv.write_text(text.replace("Image Index,", "Image,", 1))
    with pytest.raises(DataError, match="lacks column.*Image Index"):
        nih.read_entries(r)
    lines = text.splitlines()
    lines[3] = lines[3].replace(lines[3].split(",")[1], "Effusion|Flu", 1)
    csv.write_text("\n".join(lines) + "\n")
    with pytest.raises(DataError, match=r"line 4 .*'Flu'"):
        nih.read_entries(r)
    lines = text.splitlines()
    lines[2] = lines[2].replace(lines[2].split(",")[1], "No Finding|Mass", 1)
    csv.write_text("\n".join(lines) + "\n")
    with pytest.raises(DataError, match="No Finding' together"):
        nih.read_entries(r)
    csv.write_text(text)
    gone = sorted((r / "images_001" / "images").iterdir())[2]
    gone.unlink()
    with pytest.raises(DataError, match=f"1 image.*{gone.name}"):
        nih.read_entries(r)


def test_pixels_follow_the_reference_code(tmp_path):
    rgb = np.zeros((40, 40, 3), np.uint8)
    rgb[..., 0], rgb[..., 1], rgb[..., 2] = 30, 60, 90
    Image.fromarray(rgb).save(tmp_path / "rgb.png")
    Image.fromarray(np.dstack([rgb, np.full((40, 40), 7, np.uint8)])).save(tmp_path / "rgba.png")
    Image.fromarray(np.full((40, 40), 65535 // 2, np.uint16)).save(tmp_path / "deep.png")
    np.save(tmp_path / "f.npy", np.full((40, 40), 0.5, np.float32))
    assert (nih.load_gray(tmp_path / "rgb.png", 40) == 60).all()  # channel mean
    assert (nih.load_gray(tmp_path / "rgba.png", 40) == 60).all()  # alpha dropped
    assert abs(int(nih.load_gray(tmp_path / "deep.png", 40)[0, 0]) - 127) <= 1  # 16 → 8 bits
    assert nih.load_gray(tmp_path / "f.npy", 20).shape == (20, 20)
    assert nih.load_gray(tmp_path / "f.npy", 40)[0, 0] == 128
    assert nih.channels(tmp_path / "rgb.png") == 3 and nih.channels(tmp_path / "rgba.png") == 3
    assert nih.channels(tmp_path / "deep.png") == 1 and nih.channels(tmp_path / "f.npy") == 1
    cache = tmp_path / "cache" / "a.npy"
    a = nih.image_array([tmp_path / "rgb.png", tmp_path / "f.npy"], 32, cache)
    b = nih.image_array([tmp_path / "rgb.png", tmp_path / "f.npy"], 32, cache)
    assert cache.is_file() and isinstance(b, np.memmap) and (np.asarray(a) == np.asarray(b)).all()


def test_released_npy_names_keep_pleural_thickening(tmp_path):
    assert nih.npy_labels("00000013_005_Emphysema|Pleural_Thickening|Pneumothorax") == (
        "Emphysema", "Pleural_Thickening", "Pneumothorax")
    assert nih.npy_labels("00000001_000_Cardiomegaly|Effusion_x") == ("Cardiomegaly", "Effusion")
    assert nih.npy_labels("00000002_000_No Finding") == ()
    with pytest.raises(DataError, match="not an NIH finding"):
        nih.npy_labels("00000001_000_Cardio")
    with pytest.raises(DataError, match="no labels"):
        nih.npy_labels("00000001_000")
    for part in nih.NPY_PARTS:
        (tmp_path / part).mkdir()
        np.save(tmp_path / part / f"00000001_00{len(part)}_Mass|Pleural_Thickening.npy", np.zeros((8, 8), np.uint8))
    items = nih.read_npy_part(tmp_path, "gallery")
    assert [i.labels for i in items] == [("Mass", "Pleural_Thickening")]
    with pytest.raises(DataError, match="no val/ folder"):
        nih.read_npy_part(tmp_path, "val")
