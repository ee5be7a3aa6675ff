"""The rs-fMRI CSV layout: the fixture is in it, and the reader rejects malformed input naming the file."""

import numpy as np
import pytest

from medrun.datasets import adni_rsfmri as ds
from medrun.errors import DataError


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    return ds.fixture(tmp_path_factory.mktemp("rs"), 0, n_per_class=4, length=30)


def test_fixture_is_in_the_public_layout(root):
    series = ds.list_series(root, ["HC", "MCI"], ["CB"])
    assert len(series) == 8 and {s.cls for s in series} == {"HC", "MCI"}
    assert all(s.path == root / s.cls / "CB" / f"{s.subject}.csv" for s in series)
    x = ds.read_series(series[0].path, "CB")
    assert x.shape == (18, 30) and not (x == 0).any()
    first = open(series[0].path).readline()
    assert first.count(",") == 29 and not any(c.isalpha() for c in first)  # no header, one column per time point


def test_fixture_signal_hc_blocks_mci_flat(root):
    hc = ds.read_series(next(root.glob("HC/CB/*.csv")), "CB")
    mci = ds.read_series(next(root.glob("MCI/CB/*.csv")), "CB")
    amp = lambda x: np.ptp(x, axis=1) / 2  # noqa: E731
    assert amp(hc)[:9].mean() < 1.5 < 2.5 < amp(hc)[9:].mean()
    assert 1.5 < amp(mci).mean() < 2.5


def test_cn_folder_counts_as_hc(tmp_path, root):
    import shutil

    shutil.copytree(root / "HC", tmp_path / "CN")
    assert {s.cls for s in ds.list_series(tmp_path, ["HC"], ["CB"])} == {"HC"}


def _write(path, x):
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savetxt(path, x, delimiter=",")
    return path


def test_nan_names_file_subject_and_position(tmp_path):
    x = np.random.default_rng(0).normal(size=(18, 20)) + 5
    x[4, 7] = np.nan
    p = _write(tmp_path / "HC" / "CB" / "002_S_0042.csv", x)
    with pytest.raises(DataError) as e:
        ds.read_series(p, "CB")
    assert "002_S_0042" in str(e.value) and "NaN" in str(e.value) and "row 5" in str(e.value)


def test_constant_roi_is_an_error(tmp_path):
    x = np.random.default_rng(0).normal(size=(18, 20)) + 5
    x[2] = 3.0
    p = _write(tmp_path / "s.csv", x)
    with pytest.raises(DataError, match="constant ROI row"):
        ds.read_series(p, "CB")


def test_exact_zero_drops_the_subject_and_wrong_rows_or_header_fail(tmp_path):
    x = np.random.default_rng(0).normal(size=(18, 20)) + 5
    x[0, 0] = 0.0
    assert ds.read_series(_write(tmp_path / "z.csv", x), "CB") is None
    with pytest.raises(DataError, match="has 17 rows but network CB has 18"):
        ds.read_series(_write(tmp_path / "r.csv", x[1:] + 1), "CB")
    h = tmp_path / "h.csv"
    h.write_text("a,b,c,d\n1,2,3,4\n")
    with pytest.raises(DataError, match="non-numeric"):
        ds.read_series(h)


def test_subject_in_two_class_folders(tmp_path, root):
    import shutil

    shutil.copytree(root, tmp_path / "d")
    src = next((tmp_path / "d" / "HC" / "CB").glob("*.csv"))
    shutil.copy(src, tmp_path / "d" / "MCI" / "CB" / src.name)
    with pytest.raises(DataError, match=f"subject {src.stem} is in two class folders"):
        ds.list_series(tmp_path / "d", ["HC", "MCI"], ["CB"])


def test_layout_errors(tmp_path, root):
    with pytest.raises(DataError, match="not found"):
        ds.check_layout(tmp_path / "nowhere")
    (tmp_path / "x").mkdir()
    with pytest.raises(DataError, match="no HC, CN, MCI"):
        ds.check_layout(tmp_path / "x")
    with pytest.raises(DataError, match="one level above"):
        ds.check_layout(root.parent, ["HC", "MCI"])
    with pytest.raises(DataError, match="network CO of class HC"):
        ds.list_series(root, ["HC"], ["CO"])
