"""ABIDE readers: the abide.npy dictionary (restricted unpickler) and the PCP layout; malformed inputs are rejected
with the file or subject named."""

import numpy as np
import pytest

from medrun.datasets import abide, get
from medrun.errors import DataError


@pytest.fixture(scope="module")
def roots(tmp_path_factory):
    d = tmp_path_factory.mktemp("abide")
    return get("abide").make_fixture(d, 0), get("abide-pcp").make_fixture(d, 0)


def test_npy_fixture_is_bnt_dictionary(roots):
    root, _ = roots
    assert sorted(p.name for p in root.iterdir()) == ["abide.npy", "roi_communities.csv"]
    raw = np.load(root / "abide.npy", allow_pickle=True).item()  # our own file: safe to load plainly here
    assert set(raw) == {"timeseires", "corr", "pcorr", "label", "site"}
    assert raw["timeseires"].shape == (60, 40, 100) and raw["corr"].shape == (60, 40, 40)
    c = abide.read_npy(root)
    assert len(c) == 60 and c.label.sum() == 30 and sorted(set(c.site)) == ["NYU", "PITT", "UM_1"]
    assert np.bincount(c.communities).tolist() == [8, 6, 4, 4, 4, 2, 4, 8]
    assert c.subject[:2] == ["0000", "0001"]
    assert np.allclose(c.corr, c.corr.transpose(0, 2, 1)) and np.allclose(c.corr[:, range(40), range(40)], 1)


def test_asd_label_convention(roots):
    a, b = abide.read_npy(roots[0]), abide.read_npy(roots[0], asd_label=0)
    assert (a.label == 1 - b.label).all()


def test_pcp_fixture_matches_npy(roots):
    npy, pcp = roots
    assert (pcp / "rois_cc200" / "Pitt_0050000_rois_cc200.1D").read_text().startswith("#0001\t#0002")
    a, b = abide.read_npy(npy), abide.read_pcp(pcp)
    assert len(b) == 60 and b.subject[0] == "Pitt_0050000" and b.site[0] == "PITT"  # the no_filename row is skipped
    assert (a.label == b.label).all() and np.abs(a.corr - b.corr).max() < 1e-5
    assert (a.communities == b.communities).all()


def test_fixture_signal_and_site_effect(roots):
    c = abide.read_npy(roots[0])
    blk = np.flatnonzero(c.communities == 2)
    within = c.corr[:, blk][:, :, blk][:, np.triu_indices(len(blk), 1)[0], np.triu_indices(len(blk), 1)[1]].mean(1)
    assert within[c.label == 1].mean() < within[c.label == 0].mean() - 0.1  # ASD: weaker community-2 FC
    site = np.array(c.site)
    off = [c.corr[site == s][:, 20:, :20].mean() for s in ("PITT", "NYU", "UM_1")]
    assert off[0] < off[1] < off[2]  # each site a different global FC offset


def test_unpickler_refuses_arbitrary_classes(tmp_path):
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    (tmp_path / "abide.npy").write_bytes(b"")
    np.save(tmp_path / "abide.npy", np.array({"corr": Evil()}, dtype=object), allow_pickle=True)
    with pytest.raises(DataError, match="refusing to load .*open"):
        abide.load_npy_dict(tmp_path / "abide.npy")
    assert not marker.exists()


def test_plain_array_rejected(tmp_path):
    np.save(tmp_path / "abide.npy", np.zeros((3, 4)))
    with pytest.raises(DataError, match="plain float64 array"):
        abide.load_npy_dict(tmp_path / "abide.npy")


def _write(root, **d):
    np.save(root / "abide.npy", d, allow_pickle=True)


def test_mismatched_lengths_name_the_file_and_arrays(roots, tmp_path):
    raw = np.load(roots[0] / "abide.npy", allow_pickle=True).item()
    (tmp_path / "roi_communities.csv").write_text((roots[0] / "roi_communities.csv").read_text())
    _write(tmp_path, **{**raw, "label": raw["label"][:-3]})
    with pytest.raises(DataError, match=r"abide.npy: arrays have different lengths \(.*label 57.*corr 60"):
        abide.read_npy(tmp_path)
    _write(tmp_path, **{k: v for k, v in raw.items() if k != "site"})
    with pytest.raises(DataError, match="lacks key.*site"):
        abide.read_npy(tmp_path)
    _write(tmp_path, **{**raw, "label": raw["label"] + 1})
    with pytest.raises(DataError, match="label must be 0/1"):
        abide.read_npy(tmp_path)


def test_communities_csv_checked(roots, tmp_path):
    with pytest.raises(DataError, match="lists 39 ROIs but the FC matrices have 40"):
        (tmp_path / "c.csv").write_text("roi,community\n" + "".join(f"{i},0\n" for i in range(39)))
        abide.read_communities(tmp_path / "c.csv", 40)
    (tmp_path / "c.csv").write_text("roi,community\n" + "".join(f"{i},{2 * (i % 2)}\n" for i in range(40)))
    with pytest.raises(DataError, match="numbered 0..K−1"):
        abide.read_communities(tmp_path / "c.csv", 40)


def test_pcp_duplicate_subject_and_wrong_columns(roots, tmp_path):
    import shutil

    root = tmp_path / "pcp"
    shutil.copytree(roots[1], root)
    csv = root / abide.PHENOTYPE
    lines = csv.read_text().splitlines()
    csv.write_text("\n".join([*lines, lines[3]]) + "\n")
    with pytest.raises(DataError, match="csv: subject UM_1_0050002 appears 2 times"):
        abide.read_pcp(root)
    bad = lines[2].split(",")
    bad[5] = ""
    csv.write_text("\n".join([*lines[:2], ",".join(bad), *lines[3:5]]) + "\n")
    with pytest.raises(DataError, match="subject NYU_0050001 has DX_GROUP nan"):
        abide.read_pcp(root)
    csv.write_text("\n".join(lines[:5]) + "\n")
    f = root / "rois_cc200" / "NYU_0050001_rois_cc200.1D"
    f.write_text("#a\n" + "\n".join("1 2 3" for _ in range(50)) + "\n")
    with pytest.raises(DataError, match="NYU_0050001_rois_cc200.1D has 3 ROI columns"):
        abide.read_pcp(root)


def test_split_file_subject_in_two_folds(tmp_path):
    subjects = ["a", "b", "c", "d"]
    f = tmp_path / "splits.csv"
    f.write_text("subject,split\na,train\nb,train\nc,test\nd,val\n")
    assert abide.read_splits(f, subjects) == {"train": ["a", "b"], "val": ["d"], "test": ["c"]}
    f.write_text("subject,split\na,train\nb,train\nc,test\nb,test\n")
    with pytest.raises(DataError, match=r"splits.csv: subject b is in two folds \(train and test\)"):
        abide.read_splits(f, subjects)
    f.write_text("subject,split\na,train\nz,test\n")
    with pytest.raises(DataError, match="subject z is not in the dataset"):
        abide.read_splits(f, subjects)


def test_layout_check_names_missing_files(tmp_path):
    with pytest.raises(DataError, match="missing abide.npy, roi_communities.csv"):
        abide.check_layout("abide", tmp_path)
    with pytest.raises(DataError, match="missing rois_cc200"):
        abide.check_layout("abide-pcp", tmp_path)
