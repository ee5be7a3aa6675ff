"""The IXI / HCP / Simons miniatures are written in their public layouts, and the readers read them and reject
wrong layouts, mismatched grids and bad diffusion side files with one clear DataError."""

import nibabel as nib
import numpy as np
import pytest

from medrun.datasets import brain_mr, get
from medrun.errors import DataError


@pytest.fixture(scope="module")
def family(tmp_path_factory):
    return brain_mr.write_family(tmp_path_factory.mktemp("brain"), 0)


def test_layouts_and_readers(family):
    ixi, hcp, simons = (brain_mr.read(n, family[n]) for n in ("ixi", "hcp", "simons"))
    assert [len(x) for x in (ixi, hcp, simons)] == [6, 6, 6]
    assert ixi[0].id == "IXI002-Guys-0800" and set(ixi[0].files) == {"t1", "t2", "pd"}
    assert ixi[0].files["pd"].relative_to(family["ixi"]).as_posix() == "IXI-PD/IXI002-Guys-0800-PD.nii.gz"
    assert hcp[0].files["dwi"].relative_to(family["hcp"]).as_posix() == "100206/T1w/Diffusion/data.nii.gz"
    assert (hcp[0].files["dwi"].parent / "bvals").is_file() and (hcp[0].files["dwi"].parent / "bvecs").is_file()
    assert simons[0].files["t2star"].name == "sub-01_T2starw.nii.gz"
    assert all(s.seg is not None and s.seg.name.endswith("_seg.nii.gz") for s in ixi + hcp + simons)
    assert get("hcp").fixture.endswith(":fixture_hcp") and get("simons").fixture.endswith(":fixture_simons")


def test_volumes_are_normalised_and_dwi_is_the_b1000_mean(family):
    s = brain_mr.read("hcp", family["hcp"])[0]
    vols, seg = brain_mr.load_subject(s, ["t1", "dwi", "t2"])
    assert set(vols) == {"t1", "dwi", "t2"} and all(v.shape == brain_mr.SHAPE for v in vols.values())
    assert all(abs(float(v.max()) - 1.0) < 1e-6 and float(v.min()) >= 0 for v in vols.values())
    assert set(np.unique(seg)) == {0, 1, 2, 3}
    # the fixture's DWI: GM > WM > CSF (the b≈1000 volumes), T1: WM > GM > CSF
    means = {c: [float(vols[c][seg == t].mean()) for t in (1, 2, 3)] for c in ("t1", "dwi")}
    assert means["t1"][2] > means["t1"][1] > means["t1"][0] and means["dwi"][1] > means["dwi"][2] > means["dwi"][0]


def test_wrong_folder_names_the_layout(tmp_path):
    (tmp_path / "IXI-T2").mkdir()
    with pytest.raises(DataError, match="IXI-T1"):
        brain_mr.read("ixi", tmp_path)
    with pytest.raises(DataError, match="T1w_acpc_dc_restore_brain"):
        brain_mr.read("hcp", tmp_path)


def test_contrasts_of_other_shape_and_bad_bvals_are_refused(family, tmp_path):
    import shutil

    root = tmp_path / "IXI"
    shutil.copytree(family["ixi"], root)
    s = brain_mr.read("ixi", root)[0]
    nib.save(nib.Nifti1Image(np.ones((60, 64, 32), np.int16), np.eye(4)), str(s.files["t2"]))
    with pytest.raises(DataError, match=r"has shape \(60, 64, 32\).*register every contrast"):
        brain_mr.load_subject(s, ["t1", "t2"])
    hroot = tmp_path / "HCP"
    shutil.copytree(family["hcp"], hroot)
    h = brain_mr.read("hcp", hroot)[0]
    (h.files["dwi"].parent / "bvals").write_text("0 1000\n")
    with pytest.raises(DataError, match="bvals has 2 values for 5 volumes"):
        brain_mr.load_subject(h, ["t1", "dwi"])
