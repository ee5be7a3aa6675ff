"""pulmonary_av dataset: the fixture's layout and signal, and the reader's refusals (label values outside the set,
grids that differ, missing folders and files)."""

import nibabel as nib
import numpy as np
import pytest

from medrun.datasets import pulmonary_av as D
from medrun.errors import DataError


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    return D.fixture(tmp_path_factory.mktemp("pav"), 0)


def test_fixture_layout_and_signal(root):
    cases = D.read(root)
    assert [c.id for c in cases] == [f"pav_{i:03d}" for i in range(1, 7)] + ["pav_gap"]
    img = nib.load(str(cases[0].image))
    assert img.shape == (64, 64, 40) and img.get_data_dtype() == np.int16
    assert np.allclose(img.header.get_zooms(), (1, 1, 1.25))
    v = D.load(cases[0], 1024)
    assert set(np.unique(v.label).tolist()) == {0, 1, 2}
    pa, pv, lung = v.hu[v.label == 1], v.hu[v.label == 2], v.hu[v.lung & (v.label == 0)]
    assert pa.mean() - pv.mean() > 40 and abs(lung.mean() + 850) < 10
    assert ((v.label > 0) & ~v.lung).any() and ((v.label > 0) & v.lung).any()  # extra- and intrapulmonary parts
    gap = D.load(cases[-1], 1024)
    faint = (gap.label == 1) & (gap.hu < -100)
    assert 20 < faint.sum() < 200  # the 4-voxel stretch of the PA trunk


def test_label_values_outside_the_set_are_refused(root, tmp_path):
    c = D.read(root)[0]
    img = nib.load(str(c.label))
    arr = np.asarray(img.dataobj).copy()
    arr[arr == 2] = 7
    bad = tmp_path / "lab.nii.gz"
    nib.save(nib.Nifti1Image(arr, img.affine), str(bad))
    with pytest.raises(DataError, match=r"lab.nii.gz holds values outside 0/1/2: 7"):
        D.load(D.Case(c.id, c.image, bad, c.lung), 1024)
    v = D.load(D.Case(c.id, c.image, bad, c.lung), 1024, {"1": 1, "7": 2})
    assert set(np.unique(v.label).tolist()) == {0, 1, 2}


@pytest.mark.parametrize("what,fix", [("spacing", "voxel size"), ("orientation", "orientation"), ("shape", "shape")])
def test_grids_that_differ_are_refused(root, tmp_path, what, fix):
    c = D.read(root)[0]
    img = nib.load(str(c.lung))
    arr, aff = np.asarray(img.dataobj), img.affine.copy()
    if what == "spacing":
        aff[2, 2] = 2.5
    elif what == "orientation":
        aff[0, 0] = -1
    else:
        arr = arr[:, :, :20]
    bad = tmp_path / "lung.nii.gz"
    nib.save(nib.Nifti1Image(arr, aff), str(bad))
    with pytest.raises(DataError, match=fix) as e:
        D.load(D.Case(c.id, c.image, c.label, bad), 1024)
    assert "lung.nii.gz" in str(e.value)


def test_missing_folder_and_file(tmp_path, root):
    (tmp_path / "imagesTr").mkdir()
    with pytest.raises(DataError, match="no labelsTr, lungsTr folder"):
        D.read(tmp_path)
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(root, copy)
    (copy / "lungsTr" / "pav_002.nii.gz").unlink()
    with pytest.raises(DataError, match=r"pav_002.nii.gz has no lungsTr/pav_002.nii.gz"):
        D.read(copy)
