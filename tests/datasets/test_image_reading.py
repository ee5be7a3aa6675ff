"""Reading images safely (issue 14, item 8): high-bit-depth images are rescaled by their own bit depth instead of
being clipped at 255, and an empty class folder is named in a warning."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
from PIL import Image

from medrun.datasets import alzheimer, busi, chestxray, ncnp_ecog, pairs
from medrun.datasets.images import DataWarning, read_rgb, to_8bit
from medrun.errors import DataError

RAMP = np.linspace(0, 65535, 128 * 128).round().astype(np.uint16).reshape(128, 128)  # spans 0–65535


def _png16(path):
    Image.fromarray(RAMP).save(path)
    with Image.open(path) as im:
        assert im.mode.startswith("I;16")  # what Pillow gives for a 16-bit PNG
    return path


def test_16_bit_png_is_rescaled_not_saturated(tmp_path):
    path = _png16(tmp_path / "ramp16.png")
    with Image.open(path) as im:
        assert (np.asarray(im.convert("L")) == 255).mean() > 0.8  # the bug: PIL clips everything above 255
    rgb = read_rgb(path, 128)
    assert (rgb == 255).mean() < 0.01
    assert abs(int(rgb[..., 0].max()) - 255) <= 1 and int(rgb[..., 0].min()) == 0
    expected = np.rint(RAMP / 257.0)
    assert np.abs(rgb[..., 0].astype(float) - expected).max() <= 2  # only the bilinear resize's rounding


def test_pairs_reads_a_16_bit_image_and_keeps_its_16_bit_mask_binary(tmp_path):
    root = tmp_path / "ndt"
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    _png16(root / "images" / "a.png")
    mask = np.zeros((128, 128), np.uint16)
    mask[40:80, 40:80] = 1  # a 0/1 mask stored as 16 bits: scaling it would erase it
    Image.fromarray(mask).save(root / "masks" / "a.png")
    image, m = pairs.load(pairs.read(root)[0])
    assert (image >= 1.0).mean() < 0.01 and image.max() == pytest.approx(1.0)
    assert m.sum() == 1600


@pytest.mark.parametrize("mode", ["I", "F"])
def test_wide_int_and_float_images_are_min_max_scaled(tmp_path, mode):
    arr = np.linspace(-5e5, 5e5, 64 * 64).reshape(64, 64)
    im = Image.fromarray(arr.astype(np.int32 if mode == "I" else np.float32))
    assert im.mode == mode
    out = np.asarray(to_8bit(im))
    assert out.min() == 0 and out.max() == 255 and (out == 255).mean() < 0.01
    assert np.all(np.diff(out.ravel().astype(int)) >= 0)  # order kept


def test_float_image_with_nan_is_refused_naming_file_and_mode(tmp_path):
    arr = np.ones((8, 8), np.float32)
    arr[2, 2] = np.nan
    path = tmp_path / "nan.tif"
    Image.fromarray(arr).save(path)
    with pytest.raises(DataError, match=rf"{path}.*mode F"):
        read_rgb(path, 8)


def test_8_bit_images_are_untouched():
    im = Image.fromarray(np.arange(256, dtype=np.uint8).reshape(16, 16))
    assert to_8bit(im) is im


# -- empty class folders -----------------------------------------------------------------------------------------
def _empty(folder):
    for p in folder.iterdir():
        p.unlink()


def test_empty_class_folder_warns_alzheimer(fixture_copy):
    root = fixture_copy("adni")
    _empty(root / "CI")
    with pytest.warns(DataWarning, match=rf"{root / 'CI'} holds no images"):
        samples, _ = alzheimer.read_adni(root)
    assert samples


def test_empty_class_folder_warns_chestxray(fixture_copy):
    root = fixture_copy("chestxray")
    _empty(root / "test" / "NORMAL")
    with pytest.warns(DataWarning, match=rf"{root / 'test' / 'NORMAL'}"):
        chestxray.read(root, "test")


def test_empty_class_folder_warns_busi(fixture_copy):
    root = fixture_copy("busi")
    _empty(root / "malignant")
    with pytest.warns(DataWarning, match=rf"{root / 'malignant'}"):
        busi.read(root)


def test_empty_class_folder_warns_ncnp_ecog(fixture_copy):
    root = fixture_copy("ncnp-ecog")
    (root / "labels.csv").unlink()
    folder = root / "hfo" / "pt01" / "HFO"
    _empty(folder)
    with pytest.warns(DataWarning, match=rf"{folder}"):
        ncnp_ecog.read(root)


def test_full_class_folders_do_not_warn(fixture_copy, recwarn):
    root = fixture_copy("adni")
    alzheimer.read_adni(root)
    assert not [w for w in recwarn if issubclass(w.category, DataWarning)]
    shutil.rmtree(root)
