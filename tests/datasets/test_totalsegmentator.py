"""TotalSegmentator layout reader and fixture: layout, meta.csv splits, class list, label map, bad input."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest

from medrun.datasets import get
from medrun.datasets import totalsegmentator as ts
from medrun.errors import DataError, UsageError


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    return get("totalsegmentator").make_fixture(tmp_path_factory.mktemp("ts"), 0)


def test_fixture_has_the_public_layout(root):
    assert root.name == "Totalsegmentator_dataset"
    assert sorted(p.name for p in root.iterdir()) == ["meta.csv", *[f"s{i:04d}" for i in range(8)]]
    header = (root / "meta.csv").read_text().splitlines()[0]
    assert header.split(";")[0] == "image_id" and "split" in header.split(";")
    case = root / "s0003"
    assert (case / "ct.nii.gz").is_file()
    assert sorted(p.name for p in (case / "segmentations").iterdir()) == [
        "gallbladder.nii.gz", "kidney_left.nii.gz", "liver.nii.gz", "spleen.nii.gz"]
    ct = nib.load(case / "ct.nii.gz")
    assert ct.shape == (48, 48, 48) and np.allclose(np.abs(np.diag(ct.affine))[:3], 1.5)
    assert ct.get_data_dtype() == np.int16


def test_read_splits_and_classes(root):
    cases, classes = ts.read(root)
    assert classes == ["gallbladder", "kidney_left", "liver", "spleen"]  # sorted mask names
    assert [c.split for c in cases].count("train") == 5 and [c.split for c in cases].count("val") == 2
    assert [c.split for c in cases].count("test") == 1 and cases[0].id == "s0000"
    _, chosen = ts.read(root, ["liver", "spleen"])
    assert chosen == ["liver", "spleen"]


def test_label_map_and_organ_intensities(root):
    cases, classes = ts.read(root)
    ct, label, affine = ts.load_case(cases[0], classes)
    assert ct.shape == label.shape == (48, 48, 48) and affine.shape == (4, 4)
    for i, name in enumerate(classes, start=1):
        mask = np.asarray(nib.load(cases[0].seg_dir / f"{name}.nii.gz").dataobj) > 0
        assert label[mask].max() >= i and mask.sum() > 50  # each organ present (overlaps go to higher index)
    hu = {name: float(ct[label == i].mean()) for i, name in enumerate(classes, start=1)}
    assert hu["kidney_left"] > hu["liver"] > hu["spleen"] > hu["gallbladder"]
    assert abs(float(ct[label == 0][ct[label == 0] > -500].mean())) < 10  # body ≈ 0 HU


def test_overlap_goes_to_higher_index(tmp_path, root):
    import shutil

    r = tmp_path / "Totalsegmentator_dataset"
    shutil.copytree(root, r)
    seg = r / "s0000" / "segmentations"
    liver = nib.load(seg / "liver.nii.gz")
    nib.save(nib.Nifti1Image(np.asarray(liver.dataobj), liver.affine), seg / "gallbladder.nii.gz")
    cases, classes = ts.read(r)
    _, label, _ = ts.load_case(cases[0], classes)
    liver_mask = np.asarray(liver.dataobj) > 0
    assert (label[liver_mask] >= classes.index("liver") + 1).all()  # liver (3) beats gallbladder (1)
    assert not (label == 1).any()


def test_bad_inputs(tmp_path, root):
    import shutil

    with pytest.raises(DataError, match="not found"):
        ts.read(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no meta.csv"):
        ts.read(tmp_path / "empty")
    with pytest.raises(DataError, match="use .*Totalsegmentator_dataset"):
        ts.check_layout(root.parent)
    with pytest.raises(UsageError, match="unknown class 'livr'.*did you mean 'liver'"):
        ts.read(root, ["livr"])

    r = tmp_path / "Totalsegmentator_dataset"
    shutil.copytree(root, r)
    (r / "s0004" / "segmentations" / "spleen.nii.gz").unlink()
    with pytest.raises(DataError, match="s0004.*lacks spleen"):
        ts.read(r)
    shutil.copy(r / "s0000" / "segmentations" / "spleen.nii.gz", r / "s0004" / "segmentations" / "spleen.nii.gz")
    small = nib.Nifti1Image(np.zeros((40, 48, 48), np.uint8), np.diag([-1.5, -1.5, 1.5, 1]))
    nib.save(small, r / "s0002" / "segmentations" / "liver.nii.gz")
    cases, classes = ts.read(r)
    with pytest.raises(DataError, match=r"liver.nii.gz has shape \(40, 48, 48\) but its CT .*\(48, 48, 48\)"):
        ts.load_case(cases[2], classes)
    (r / "s0001" / "ct.nii.gz").write_bytes(b"\x1f\x8b garbage")
    with pytest.raises(DataError, match="cannot read NIfTI .*s0001"):
        ts.load_case(cases[1], classes)
    (r / "meta.csv").write_text("image_id;fold\ns0000;1\n")
    with pytest.raises(DataError, match="lacks the column.*split"):
        ts.read(r)
