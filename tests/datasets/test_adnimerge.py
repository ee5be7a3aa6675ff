"""datasets.adnimerge: the ADNIMERGE reader (real columns, VISCODE and DX normalisation, hard errors), the cohort
selection, fold checks, volume loading, and the fixture's public layout."""

import numpy as np
import pandas as pd
import pytest

from medrun.datasets import adnimerge as adm
from medrun.errors import DataError


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    return adm.fixture(tmp_path_factory.mktemp("adnimerge"), 0)


def _row(ptid, vis, dx, rid=1, **kw):
    base = {"RID": rid, "PTID": ptid, "VISCODE": vis, "EXAMDATE": "2012-01-01", "DX_bl": "CN", "DX": dx, "AGE": 70.0,
            "PTGENDER": "Male", "PTEDUCAT": 16, "APOE4": 1, "ICV": 1.5e6,
            **{b: 1000.0 + i for i, b in enumerate(adm.BIOMARKERS)}}
    return {**base, **kw}


def _write(tmp_path, rows, drop=()):
    df = pd.DataFrame(rows).drop(columns=list(drop))
    path = tmp_path / "ADNIMERGE.csv"
    df.to_csv(path, index=False)
    return path


def test_fixture_has_the_public_layout(root):
    df = pd.read_csv(root / "ADNIMERGE.csv")
    assert set(adm.REQUIRED) <= set(df.columns) and {"EXAMDATE", "DX_bl", "COLPROT"} <= set(df.columns)
    assert df["PTID"].nunique() == 30 and set(df["DX"].dropna()) <= {"CN", "MCI", "Dementia"}
    assert {"m06", "m18"} <= set(df["VISCODE"])  # visits the selection drops
    files = sorted(p.name for p in (root / "images").iterdir())
    assert files and all(f.endswith(("_MRI.nii.gz", "_PET.nii.gz")) for f in files)
    ptid, vis = files[0].split("_")[:3], files[0].split("_")[3]
    assert ((df["PTID"] == "_".join(ptid)) & (df["VISCODE"] == vis)).any()
    n_pet = sum(f.endswith("PET.nii.gz") for f in files)
    n_mri = len(files) - n_pet
    assert 0.3 < n_pet / n_mri < 0.8  # PET missing in about half the visits
    assert adm.load_volume(root / "images" / files[0], (16, 20, 16), None).shape == (16, 20, 16)


def test_reader_normalises_viscodes_and_dx(tmp_path):
    rows = [
        _row("011_S_0001", " BL ", "NL"),
        _row("011_S_0001", "m6", "MCI"),
        _row("011_S_0001", "M012", "MCI to Dementia"),
        _row("011_S_0001", "m120", ""),
        _row("011_S_0002", "bl", "Dementia", rid=2),
        _row("011_S_0002", "m24", "EMCI", rid=2),
    ]
    df = adm.read_adnimerge(_write(tmp_path, rows))
    assert list(df["VISCODE"]) == ["bl", "m06", "m12", "m120", "bl", "m24"]
    assert list(df["months"]) == [0, 6, 12, 120, 0, 24]
    assert [None if pd.isna(d) else int(d) for d in df["dx"]] == [0, 1, 2, None, 2, 1]


def test_unknown_viscodes_are_a_hard_error_unless_ignored(tmp_path):
    rows = [_row("011_S_0001", "bl", "CN"), _row("011_S_0001", "uns1", "CN"), _row("011_S_0001", "sc", "CN")]
    path = _write(tmp_path, rows)
    with pytest.raises(DataError) as e:
        adm.read_adnimerge(path)
    assert str(path) in str(e.value) and "'sc'" in str(e.value) and "'uns1'" in str(e.value)
    assert "ignore_viscodes" in str(e.value)
    df = adm.read_adnimerge(path, ignore_viscodes=True)
    assert list(df["VISCODE"]) == ["bl"] and df.attrs["dropped_viscodes"] == ["sc", "uns1"]


def test_missing_columns_are_named(tmp_path):
    path = _write(tmp_path, [_row("011_S_0001", "bl", "CN")], drop=("Hippocampus", "ICV"))
    with pytest.raises(DataError) as e:
        adm.read_adnimerge(path)
    assert "Hippocampus" in str(e.value) and "ICV" in str(e.value) and str(path) in str(e.value)
    with pytest.raises(DataError, match="Hippocampus"):
        adm.check_layout(tmp_path)


@pytest.mark.parametrize(
    "rows,needle",
    [
        ([_row("011_S_0001", "bl", "CN"), _row("011_S_0001", "bl", "MCI")], "011_S_0001 has 2 rows for VISCODE bl"),
        (
            [_row("011_S_0001", "bl", "CN"), _row("011_S_0001", "m12", "MCI", rid=7)],
            "011_S_0001 appears under several RIDs",
        ),
        ([_row("011_S_0001", "bl", "Bogus")], "unknown DX 'Bogus'"),
        ([_row("011_S_0001", "bl", "CN", Hippocampus="high")], "column Hippocampus holds 'high'"),
    ],
)
def test_malformed_rows_name_the_subject(tmp_path, rows, needle):
    with pytest.raises(DataError, match=needle):
        adm.read_adnimerge(_write(tmp_path, rows))


def test_cohort_selection(tmp_path):
    rows = [
        _row("A", "bl", "CN", rid=1),
        _row("A", "m12", "MCI", rid=1),
        _row("A", "m06", "AD", rid=1),  # kept, m06 ignored
        _row("B", "bl", "MCI", rid=2),
        _row("B", "m12", "CN", rid=2),  # reversion: excluded
        _row("C", "bl", "CN", rid=3),
        _row("C", "m12", "", rid=3),  # one diagnosed visit: excluded
        _row("D", "m12", "CN", rid=4),
        _row("D", "m24", "CN", rid=4),  # no baseline: excluded
        _row("E", "bl", "MCI", rid=5),
        _row("E", "m36", "MCI", rid=5),
        _row("E", "m48", "", rid=5),
    ]  # kept, stable
    c = adm.select_cohort(adm.read_adnimerge(_write(tmp_path, rows)))
    assert c.subjects == ["A", "E"]
    assert c.counts["excluded_reversion"] == 1 and c.counts["excluded_too_few_visits"] == 2
    assert c.counts["stable"] == 1 and c.counts["progressive"] == 1 and c.counts["visits"] == 5
    assert "m06" not in set(c.table["VISCODE"])


def test_fold_file_with_a_subject_in_two_folds(tmp_path):
    path = tmp_path / "folds.csv"
    path.write_text("PTID,fold\nA,0\nB,1\nA,1\n")
    with pytest.raises(DataError) as e:
        adm.read_folds(path, ["A", "B"])
    assert "subject A is in two folds" in str(e.value) and str(path) in str(e.value)
    path.write_text("PTID,fold\nA,0\n")
    with pytest.raises(DataError, match="subject B"):
        adm.read_folds(path, ["A", "B"])
    with pytest.raises(DataError, match="subject X is in folds 1 and 2"):
        adm.check_disjoint([["X", "Y"], ["Z", "X"]])


def test_volume_crop_resize_and_scaling(tmp_path):
    import nibabel as nib

    arr = np.zeros((182, 218, 182), dtype=np.float32)
    arr[27:155, 29:189, 27:155] = 5.0  # exactly the centre 128×160×128
    arr[91, 109, 91] = 9.0
    arr[90, 109, 91] = 3.0
    nib.save(nib.Nifti1Image(arr, np.eye(4)), str(tmp_path / "v.nii.gz"))
    full = adm.load_volume(tmp_path / "v.nii.gz", (128, 160, 128))
    assert full.shape == (128, 160, 128) and full.min() == 0.0 and full.max() == 1.0
    assert np.isclose(full[0, 0, 0], (5 - 3) / (9 - 3))  # the crop removed the zero border; then min–max
    small = adm.load_volume(tmp_path / "v.nii.gz", (16, 20, 16))
    assert small.shape == (16, 20, 16) and 0 <= small.min() and small.max() <= 1
    (tmp_path / "bad.nii.gz").write_bytes(b"nope")
    with pytest.raises(DataError, match="bad.nii.gz"):
        adm.load_volume(tmp_path / "bad.nii.gz", (16, 20, 16))


def test_volume_preprocessing_matches_monai(tmp_path):
    import nibabel as nib
    import torch
    from monai.transforms import CenterSpatialCrop, Compose, Resize, ScaleIntensity

    arr = np.random.default_rng(0).normal(size=(45, 54, 45)).astype(np.float32)
    nib.save(nib.Nifti1Image(arr, np.eye(4)), str(tmp_path / "v.nii.gz"))
    ours = adm.load_volume(tmp_path / "v.nii.gz", (16, 20, 16), (33, 41, 31))
    ref = Compose([CenterSpatialCrop((33, 41, 31)), Resize((16, 20, 16), mode="trilinear"),
                   ScaleIntensity(minv=0.0, maxv=1.0)])(torch.from_numpy(arr)[None])
    assert np.allclose(ours, np.asarray(ref[0]), atol=1e-5)
