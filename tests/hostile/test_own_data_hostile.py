"""Own data as it really arrives (issue 21): a damaged DICOM among the pairs, a mask that does not fit its DICOM
image, a folder that mixes two DICOM series, NaN in a float TIFF. Each is one line naming the file and the fix,
exit 3, no traceback, and no run left looking complete."""

from __future__ import annotations

import numpy as np
import pytest

from medrun.datasets import imageio
from medrun.errors import DataError

SMALL = ("-o", "dataset.resize=[64, 64]", "-o", "dataset.crop=64", "-o", "train.epochs=1", "-o", "model.width_div=4",
         "-o", "train.lrp_images=0")


def _pairs(fixture_copy):
    return fixture_copy("pairs")


def _no_complete_run(runs):
    return not list(runs.glob("unet-lrp/*/MANIFEST.sha256"))


def test_damaged_dicom_among_the_pairs_is_named(cli, runs, fixture_copy):
    root = _pairs(fixture_copy)
    bad = root / "images" / "slice_0002.dcm"
    bad.write_bytes(bad.read_bytes()[:300])  # a copy cut short
    r = cli("train", "unet-lrp", "--dataset", "pairs", "--data-dir", root, "--runs-dir", runs, *SMALL)
    assert r.code == 3 and "slice_0002.dcm" in r.err and "Traceback" not in r.err, r.err
    assert _no_complete_run(runs)


def test_mask_that_does_not_fit_its_dicom_image_is_named(cli, runs, fixture_copy):
    from PIL import Image

    root = _pairs(fixture_copy)
    Image.fromarray(np.zeros((50, 40), np.uint8)).save(root / "masks" / "slice_0002.png")
    r = cli("train", "unet-lrp", "--dataset", "pairs", "--data-dir", root, "--runs-dir", runs, *SMALL)
    assert r.code == 3 and "slice_0002.png" in r.err and "is 40×50 but its image is 96×96" in r.err, r.err
    assert "Traceback" not in r.err and _no_complete_run(runs)


def test_a_folder_with_two_dicom_series_is_refused(tmp_path):
    folder = tmp_path / "mixed"
    folder.mkdir()
    imageio.write_dicom_slice(folder / "a.dcm", np.zeros((8, 8)))
    imageio.write_dicom_slice(folder / "b.dcm", np.zeros((8, 8)))  # each call starts its own series
    with pytest.raises(DataError, match="holds more than one DICOM series") as e:
        imageio.read(folder)
    assert "a folder of its own" in e.value.line()


def test_nan_in_a_float_tiff_is_named(tmp_path):
    import tifffile

    f = tmp_path / "scan.tif"
    a = np.ones((6, 6), np.float32)
    a[2, 3] = np.nan
    tifffile.imwrite(f, a)
    with pytest.raises(DataError, match="scan.tif holds NaN or infinite values"):
        imageio.to_unit(imageio.read(f))
