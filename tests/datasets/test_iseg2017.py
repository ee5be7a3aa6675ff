"""iSEG-2017 and MRBrainS13: the fixtures are written in the public layouts, the readers read them, and bad volumes
(header vs data, label values, grids) are refused naming the file."""

import nibabel as nib
import numpy as np
import pytest

from medrun.datasets import get, iseg2017, mrbrains13
from medrun.errors import DataError


@pytest.fixture(scope="module")
def iseg(tmp_path_factory):
    return get("iseg2017").make_fixture(tmp_path_factory.mktemp("iseg"), 0)


@pytest.fixture(scope="module")
def mrb(tmp_path_factory):
    return get("mrbrains13").make_fixture(tmp_path_factory.mktemp("mrb"), 0)


def test_iseg_layout_names_and_formats(iseg):
    train = iseg / "iSeg-2017-Training"
    names = sorted(p.name for p in train.iterdir())
    assert names == sorted(f"subject-{n}-{k}.{e}" for n in range(1, 5) for k in ("T1", "T2", "label")
                           for e in ("hdr", "img"))
    assert sorted(p.name for p in (iseg / "iSeg-2017-Testing").iterdir()) == [
        "subject-5-T1.hdr", "subject-5-T1.img", "subject-5-T2.hdr", "subject-5-T2.img"]
    img = nib.load(str(train / "subject-1-T1.hdr"))
    assert isinstance(img, nib.AnalyzeImage) and img.shape == (40, 40, 40, 1) and img.get_data_dtype() == np.int16
    lab = np.asarray(nib.load(str(train / "subject-1-label.hdr")).dataobj)
    assert set(np.unique(lab).tolist()) == {0, 10, 150, 250}
    assert sum(p.stat().st_size for p in iseg.rglob("*")) < 3_000_000


def test_reader_maps_labels_crops_and_normalises(iseg):
    subs = iseg2017.read(iseg)
    assert [s.id for s in subs] == [f"subject-{n}" for n in range(1, 5)]
    assert iseg2017.read(iseg / "iSeg-2017-Training")[0].id == "subject-1"  # the training folder itself works too
    assert [s.id for s in iseg2017.read_test(iseg)] == ["subject-5"] and iseg2017.read_test(iseg)[0].label is None
    image, label, _ = iseg2017.load_subject(subs[0])
    assert image.shape == (2, 40, 40, 40) and label.dtype == np.uint8 and set(np.unique(label)) == {0, 1, 2, 3}
    assert ((image[0] != 0) == (label > 0)).all()  # zero background, as the crop needs
    box = iseg2017.crop_box(image[0] != 0, 16)
    assert all(s.stop - s.start >= 16 for s in box) and all(s.stop - s.start < 40 for s in box)
    z = iseg2017.zscore(image[(slice(None), *box)])
    nz = z[0] != 0
    assert abs(z[0][nz].mean()) < 1e-4 and abs(z[0][nz].std() - 1) < 1e-3


def test_crop_box_grows_to_the_patch_inside_the_volume():
    mask = np.zeros((20, 20, 20), bool)
    mask[0:3, 10:12, 17:20] = True
    box = iseg2017.crop_box(mask, 8)
    assert [(s.start, s.stop) for s in box] == [(0, 8), (7, 15), (12, 20)]


def test_the_fixture_contrasts_split_the_tissues_between_modalities(iseg):
    image, label, _ = iseg2017.load_subject(iseg2017.read(iseg)[0])
    t1 = [image[0][label == c].mean() for c in (1, 2, 3)]
    t2 = [image[1][label == c].mean() for c in (1, 2, 3)]
    assert t1[2] - t1[1] > 2 * (t1[1] - t1[0])  # T1: GM/WM far apart, CSF/GM close
    assert t2[0] - t2[1] > 4 * (t2[1] - t2[2])  # T2: CSF far from GM, GM/WM close


def _copy(src, dst):
    import shutil

    shutil.copytree(src, dst)
    return dst


def test_header_dimensions_that_disagree_with_the_data(iseg, tmp_path):
    root = _copy(iseg, tmp_path / "iSEG2017")
    img = root / "iSeg-2017-Training" / "subject-2-T2.img"
    img.write_bytes(img.read_bytes() + b"\0" * 64)
    with pytest.raises(DataError, match=r"subject-2-T2\.hdr: its header says 40×40×40×1 .* holds 128064 bytes"):
        iseg2017.load_subject(iseg2017.read(root)[1])


def test_label_values_outside_the_layout(iseg, tmp_path):
    root = _copy(iseg, tmp_path / "iSEG2017")
    lab = root / "iSeg-2017-Training" / "subject-3-label.hdr"
    img = nib.load(str(lab))
    arr = np.asarray(img.dataobj).copy()
    arr[5, 5, 5] = 1
    nib.save(nib.AnalyzeImage(arr, img.affine, header=img.header), str(lab))
    with pytest.raises(DataError, match=r"subject-3-label\.hdr has values outside 0/10/150/250: 1"):
        iseg2017.load_subject(iseg2017.read(root)[2])


def test_other_spacing_is_refused_naming_the_file(iseg, tmp_path):
    root = _copy(iseg, tmp_path / "iSEG2017")
    t2 = root / "iSeg-2017-Training" / "subject-1-T2.hdr"
    img = nib.load(str(t2))
    img.header.set_zooms((1.25, 1.25, 1.25, 1.0))
    nib.save(nib.AnalyzeImage(np.array(img.dataobj), None, header=img.header), str(t2))
    with pytest.raises(DataError, match=r"subject-1-T2\.hdr has voxel size \(1\.25, 1\.25, 1\.25\).*refusing to "
                                        r"resample.*resample subject-1-T2\.hdr onto subject-1-T1\.hdr"):
        iseg2017.load_subject(iseg2017.read(root)[0])


def test_missing_file_and_wrong_folder(iseg, tmp_path):
    root = _copy(iseg, tmp_path / "iSEG2017")
    (root / "iSeg-2017-Training" / "subject-4-label.img").unlink()
    with pytest.raises(DataError, match=r"subject-4 is incomplete: .*subject-4-label\.img is missing"):
        iseg2017.read(root)
    with pytest.raises(DataError, match="one level above.*use .*iSEG2017 instead"):
        iseg2017.read(tmp_path)
    with pytest.raises(DataError, match="not found"):
        iseg2017.read(tmp_path / "nope")


def test_mrbrains13_layout_reader_and_orientation_check(mrb, tmp_path):
    d = mrb / "TrainingData" / "1"
    assert sorted(p.name for p in d.iterdir()) == ["LabelsForTesting.nii", "LabelsForTraining.nii", "T1.nii",
                                                   "T1_IR.nii", "T2_FLAIR.nii"]
    subs = mrbrains13.read(mrb)
    assert [s.number for s in subs] == [1, 2, 3, 4, 5]
    image, label, ref = iseg2017.load_subject(subs[0], ("t1", "t2"), mrbrains13.LABEL_VALUES)
    assert image.shape == (2, 48, 48, 16) and set(np.unique(label)) == {0, 1, 2, 3}
    assert np.allclose(ref.header.get_zooms(), mrbrains13.SPACING)
    root = _copy(mrb, tmp_path / "MRBrainS13")
    flair = root / "TrainingData" / "2" / "T2_FLAIR.nii"
    img = nib.load(str(flair))
    nib.save(nib.Nifti1Image(np.array(img.dataobj), np.diag([-0.958, 0.958, 3.0, 1.0])), str(flair))
    with pytest.raises(DataError, match=r"T2_FLAIR\.nii has orientation LAS but T1\.nii has RAS; refusing"):
        iseg2017.load_subject(mrbrains13.read(root)[1], ("t1", "t2"), mrbrains13.LABEL_VALUES)
