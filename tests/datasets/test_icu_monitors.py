"""The icu-monitors fixture is written in the canonical layout, the reader reads it, and bad CSVs are named."""

import csv

import numpy as np
import pytest

from medrun.datasets import get, icu_monitors
from medrun.errors import DataError


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    return get("icu-monitors").make_fixture(tmp_path_factory.mktemp("icu"), 0)


def test_layout_and_reader(root):
    assert sorted(p.name for p in root.iterdir()) == ["boxes.csv", "corners.csv", "ecg.csv", "images", "vitals.csv"]
    photos = icu_monitors.read(root)
    assert len(photos) == 40 and all(p.path.suffix == ".jpg" for p in photos)
    p = photos[0]
    assert len(p.corners) == 4 and len(p.boxes) >= 8 and len(p.ecg) == 120
    v = p.vitals
    assert v["MAP"] == round((v["SBP"] + 2 * v["DBP"]) / 3) and 50 <= v["HR"] <= 150 and 85 <= v["SpO2"] <= 100
    assert any(q.vitals["RR"] is None for q in photos)  # some monitors do not show RR: a blank cell
    texts = {t for t, _ in p.boxes}
    assert {"HR", "SpO2", "NIBP", str(v["HR"]), f"{v['SBP']}/{v['DBP']}", f"({v['MAP']})"} <= texts
    image = icu_monitors.load_rgb(p.path)
    assert image.shape == (360, 640, 3)
    q = np.asarray(p.corners)  # TL, TR, BR, BL inside the photo
    assert (q[:, 0] > 0).all() and (q[:, 0] < 640).all() and q[0, 0] < q[1, 0] and q[3, 1] > q[0, 1]


def test_screen_is_dark_inside_the_corners(root):
    import cv2

    p = icu_monitors.read(root)[3]
    image = icu_monitors.load_rgb(p.path).astype(float)
    inside = np.zeros(image.shape[:2], np.uint8)
    cv2.fillConvexPoly(inside, np.round(np.asarray(p.corners)).astype(np.int32), 1)
    assert image[inside == 1].mean() < image[inside == 0].mean() - 40


def test_missing_and_wrong_layouts(tmp_path, root):
    with pytest.raises(DataError, match="not found"):
        icu_monitors.read(tmp_path / "nowhere")
    (tmp_path / "x" / "icu-monitors" / "images").mkdir(parents=True)
    with pytest.raises(DataError, match="no images/ folder.*use .*icu-monitors"):
        icu_monitors.read(tmp_path / "x")
    with pytest.raises(DataError, match="corners.csv not found"):
        icu_monitors.read(tmp_path / "x" / "icu-monitors")


def _copy(root, tmp_path):
    import shutil

    dst = tmp_path / "copy"
    shutil.copytree(root, dst)
    return dst


def test_bad_rows_name_file_and_line(tmp_path, root):
    d = _copy(root, tmp_path)
    rows = list(csv.reader(open(d / "corners.csv")))
    rows[3][0] = "ghost.jpg"
    csv.writer(open(d / "corners.csv", "w", newline="")).writerows(rows)
    with pytest.raises(DataError, match=r"corners.csv:4: image 'ghost.jpg' is not in"):
        icu_monitors.read(d)
    rows[3][0] = rows[2][0]
    csv.writer(open(d / "corners.csv", "w", newline="")).writerows(rows)
    with pytest.raises(DataError, match="listed twice"):
        icu_monitors.read(d)
    rows[3] = rows[3][:0] + [rows[4][0], "abc"] + rows[4][2:]
    rows[4] = rows[4]
    csv.writer(open(d / "corners.csv", "w", newline="")).writerows(rows[:4] + rows[5:])
    with pytest.raises(DataError, match="column x1 is 'abc', not a number"):
        icu_monitors.read(d)


def test_vitals_must_be_integers_and_known_images(tmp_path, root):
    d = _copy(root, tmp_path)
    rows = list(csv.reader(open(d / "vitals.csv")))
    rows[1][1] = "72.5"
    csv.writer(open(d / "vitals.csv", "w", newline="")).writerows(rows)
    with pytest.raises(DataError, match="vitals.csv:2: HR is 72.5, not an integer"):
        icu_monitors.read(d)
    (d / "vitals.csv").unlink()
    assert icu_monitors.read(d)[0].vitals == {}
    with pytest.raises(DataError, match="vitals.csv not found"):
        icu_monitors.read(d, need_vitals=True)


def test_undecodable_photo_is_named(tmp_path):
    bad = tmp_path / "m.jpg"
    bad.write_bytes(b"not a jpeg")
    with pytest.raises(DataError, match="cannot decode image .*m.jpg"):
        icu_monitors.load_rgb(bad)
