"""The Mayo LDCT fixture is written in the challenge's layout (DICOM .IMA, slope 1 / intercept −1024, quarter and
full dose paired by InstanceNumber) with realistic quarter-dose noise, and the reader reads it, the preconverted
.npy layout too, and rejects broken layouts with a line naming the file and the fix."""

import shutil

import numpy as np
import pytest

from medrun.datasets import get, mayo
from medrun.errors import DataError


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    return get("mayo").make_fixture(tmp_path_factory.mktemp("mayo"), 0)


@pytest.fixture
def small(tmp_path):
    return mayo.fixture(tmp_path / "s", 0, patients=("L067", "L506"), slices=2, size=64)


def test_fixture_layout_names_and_headers(root):
    import pydicom

    assert sorted(p.name for p in root.iterdir() if p.is_dir()) == ["L067", "L096", "L506"]
    for pid in ("L067", "L096", "L506"):
        q, f = sorted((root / pid / "quarter_3mm").iterdir()), sorted((root / pid / "full_3mm").iterdir())
        assert len(q) == len(f) == 4
        assert q[0].name.startswith(f"{pid}_QD_3_1.CT.0004.0001.") and q[0].suffix == ".IMA"
        assert f[2].name.startswith(f"{pid}_FD_3_1.CT.0004.0003.")
    ds = pydicom.dcmread(next((root / "L506" / "full_3mm").iterdir()))
    header = (float(ds.RescaleSlope), float(ds.RescaleIntercept), ds.Rows, ds.Columns, ds.BitsStored)
    assert header == (1, -1024, 128, 128, 12)
    assert ds.Modality == "CT" and ds.PatientID == "L506"
    assert sum(p.stat().st_size for p in root.rglob("*")) < 2_000_000


def test_reader_pairs_slices_and_the_noise_is_quarter_dose(root):
    pairs = mayo.read(root)
    assert len(pairs) == 12 and [p.id for p in pairs[:2]] == ["L067_0000", "L067_0001"]
    assert all(p.instance == p.index + 1 and p.kind == "dicom" for p in pairs)
    assert [p.patient for p in mayo.read(root, patients=["L506"])] == ["L506"] * 4
    ld, nd = mayo.load(pairs[0])
    assert ld.shape == nd.shape == (128, 128) and ld.dtype == np.float32 and ld.min() >= -1024
    inside = nd > -200  # the body: soft tissue around 40 HU, bone 300
    assert 0 < np.median(nd[inside]) < 120 and nd.max() > 250
    w = lambda a: np.clip(a, -160, 240)  # noqa: E731
    rmse = np.sqrt(np.mean((w(ld) - w(nd)) ** 2))
    assert 15 < rmse < 50  # quarter dose: a few tens of HU, about the paper's 34 HU
    from scipy import ndimage

    # high-pass energy in flat tissue (away from edges): the quarter dose is the noisier (the 64-view streaks are
    # common to both doses, so the ratio is about 1.45, not the 2 of the Poisson noise alone)
    grad = ndimage.gaussian_gradient_magnitude(ndimage.gaussian_filter(nd, 2), 1)
    flat = ndimage.binary_erosion(inside & (grad < 5), iterations=2)
    hp = lambda a: (w(a) - ndimage.gaussian_filter(w(a), 2))[flat].std()  # noqa: E731
    assert flat.sum() > 1000 and hp(ld) > 1.25 * hp(nd)


def test_fixture_is_deterministic(tmp_path):
    a = mayo.fixture(tmp_path / "a", 3, patients=("L067",), slices=1, size=64)
    b = mayo.fixture(tmp_path / "b", 3, patients=("L067",), slices=1, size=64)
    la, lb = mayo.load(mayo.read(a)[0]), mayo.load(mayo.read(b)[0])
    assert np.array_equal(la[0], lb[0]) and np.array_equal(la[1], lb[1])


def test_npy_layout_round_trips(small, tmp_path):
    pairs = mayo.read(small)
    out = mayo.to_npy_layout(pairs, tmp_path / "npy")
    assert sorted(p.name for p in out.iterdir())[:2] == ["L067_0_input.npy", "L067_0_target.npy"]
    assert mayo.layout(out) == "npy"
    back = mayo.read(out)
    assert [p.id for p in back] == [p.id for p in pairs] and back[0].kind == "npy"
    for a, b in zip(mayo.load(back[0]), mayo.load(pairs[0]), strict=True):
        np.testing.assert_allclose(a, b, atol=1e-3)
    (out / "L506_1_target.npy").unlink()
    with pytest.raises(DataError, match="L506_1_input.npy has no partner L506_1_target.npy"):
        mayo.read(out)


def test_wrong_folders_are_explained(small, tmp_path):
    with pytest.raises(DataError, match="one patient's folder.*use its parent"):
        mayo.read(small / "L067")
    with pytest.raises(DataError, match="one level above the Mayo folder"):
        mayo.read(small.parent)
    with pytest.raises(DataError, match="not found"):
        mayo.read(tmp_path / "nothing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="does not have the Mayo LDCT layout.*--fixture"):
        mayo.read(tmp_path / "empty")
    with pytest.raises(DataError, match="set dataset.series to one of 3mm"):
        mayo.read(small, series="1mm")


def test_broken_series_name_the_file_and_the_fix(small):
    import pydicom

    bad = sorted((small / "L506" / "full_3mm").iterdir())[1]
    ds = pydicom.dcmread(bad)
    ds.RescaleSlope = "2"
    ds.save_as(bad)
    with pytest.raises(DataError, match=r"full_3mm.*has RescaleSlope/Intercept 2/-1024 .*mixed rescale.*re-export"):
        mayo.read(small)
    shutil.rmtree(small / "L506")
    first = sorted((small / "L067" / "quarter_3mm").iterdir())[0]
    first.write_bytes(b"not a dicom")
    with pytest.raises(DataError, match=f"cannot read DICOM {first}"):
        mayo.read(small)
    first.unlink()
    with pytest.raises(DataError, match="has no quarter_3mm/ partner"):
        mayo.read(small)
    shutil.rmtree(small / "L067" / "quarter_3mm")
    with pytest.raises(DataError, match="L067 has full_3mm/ but no quarter_3mm/"):
        mayo.read(small)


def test_partners_of_different_sizes(small):
    import pydicom

    f = sorted((small / "L067" / "full_3mm").iterdir())[0]
    ds = pydicom.dcmread(f)
    ds.Rows, ds.Columns = 32, 32
    ds.PixelData = np.zeros((32, 32), np.uint16).tobytes()
    ds.save_as(f)
    with pytest.raises(DataError, match="64×64 but its partner .* is 32×32"):
        mayo.load(mayo.read(small)[0])
