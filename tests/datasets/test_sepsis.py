"""Sepsis cohorts: the fixtures are written in their layouts (the card's flat tables, PhysioNet 2019's timelines),
the readers flatten timelines at the cut-off as the card says, and bad tables are refused naming file and fix."""

import numpy as np
import pytest

from medrun.datasets import get, sepsis
from medrun.errors import DataError

CSV_MAP = sepsis.effective_map("sepsis-csv")
PN_MAP = sepsis.effective_map("physionet2019")


@pytest.fixture(scope="module")
def csv_root(tmp_path_factory):
    return get("sepsis-csv").make_fixture(tmp_path_factory.mktemp("sepsis-csv"), 0)


@pytest.fixture(scope="module")
def pn_root(tmp_path_factory):
    return get("physionet2019").make_fixture(tmp_path_factory.mktemp("physionet"), 0)


def test_csv_fixture_layout_and_reader(csv_root):
    names = sorted(p.name for p in csv_root.iterdir())
    assert names == ["external.csv", "feature_map.yaml", "internal.csv", "timelines"]
    assert sepsis.header(csv_root / "internal.csv") == ["patient_id", *sepsis.FEATURES, "sepsis"]
    t = sepsis.read(csv_root / "internal.csv", CSV_MAP, None)
    assert t.x.shape == (400, 27) and t.n_sepsis == 92 and t.ids[0] == "MA0001"
    assert 0.08 < np.isnan(t.x).mean() < 0.12  # the card's 10 % missing
    ext = sepsis.read(csv_root / "external.csv", CSV_MAP, t.features, what="external")
    assert ext.x.shape == (300, 27) and ext.n_sepsis == 150
    # the signal the card asks for: sepsis raises lactate and procalcitonin
    for f in ("lactate", "procalcitonin", "heart_rate"):
        j = t.features.index(f)
        assert np.nanmean(t.x[t.y == 1, j]) > np.nanmean(t.x[t.y == 0, j])
    assert len(sepsis.timeline_files(csv_root / "timelines")) == 20


def test_csv_timelines_read_through_the_feature_map(csv_root):
    fmap = sepsis.effective_map("sepsis-csv", sepsis.read_feature_map(csv_root / "feature_map.yaml"))
    assert sepsis.header(csv_root / "timelines")[:3] == ["HR", "WBC", "Temp"]
    t = sepsis.read(csv_root / "timelines", fmap, None)
    assert t.features == list(sepsis.FEATURES) and t.x.shape[0] + len(t.dropped_early) == 20
    with pytest.raises(DataError, match="no column for feature 'heart_rate'"):
        sepsis.read(csv_root / "timelines", CSV_MAP, list(sepsis.FEATURES))  # no map: HR is not heart_rate


def test_physionet_fixture_is_the_challenge_format(pn_root):
    a, b = pn_root / "training_setA", pn_root / "training_setB"
    assert len(sepsis.timeline_files(a)) == 240 and len(sepsis.timeline_files(b)) == 160
    assert sepsis.timeline_files(a)[0].name == "p000001.psv" and sepsis.timeline_files(b)[0].name == "p100001.psv"
    assert tuple(sepsis.header(a)) == sepsis.PHYSIONET_COLUMNS
    first = sepsis.timeline_files(a)[0].read_text().splitlines()
    assert first[1].split("|")[-2] == "1" and "NaN" in first[1]  # ICULOS from 1, NaN for not measured
    t = sepsis.read(a, PN_MAP, None)
    assert len(t.features) == 21 and "c-reactive_protein" not in t.features
    assert t.dropped_early and len(t.ids) + len(t.dropped_early) + len(t.dropped_empty) == 240
    assert 0.15 < t.y.mean() < 0.35


def test_fixture_is_deterministic(tmp_path):
    a = get("sepsis-csv").make_fixture(tmp_path / "a", 3)
    b = get("sepsis-csv").make_fixture(tmp_path / "b", 3)
    assert (a / "internal.csv").read_bytes() == (b / "internal.csv").read_bytes()


def _timeline(path, rows, header=("HR", "Lactate", "ICULOS", "SepsisLabel")):
    path.write_text("|".join(header) + "\n" + "\n".join("|".join(map(str, r)) for r in rows) + "\n")


def test_flatten_takes_the_last_value_within_the_cutoff(tmp_path):
    d = tmp_path / "tl"
    d.mkdir()
    _timeline(d / "p1.psv", [[80, "NaN", 1, 0], [90, 2.5, 5, 0], ["NaN", "NaN", 9, 0], [120, 9.9, 10, 0],
                             [130, 1, 11, 1]])
    _timeline(d / "p2.psv", [[70, 1.0, 1, 0], [75, "NaN", 3, 1], [75, "NaN", 4, 1]])  # labelled at hour 3: dropped
    _timeline(d / "p3.psv", [[60, 1.0, 12, 0]])  # no row within 9 h: dropped
    _timeline(d / "p4.psv", [[65, "NaN", 2, 0], [66, 1.5, 8, 0]])
    t = sepsis.read(d, PN_MAP, ["heart_rate", "lactate"])
    assert t.ids == ["p1", "p4"] and t.dropped_early == ["p2"] and t.dropped_empty == ["p3"]
    np.testing.assert_array_equal(t.x, [[90, 2.5], [66, 1.5]])  # hour 9's NaN and hour 10's values are not taken
    np.testing.assert_array_equal(t.y, [1, 0])  # any SepsisLabel = 1 over the stay
    kept = sepsis.read(d, PN_MAP, ["heart_rate", "lactate"], drop_early=False)
    assert "p2" in kept.ids and kept.y[kept.ids.index("p2")] == 1


def _csv(path, header, rows):
    path.write_text(",".join(header) + "\n" + "\n".join(",".join(map(str, r)) for r in rows) + "\n")


def test_bad_tables_name_file_and_fix(tmp_path):
    f = tmp_path / "t.csv"
    _csv(f, ["patient_id", "heart_rate", "lactate", "sepsis"], [["a", 80, 1, 0], ["b", 90, 2, 2], ["c", 70, 1, 1]])
    with pytest.raises(DataError, match=r"t\.csv: label column 'sepsis' holds '2' on line 3; labels must be 0 or 1"):
        sepsis.read(f, CSV_MAP, None)
    _csv(f, ["patient_id", "heart_rate", "lactate", "sepsis"], [["a", 80, 1, 0], ["b", 90, 2, 0]])
    with pytest.raises(DataError, match=r"t\.csv: all 2 patients have sepsis = 0") as e:
        sepsis.read(f, CSV_MAP, None)
    assert "both classes" in str(e.value)
    _csv(f, ["patient_id", "heart_rate", "lactate", "sepsis"], [["a", "fast", 1, 0], ["b", 90, 2, 1]])
    with pytest.raises(DataError, match=r"column 'heart_rate' holds 'fast' on line 2, not a number"):
        sepsis.read(f, CSV_MAP, None)
    _csv(f, ["patient_id", "heart_rate", "sepsis"], [["a", 80, 0], ["b", 90, 1]])
    with pytest.raises(DataError, match=r"t\.csv: no column for feature 'lactate'") as e:
        sepsis.read(f, CSV_MAP, ["heart_rate", "lactate"])
    assert "dataset.feature_map" in str(e.value)
    with pytest.raises(DataError, match=r"no column for feature 'lactate' \(nor 'Lact', which m\.yaml maps to it\)"):
        sepsis.read(f, {**CSV_MAP, "Lact": "lactate"}, ["heart_rate", "lactate"], map_name="m.yaml")
    _csv(f, ["HR", "heart_rate", "sepsis"], [[1, 2, 0], [3, 4, 1]])
    with pytest.raises(DataError, match="columns 'heart_rate' and 'HR' both give 'heart_rate'"):
        sepsis.read(f, PN_MAP, ["heart_rate"])
    with pytest.raises(DataError, match="internal data not found"):
        sepsis.read(tmp_path / "nope.csv", CSV_MAP, None)


def test_bad_timeline_label_names_the_file(tmp_path):
    d = tmp_path / "tl"
    d.mkdir()
    _timeline(d / "p1.psv", [[80, 1, 1, 0], [80, 1, 2, 0]])
    _timeline(d / "p2.psv", [[80, 1, 1, 0], [80, 1, 2, 3]])
    with pytest.raises(DataError, match=r"p2\.psv: label column 'SepsisLabel' holds '3' on line 3"):
        sepsis.read(d, PN_MAP, ["heart_rate"])


def test_feature_map_file(tmp_path):
    f = tmp_path / "map.yaml"
    f.write_text("HR: heart_rate\nLact: lactate\n")
    assert sepsis.read_feature_map(f) == {"HR": "heart_rate", "Lact": "lactate"}
    f.write_text("- HR\n- heart_rate\n")
    with pytest.raises(DataError, match="expected a mapping"):
        sepsis.read_feature_map(f)
    with pytest.raises(DataError, match="feature map not found"):
        sepsis.read_feature_map(tmp_path / "none.yaml")
