"""The MSD fixture is in the Decathlon layout; the reader follows dataset.json and refuses inconsistent files."""

import json

import nibabel as nib
import numpy as np
import pytest

from medrun.datasets import get, msd
from medrun.errors import DataError


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    return get("msd").make_fixture(tmp_path_factory.mktemp("msd"), 0)


def test_layout_and_dataset_json(root):
    assert [p.name for p in msd.task_dirs(root)] == ["Task90_SynthMulti", "Task91_SynthCT"]
    task = msd.read_task(root / "Task90_SynthMulti")
    meta = json.loads(task.dataset_json.read_text())
    assert meta["numTraining"] == 8 and meta["numTest"] == 2 and meta["tensorImageSize"] == "4D"
    assert task.modalities == {0: "T2", 1: "ADC"} and task.labels == {0: "background", 1: "blob", 2: "cube"}
    assert len(task.training) == 8 and len(task.test) == 2 and task.num_classes == 3 and not task.is_ct
    assert (root / "Task90_SynthMulti" / "imagesTr" / "._syn_000.nii.gz").exists()  # macOS forks, as in the tarballs
    assert all(not c.image.name.startswith("._") for c in task.training)
    img = nib.load(task.training[0].image)
    assert img.shape == (32, 32, 32, 2) and img.get_data_dtype() == np.float32
    assert nib.load(task.training[0].label).get_data_dtype() == np.uint8
    assert msd.check_headers(task, task.training[0]) == (32, 32, 32)
    ct = msd.read_task(root / "Task91_SynthCT")
    assert ct.is_ct and ct.num_classes == 2 and nib.load(ct.training[0].image).get_data_dtype() == np.int16


def test_fixture_signal_needs_both_modalities(root):
    task = msd.read_task(root / "Task90_SynthMulti")
    image = np.asarray(nib.load(task.training[0].image).dataobj)
    label = np.asarray(nib.load(task.training[0].label).dataobj)
    assert set(np.unique(label)) == {0, 1, 2}
    blob, cube, bg = label == 1, label == 2, label == 0
    assert image[..., 0][blob].mean() - image[..., 0][bg].mean() > 1.5  # sphere bright only in channel 0
    assert abs(image[..., 1][blob].mean() - image[..., 1][bg].mean()) < 0.3
    assert image[..., 1][cube].mean() - image[..., 1][bg].mean() > 1.5  # cube bright only in channel 1
    assert abs(image[..., 0][cube].mean() - image[..., 0][bg].mean()) < 0.3
    assert 0.4 < image[..., 0][bg].std() < 0.6


def test_task_names_resolve(root):
    for name in ("Task90_SynthMulti", "Task90", "90", "SynthMulti"):
        assert [p.name for p in msd.resolve_tasks(root, [name])] == ["Task90_SynthMulti"]
    assert msd.resolve_tasks(root / "Task91_SynthCT", "all") == [root / "Task91_SynthCT"]  # a task folder itself
    with pytest.raises(DataError, match="task 'Task03' not found .*Task90_SynthMulti, Task91_SynthCT"):
        msd.resolve_tasks(root, ["Task03"])
    with pytest.raises(DataError, match="holds no TaskXX_"):
        msd.resolve_tasks(root / "Task90_SynthMulti" / "imagesTr", "all")


@pytest.fixture
def task_copy(root, tmp_path):
    import shutil

    shutil.copytree(root / "Task90_SynthMulti", tmp_path / "Task90_SynthMulti")
    return tmp_path / "Task90_SynthMulti"


def test_missing_listed_file_and_bad_json(task_copy):
    (task_copy / "labelsTr" / "syn_003.nii.gz").unlink()
    with pytest.raises(DataError, match="syn_003.nii.gz is listed in .*dataset.json but missing"):
        msd.read_task(task_copy)
    (task_copy / "dataset.json").write_text("{not json")
    with pytest.raises(DataError, match="is not an MSD dataset.json"):
        msd.read_task(task_copy)


def test_header_checks(task_copy):
    task = msd.read_task(task_copy)
    case = task.training[1]
    nib.save(nib.Nifti1Image(np.zeros((32, 32, 32), np.float32), np.eye(4)), case.image)
    with pytest.raises(DataError, match=r"syn_001.nii.gz has 1 modality channel\(s\) .* declares 2 \(T2, ADC\)"):
        msd.check_headers(task, case)
    nib.save(nib.Nifti1Image(np.zeros((32, 32, 32, 2), np.float32), np.eye(4)), case.image)
    nib.save(nib.Nifti1Image(np.zeros((30, 32, 32), np.uint8), np.eye(4)), case.label)
    with pytest.raises(DataError, match=r"labelsTr/syn_001.nii.gz has shape \(30, 32, 32\) but its image"):
        msd.check_headers(task, case)
    with pytest.raises(DataError, match=r"has label value\(s\) \[7\] not in .*dataset.json labels \[0, 1, 2\]"):
        msd.check_label_values(task, case.label, [0, 1, 7])
