"""Flow cytometry MRD data (Vie / Bln / Bue): the fixtures are written in the public layouts (pickled DataFrame
pairs, CSV pairs, FCS + labels, data_splits lists), and the reader reads them, gates them, and refuses bad input
with one clear line."""

import math
import os
import pickle

import numpy as np
import pandas as pd
import pytest

from medrun.datasets import flow_mrd, get
from medrun.errors import DataError


@pytest.fixture(scope="module")
def fixtures(tmp_path_factory):
    out = tmp_path_factory.mktemp("flow")
    return {name: get(name).make_fixture(out, 0) for name in ("vie", "bln", "bue")}


def test_vie_layout_is_the_official_preloaded_format(fixtures):
    root = fixtures["vie"]
    pkl = sorted(p.name for p in root.glob("*.pkl"))
    assert len(pkl) == 32 and sum(n.endswith("_labels.pkl") for n in pkl) == 16
    lists = {p.name: p.read_text().splitlines() for p in (root / "data_splits").iterdir()}
    assert sorted(lists) == ["eval.txt", "test.txt", "train.txt"]
    assert [len(v) for v in (lists["train.txt"], lists["eval.txt"], lists["test.txt"])] == [8, 4, 4]
    assert lists["train.txt"][0].endswith(".pkl")  # the official lists name files by path
    assert pkl[:2] == ["VIE_2016_000.pkl", "VIE_2016_000_labels.pkl"]
    events, labels = pd.read_pickle(root / pkl[0]), pd.read_pickle(root / pkl[1])
    assert list(events.columns)[:4] == ["TIME", "FSC-A", "FSC-W", "SSC-A"] and len(events) == len(labels) == 4000
    assert "Intact" in labels.columns
    split = flow_mrd.read_splits(root / "data_splits", [s.name for s in flow_mrd.list_samples(root)])
    assert len(split["train"]) == 8 and len(split["val"]) == 4 and len(split["test"]) == 4


def test_reader_gates_and_maps_blast_gates(fixtures):
    files = {f.name: f for f in flow_mrd.list_samples(fixtures["vie"])}
    realb = files["VIE_2017_001"]  # odd samples: the ReALB panel (extra CD58) with blast34 / blastother gates
    labels = pd.read_pickle(realb.labels)
    assert {"blast34", "blastother"} <= set(labels.columns)
    s = flow_mrd.load(realb)
    keep = labels["Intact"].to_numpy() > 0
    assert len(s) == keep.sum() < 4000 and s.events.shape[1] == 11 and s.events.dtype == np.float32
    want = ((labels["blast34"] + labels["blastother"]).to_numpy() > 0)[keep]
    assert np.array_equal(s.labels.astype(bool), want) and 0 < s.labels.mean() < 0.1
    assert not s.missing  # CD58 is ignored, all 11 features are there
    blast_free = flow_mrd.load(files["VIE_2016_000"])
    assert blast_free.labels.sum() == 0


def test_csv_and_fcs_read_like_the_pickles(fixtures, tmp_path):
    bln = flow_mrd.list_samples(fixtures["bln"])
    assert bln[0].events.suffix == ".csv" and bln[0].labels.name.endswith("_labels.csv")
    s = flow_mrd.load(bln[0])
    assert s.events.shape[1] == 11 and len(s.labels) == len(s)

    bue = flow_mrd.list_samples(fixtures["bue"])
    assert bue[0].events.suffix == ".fcs"
    opt = flow_mrd.ReadOptions(channels={"CD58": None, "FSC-H": None}, scale="arcsinh", cofactor=150.0)
    f = flow_mrd.load(bue[0], opt)
    assert f.events.shape[1] == 11 and 0 < f.events.mean() < 4.5  # arcsinh(x/150) of the raw values

    # the same table as pickle, CSV and FCS reads to the same events
    ev = pd.read_pickle(flow_mrd.list_samples(fixtures["vie"])[0].events)
    lab = pd.read_pickle(flow_mrd.list_samples(fixtures["vie"])[0].labels)
    (tmp_path / "a").mkdir()
    ev.to_csv(tmp_path / "a" / "S1.csv", index=False)
    lab.to_csv(tmp_path / "a" / "S1_labels.csv", index=False)
    detectors = ["Time", "FSC-A", "FSC-W", "SSC-A", "FITC-A", "PE-A", "PerCP-A", "PE-Cy7-A", "APC-A", "AF700-A",
                 "V450-A"]
    stains = [None, None, None, None, "CD20-FITC", "CD10-PE", "CD45-PerCP", "CD34-PE-Cy7", "CD19-APC", "CD38-AF700",
              "SYTO41"]
    flow_mrd.write_fcs(tmp_path / "a" / "S2.fcs", ev.to_numpy(), detectors, stains)
    lab.to_csv(tmp_path / "a" / "S2_labels.csv", index=False)
    ref = flow_mrd.load(flow_mrd.list_samples(fixtures["vie"])[0]).events
    for sample in flow_mrd.list_samples(tmp_path / "a"):
        np.testing.assert_allclose(flow_mrd.load(sample).events, ref, rtol=1e-4, atol=1e-4)


def test_marker_names_are_normalised():
    n = flow_mrd.normalise_marker
    assert [n("CD45-PerCP"), n("CD45 KrO"), n("SYTO 41"), n("SY41"), n("FSC A"), n("Time"), n("CD10 PE"), n("SSC-W")] \
        == ["CD45", "CD45", "SY41", "SY41", "FSC-A", "TIME", "CD10", "SSC-W"]
    assert n("CD200 BV421") == "CD200"  # not CD20


def test_unmapped_fcs_channel_is_named(fixtures):
    sample = flow_mrd.list_samples(fixtures["bue"])[0]
    with pytest.raises(DataError, match=r"\.fcs: channel 'CD58 FITC' .* not mapped.*dataset\.channels\.CD58"):
        flow_mrd.load(sample, flow_mrd.ReadOptions(channels={"FSC-H": None}))


def test_labels_of_another_length(fixtures, tmp_path):
    src = flow_mrd.list_samples(fixtures["vie"])[2]
    (tmp_path / "S.pkl").write_bytes(src.events.read_bytes())
    pd.read_pickle(src.labels).iloc[:-5].to_pickle(tmp_path / "S_labels.pkl")
    with pytest.raises(DataError, match=r"S_labels\.pkl has 3995 rows but .*S\.pkl has 4000 events"):
        flow_mrd.load(flow_mrd.list_samples(tmp_path)[0])


class _Evil:
    def __init__(self, target):
        self.target = target

    def __reduce__(self):
        return (os.system, (f"touch {self.target}",))


def test_pickles_are_data_only(tmp_path):
    sentinel = tmp_path / "executed"
    (tmp_path / "evil.pkl").write_bytes(pickle.dumps(_Evil(sentinel)))
    with pytest.raises(DataError, match=r"evil\.pkl: not a readable pickle of a table \(refusing to load"):
        flow_mrd.load_pickle(tmp_path / "evil.pkl")
    assert not sentinel.exists()  # refused without being executed
    (tmp_path / "dict.pkl").write_bytes(pickle.dumps({"CD45": [1.0, 2.0]}))
    with pytest.raises(DataError, match=r"dict\.pkl holds a dict, not a DataFrame"):
        flow_mrd.load_pickle(tmp_path / "dict.pkl")
    arr = np.arange(6, dtype=np.float32).reshape(3, 2)
    (tmp_path / "arr.pkl").write_bytes(pickle.dumps(arr))
    assert np.array_equal(flow_mrd.load_pickle(tmp_path / "arr.pkl"), arr)
    df = pd.DataFrame({"CD45": [1.0, 2.0], "gate": ["a", "b"]})
    df.to_pickle(tmp_path / "df.pkl")
    pd.testing.assert_frame_equal(flow_mrd.load_pickle(tmp_path / "df.pkl"), df)


def test_split_lists_are_checked(fixtures, tmp_path):
    names = [s.name for s in flow_mrd.list_samples(fixtures["vie"])]
    (tmp_path / "train.txt").write_text(f"{names[0]}\nNOPE_1\n")
    with pytest.raises(DataError, match=r"train\.txt lists sample 'NOPE_1'"):
        flow_mrd.read_splits(tmp_path, names)
    (tmp_path / "train.txt").write_text(f"{names[0]}\n")
    (tmp_path / "test.txt").write_text(f"/data/{names[0]}.pkl\n")
    with pytest.raises(DataError, match="in both"):
        flow_mrd.read_splits(tmp_path, names)
    assert flow_mrd.read_splits(tmp_path / "none", names) is None


def test_missing_labels_and_wrong_folder(tmp_path):
    with pytest.raises(DataError, match="--fixture"):
        flow_mrd.check_layout("vie", tmp_path / "nope")
    (tmp_path / "x").mkdir()
    (tmp_path / "x" / "notes.txt").write_text("")
    with pytest.raises(DataError, match="no <sample>.pkl"):
        flow_mrd.check_layout("vie", tmp_path / "x")
    pd.DataFrame({"CD45": [1.0]}).to_pickle(tmp_path / "x" / "S.pkl")
    with pytest.raises(DataError, match=r"S\.pkl has no labels file .*S_labels\.pkl"):
        flow_mrd.list_samples(tmp_path / "x")


def test_fixture_signal_needs_context():
    """Blasts sit next to the B-precursors and every sample is shifted: the fixture is learnable but not trivial."""
    rng = np.random.default_rng(0)
    ev, intact, blast, _ = flow_mrd.simulate(rng, 4000, 0.05)
    assert ev.shape == (4000, 11) and math.isclose(blast.mean(), 0.05, abs_tol=1e-3) and intact.mean() > 0.9
    cd10 = flow_mrd.MARKERS.index("CD10")
    assert ev[blast, cd10].mean() > ev[~blast, cd10].mean()
