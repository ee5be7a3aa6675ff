"""The own-data classification layout: one folder per class, images in the formats clinics export."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from medrun.datasets import imagefolder
from medrun.datasets.imageio import Intensity
from medrun.datasets.images import DataWarning, read_rgb
from medrun.errors import DataError


def test_fixture_mixes_formats_and_reads_in_class_order(fixture_copy):
    root = fixture_copy("imagefolder")
    lines = []
    samples, classes = imagefolder.read(root, lines.append)
    assert classes == ["centre", "left", "right"] and len(samples) == 36
    assert {p.path.suffix for p in samples} == {".png", ".tif", ".dcm"}
    assert lines == ["imagefolder: skipped 1 file(s) that are not images (left/README.txt)"]
    window = Intensity(window=(0, 4095))  # 12-bit values in every format: one explicit scale for all
    assert {s.path.suffix for s in samples[:3]} == {".png", ".tif", ".dcm"}
    for s in samples[:3]:
        rgb = read_rgb(s.path, 32, window)
        assert rgb.shape == (32, 32, 3) and rgb.max() > 150 and rgb.min() < 80  # the blob on its background
    dark = read_rgb(samples[0].path, 32)  # a 16-bit PNG read by its container's range, 0–65535: 12-bit looks dark
    assert samples[0].path.suffix == ".png" and dark.max() < 20


def test_sixteen_bit_values_survive_to_the_network(tmp_path):
    a = np.tile(np.linspace(0, 65535, 64, dtype=np.uint16), (64, 1))
    Image.fromarray(a).save(tmp_path / "x.png")
    row = read_rgb(tmp_path / "x.png", 64)[0, :, 0].astype(int)
    assert row.min() == 0 and row.max() == 255 and len(np.unique(row)) > 60  # not clipped to white at 255


def test_layout_errors_and_empty_classes(tmp_path):
    with pytest.raises(DataError, match="not found"):
        imagefolder.read(tmp_path / "nowhere")
    (tmp_path / "only").mkdir()
    with pytest.raises(DataError, match="1 class folder"):
        imagefolder.read(tmp_path)
    (tmp_path / "other").mkdir()
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(tmp_path / "only" / "a.png")
    with pytest.warns(DataWarning, match="other holds no images"):
        samples, classes = imagefolder.read(tmp_path)
    assert classes == ["only", "other"] and len(samples) == 1


def test_classes_pick_folders_in_label_order_and_unknown_names_are_named(tmp_path):
    """``dataset.classes``: the folders to use, in label order (a binary classifier on two of three folders)."""
    from medrun.pipelines.cycleadvgan.config import Data

    for name in ("a", "b", "c"):
        (tmp_path / name).mkdir()
        Image.fromarray(np.zeros((8, 8), np.uint8)).save(tmp_path / name / "x.png")
    samples, classes = imagefolder.read(tmp_path, only=["c", "a"])
    assert classes == ["c", "a"] and [(s.path.parent.name, s.label) for s in samples] == [("c", 0), ("a", 1)]
    for bad in (["a", "tumour"], ["a", ".."]):
        with pytest.raises(DataError, match="no class folder") as e:
            imagefolder.check_layout(tmp_path, bad)
        assert "its class folders: a, b, c" in e.value.line()
    with pytest.raises(ValueError, match="names a folder twice"):
        Data(name="imagefolder", classes=["a", "a"])
