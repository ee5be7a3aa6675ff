"""oct-layers: the fixture is written in the card's layout, the reader reads it, and bad volumes are refused
naming the file."""

import json

import nibabel as nib
import numpy as np
import pytest

from medrun.datasets import get, oct_layers
from medrun.errors import DataError


@pytest.fixture
def root(tmp_path):
    return get("oct-layers").make_fixture(tmp_path, 0)


def test_layout_names_formats_and_quirks(root):
    pats = sorted(p.name for p in root.iterdir())
    assert pats == [f"P{i:03d}" for i in range(1, 7)]
    assert sorted(p.name for p in (root / "P001").iterdir()) == ["labels.nii.gz", "meta.json", "oct.nii.gz"]
    assert not (root / "P006" / "meta.json").exists()  # fovea = middle B-scan there
    img, lab = nib.load(str(root / "P001" / "oct.nii.gz")), nib.load(str(root / "P001" / "labels.nii.gz"))
    assert img.shape == lab.shape == (9, 64, 64) and lab.get_data_dtype() == np.uint8
    arr = np.asarray(lab.dataobj)
    assert (arr[0] == 255).all() and (arr[-1] == 255).all()
    assert set(np.unique(arr[1:-1]).tolist()) == set(range(12))
    assert json.loads((root / "P001" / "meta.json").read_text())["group"] in ("normal", "early", "intermediate")
    assert sum(p.stat().st_size for p in root.rglob("*")) < 1_000_000


def test_reader_and_signal(root):
    pats = oct_layers.read(root)
    vol, lab, _, fovea = oct_layers.load(pats[0])
    assert fovea == pats[0].meta["fovea_index"]
    assert oct_layers.load(pats[-1])[3] == 4
    assert oct_layers.annotated(lab).tolist() == [False] + [True] * 7 + [False]
    # per-layer intensity differs: the band means are far apart relative to their spread (learnable)
    means = [vol[1:-1][lab[1:-1] == c].mean() for c in range(12)]
    assert np.ptp(means) > 150
    assert oct_layers.read(root / "P002")[0].id == "P002"  # one patient folder works as the root


def _rewrite(path, arr, like=None, affine=None):
    ref = nib.load(str(like or path))
    nib.save(nib.Nifti1Image(arr, ref.affine if affine is None else affine), str(path))


@pytest.mark.parametrize("case, message", [
    ("value", "values outside 0–11 and 255: [12]"),
    ("none", "has no annotated B-scan"),
    ("partial", "partly 255"),
    ("spacing", "refusing to resample"),
    ("orientation", "refusing to reorient"),
    ("shape", "is 9×64×60 but oct.nii.gz is 9×64×64"),
])
def test_bad_labels_are_refused_naming_the_file(root, case, message):
    lab = root / "P001" / "labels.nii.gz"
    arr = np.asarray(nib.load(str(lab)).dataobj).copy()
    aff = nib.load(str(lab)).affine.copy()
    if case == "value":
        arr[3, 0, 0] = 12
    elif case == "none":
        arr[:] = 255
    elif case == "partial":
        arr[3, :5] = 255
    elif case == "spacing":
        aff[1, 1] *= 2
    elif case == "orientation":
        aff[0, 0] *= -1
    elif case == "shape":
        arr = arr[:, :, :60]
    _rewrite(lab, arr, affine=aff)
    with pytest.raises(DataError) as e:
        oct_layers.load(oct_layers.read(root)[0])
    assert str(lab) in str(e.value) and message in str(e.value)


def test_fovea_and_volume_size_checks(root):
    (root / "P001" / "meta.json").write_text('{"fovea_index": 7}')
    with pytest.raises(DataError, match="fovea index 7 leaves no 2 B-scans"):
        oct_layers.load(oct_layers.read(root)[0])
    (root / "P001" / "meta.json").write_text("{not json")
    with pytest.raises(DataError, match="meta.json is not valid JSON"):
        oct_layers.read(root)
    (root / "P001" / "meta.json").unlink()
    for name in ("oct.nii.gz", "labels.nii.gz"):
        p = root / "P001" / name
        _rewrite(p, np.asarray(nib.load(str(p)).dataobj)[:4])
    with pytest.raises(DataError, match="has 4 B-scan"):
        oct_layers.load(oct_layers.read(root)[0])
    (root / "P002" / "labels.nii.gz").unlink()
    with pytest.raises(DataError, match="no labels.nii.gz"):
        oct_layers.read(root)
