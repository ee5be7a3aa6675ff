"""A damaged run index (issue 14, item 6): every `runs list` must still answer, rebuilding the index from the
run.json files (or indexing in memory where no file can be written), never crashing."""

import sqlite3

import pytest

from medrun.artifacts.index import COLUMNS, INDEX, SCHEMA_VERSION


@pytest.fixture
def three(runs, data, make_run):
    for i in range(3):
        make_run(runs, data, run_id=f"{i:02d}" * 32, started=f"2026-01-0{i + 1}T00:00:00+0000")
    return runs


def _ids(cli, runs):
    r = cli("runs", "list", "--runs-dir", runs, "--json")
    assert r.code == 0, r.err
    return [x["id"][:2] for x in r.json()["runs"]]


def _sound_on_disk(path):
    db = sqlite3.connect(path)
    try:
        assert db.execute("PRAGMA quick_check").fetchone()[0] == "ok"
        assert db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
        return db.execute("SELECT count(*) FROM runs").fetchone()[0]
    finally:
        db.close()


def test_damaged_pages_behind_an_intact_header(cli, three):
    assert _ids(cli, three) == ["02", "01", "00"]
    path = three / INDEX
    b = bytearray(path.read_bytes())
    mid = len(b) // 2
    b[mid - 256:mid + 256] = b"\xa5" * 512  # the 100-byte header (and user_version) stay intact
    path.write_bytes(bytes(b))
    assert _ids(cli, three) == ["02", "01", "00"]
    assert _sound_on_disk(path) == 3  # rebuilt in place, not just served from memory


def test_other_table_layout_with_the_same_user_version(cli, three):
    path = three / INDEX
    db = sqlite3.connect(path)
    db.execute("CREATE TABLE runs (rel TEXT PRIMARY KEY, id TEXT)")
    db.execute("INSERT INTO runs VALUES ('x/train-1', 'zz')")
    db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
    db.commit()
    db.close()
    assert _ids(cli, three) == ["02", "01", "00"]
    db = sqlite3.connect(path)
    assert tuple(r[1] for r in db.execute("PRAGMA table_info(runs)")) == COLUMNS
    db.close()


def test_unreadable_value_in_a_sound_file(cli, three):
    _ids(cli, three)
    db = sqlite3.connect(three / INDEX)
    db.execute("UPDATE runs SET info = '{not json'")
    db.commit()
    db.close()
    assert _ids(cli, three) == ["02", "01", "00"]


def test_zero_byte_index(cli, three):
    (three / INDEX).write_bytes(b"")
    assert _ids(cli, three) == ["02", "01", "00"]
    assert _sound_on_disk(three / INDEX) == 3


def test_a_directory_where_the_index_should_be(cli, three):
    (three / INDEX).mkdir(parents=True)
    (three / INDEX / "keep.txt").write_text("not medrun's")
    assert _ids(cli, three) == ["02", "01", "00"]  # indexed in memory
    assert (three / INDEX / "keep.txt").read_text() == "not medrun's"
    assert sorted(p.name for p in three.iterdir()) == [INDEX, "ad-lite"]  # no temp file left behind

