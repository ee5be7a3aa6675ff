"""datasets/imageio.py on the files clinics export: 16-bit PNG, float TIFF, NIfTI with a real affine, a DICOM series
written with pydicom (slices numbered out of order, rescale slope/intercept), NRRD; explicit intensity handling
that never clips silently; predictions written back in the input's geometry."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from PIL import Image

from medrun.datasets import imageio
from medrun.datasets.images import DataWarning
from medrun.errors import DataError


def dicom_series(folder, values, positions, numbers, slope=2.0, intercept=-1024.0):
    """One CT series: slice i holds ``values[i]`` (stored), lies at z = positions[i], numbered numbers[i]."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

    folder.mkdir(parents=True)
    series = generate_uid()
    for i, (v, z, n) in enumerate(zip(values, positions, numbers, strict=True)):
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID = CTImageStorage, generate_uid()
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds = Dataset()
        ds.file_meta, ds.SOPClassUID, ds.SOPInstanceUID = meta, CTImageStorage, meta.MediaStorageSOPInstanceUID
        ds.SeriesInstanceUID = ds.StudyInstanceUID = series
        ds.Modality, ds.InstanceNumber = "CT", n
        ds.ImagePositionPatient, ds.ImageOrientationPatient = [-5.0, -6.0, z], [1, 0, 0, 0, 1, 0]
        ds.PixelSpacing, ds.SliceThickness = [0.7, 0.6], 2.5
        ds.Rows, ds.Columns, ds.SamplesPerPixel, ds.PhotometricInterpretation = 4, 5, 1, "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
        ds.RescaleSlope, ds.RescaleIntercept = slope, intercept
        ds.PixelData = np.full((4, 5), v, np.uint16).tobytes()
        ds.save_as(folder / f"slice{i}.dcm", enforce_file_format=True)
    return folder


def test_16_bit_png_keeps_its_values_and_is_scaled_by_its_range(tmp_path):
    a = (np.arange(30 * 20).reshape(30, 20) * 100).astype(np.uint16)  # up to 59,900: far above 255
    Image.fromarray(a).save(tmp_path / "a.png")
    img = imageio.read(tmp_path / "a.png")
    assert img.array.shape == (30, 20) and img.stored == "uint16" and not img.volume
    assert np.array_equal(img.array, a.astype(np.float32))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the default handling clips nothing, so it says nothing
        unit = imageio.to_unit(img)
    np.testing.assert_allclose(unit, a / 65535.0, atol=1e-6)
    assert len(np.unique(unit)) == len(np.unique(a))  # nothing collapsed to white


def test_float_tiff_and_rgb_jpeg(tmp_path):
    import tifffile

    f = np.linspace(-3.0, 5.0, 12 * 9, dtype=np.float32).reshape(12, 9)
    tifffile.imwrite(tmp_path / "f.tif", f)
    img = imageio.read(tmp_path / "f.tif")
    assert img.stored == "float32" and np.array_equal(img.array, f)
    unit = imageio.to_unit(img)  # min-max of the image itself
    assert unit.min() == 0.0 and unit.max() == 1.0
    Image.fromarray(np.zeros((10, 7, 3), np.uint8)).save(tmp_path / "c.jpg")
    assert imageio.read(tmp_path / "c.jpg").array.shape == (10, 7, 3)


def test_a_window_that_clips_says_which_file_and_how_much(tmp_path):
    a = np.zeros((10, 10), np.uint16)
    a[:, :3] = 3000  # 30 % of the pixels above the window
    Image.fromarray(a).save(tmp_path / "ct.png")
    img = imageio.read(tmp_path / "ct.png")
    with pytest.warns(DataWarning, match=r"ct.png: 30.0% of its values lie outside window"):
        unit = imageio.to_unit(img, imageio.Intensity(window=(0, 1000)))
    assert unit.max() == 1.0
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        imageio.to_unit(img, imageio.Intensity(percentile=(1, 99)))  # clipping asked for: no warning
    np.testing.assert_allclose(imageio.to_unit(img, imageio.Intensity(scale=1 / 6000)).max(), 0.5)


def test_intensity_section_is_checked():
    with pytest.raises(ValueError, match="one of window, percentile, scale"):
        imageio.Intensity(window=(0, 1), scale=2)
    with pytest.raises(ValueError, match="lo < hi"):
        imageio.Intensity(window=(5, 1))
    with pytest.raises(ValueError):
        imageio.Intensity(level=3)


def test_nifti_keeps_its_affine_and_a_prediction_goes_back_in_it(tmp_path):
    import nibabel as nib

    affine = np.array([[0, -0.9, 0, 10], [0.8, 0, 0, -20], [0, 0, 2.5, 5], [0, 0, 0, 1]], float)
    vol = np.random.default_rng(0).normal(40, 300, (8, 9, 5)).astype(np.int16)
    nib.save(nib.Nifti1Image(vol, affine), tmp_path / "v.nii.gz")
    img = imageio.read(tmp_path / "v.nii.gz")
    assert img.volume and img.stored == "int16" and np.array_equal(img.array, vol)
    np.testing.assert_allclose(img.affine, affine)
    np.testing.assert_allclose(img.spacing, (0.8, 0.9, 2.5))
    out = imageio.write_like((vol > 0).astype(np.uint8), img, tmp_path / "pred" / "v.nii.gz")
    back = nib.load(out)
    assert out.name == "v.nii.gz" and back.shape == vol.shape and back.get_data_dtype() == np.uint8
    np.testing.assert_allclose(back.affine, affine)
    assert np.array_equal(np.asarray(back.dataobj), vol > 0)


def test_dicom_series_is_sorted_by_position_and_rescaled(tmp_path):
    # numbered 2, 3, 1 while lying at z = 10, 12.5, 15: InstanceNumber order is not position order
    folder = dicom_series(tmp_path / "ct", values=[100, 200, 300], positions=[10.0, 12.5, 15.0], numbers=[2, 3, 1])
    img = imageio.read(folder)
    assert img.volume and img.array.shape == (5, 4, 3)
    world_z = [(img.affine @ [0, 0, k, 1])[2] for k in range(3)]
    hu = [float(img.array[0, 0, k]) for k in range(3)]
    by_z = dict(zip(world_z, hu, strict=True))
    assert by_z == pytest.approx({10.0: 2 * 100 - 1024, 12.5: 2 * 200 - 1024, 15.0: 2 * 300 - 1024})
    np.testing.assert_allclose(sorted(img.spacing), [0.6, 0.7, 2.5])
    assert imageio.readable(folder) and imageio.is_dicom_series(folder)
    single = imageio.read(folder / "slice0.dcm")
    assert single.array.reshape(-1)[0] == 2 * 100 - 1024


def test_single_dicom_slice_reads_in_row_column_order_like_a_png(tmp_path):
    px = np.zeros((30, 50), np.uint16)
    px[:5] = 1000  # the top rows are bright, as a viewer shows them
    img = imageio.read(imageio.write_dicom_slice(tmp_path / "a.dcm", px, slope=2.0, intercept=-10.0))
    assert img.array.shape == (30, 50) and img.volume
    assert np.array_equal(img.array, px * 2.0 - 10.0)
    step_down, step_right = img.affine[:3, 0], img.affine[:3, 1]  # one row down, one column right
    np.testing.assert_allclose(np.abs(step_down), [0, 0.8, 0], atol=1e-6)  # along y, by the row spacing
    np.testing.assert_allclose(np.abs(step_right), [0.5, 0, 0], atol=1e-6)  # along x, by the column spacing


def test_nrrd_through_simpleitk(tmp_path):
    import SimpleITK as sitk

    arr = np.arange(4 * 5 * 6, dtype=np.int16).reshape(6, 5, 4)  # z, y, x
    img = sitk.GetImageFromArray(arr)
    img.SetSpacing((0.5, 0.6, 2.0))
    img.SetOrigin((1.0, 2.0, 3.0))
    sitk.WriteImage(img, str(tmp_path / "v.nrrd"))
    got = imageio.read(tmp_path / "v.nrrd")
    assert got.array.shape == (4, 5, 6) and got.array[1, 2, 3] == arr[3, 2, 1]
    np.testing.assert_allclose(got.spacing, (0.5, 0.6, 2.0))
    np.testing.assert_allclose(got.affine[:3, 3], (-1.0, -2.0, 3.0))  # LPS origin in RAS


def test_png_prediction_at_the_input_size(tmp_path):
    Image.fromarray(np.zeros((233, 197), np.uint8)).save(tmp_path / "x.png")
    img = imageio.read(tmp_path / "x.png")
    out = imageio.write_like(np.full((233, 197), 255, np.uint8), img, tmp_path / "out" / "x")
    with Image.open(out) as im:
        assert im.size == (197, 233)
    with pytest.raises(ValueError, match="not the input's"):
        imageio.write_like(np.zeros((208, 240), np.uint8), img, tmp_path / "out" / "y")


def test_unreadable_and_unknown_files_are_data_errors(tmp_path):
    (tmp_path / "bad.png").write_bytes(b"not a png")
    with pytest.raises(DataError, match="bad.png"):
        imageio.read(tmp_path / "bad.png")
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(DataError, match="not an image medrun reads"):
        imageio.read(tmp_path / "notes.txt")
