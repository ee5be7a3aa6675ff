"""verify without blind spots (issue 14, items 5 and 8): content changed behind a restored mtime, hidden files in a
run or its data, leftover temp files, and a symlink loop in the data folder. Run as a user would: `medrun verify`
in a subprocess against a sealed run directory."""

import json
import os

import pytest

from medrun.artifacts.verify import REHASHED, TRUSTED


@pytest.fixture
def env(tmp_path):
    return {"MEDRUN_CACHE": str(tmp_path / "cache"), "MEDRUN_RUNS": str(tmp_path / "runs")}


@pytest.fixture
def data(tmp_path):
    d = tmp_path / "data"
    (d / "cls").mkdir(parents=True)
    (d / "cls" / "a.png").write_bytes(b"one")
    (d / "b.csv").write_text("x,y\n")
    return d


@pytest.fixture
def run(tmp_path, data, make_run):
    return make_run(tmp_path / "runs", data)


def _tree(proc):
    return json.loads(proc.stdout)["categories"]["data"]["trees"]["data"]


def test_content_changed_with_restored_mtime_is_found(medrun_proc, run, data, env):
    """cp -p / rsync -t / touch -r: same size, same mtime, other bytes. The stat cache alone would say unchanged."""
    first = medrun_proc("verify", run, "--json", env=env)  # fills the stat cache with the true hashes
    assert first.returncode == 0, first.stderr
    assert _tree(first)["check"] == REHASHED
    f = data / "cls" / "a.png"
    st = f.stat()
    f.write_bytes(b"two")  # same size
    os.utime(f, ns=(st.st_atime_ns, st.st_mtime_ns))  # touch -r: mtime restored
    trusted = medrun_proc("verify", run, "--no-rehash", "--json", env=env)
    assert trusted.returncode == 0 and _tree(trusted)["check"] == TRUSTED  # the blind spot, but said out loud
    plain = medrun_proc("verify", run, "--no-rehash", env=env)
    assert "stat cache trusted (use --rehash)" in plain.stdout
    default = medrun_proc("verify", run, env=env)  # small data: re-hashed by default
    assert default.returncode == 5 and "re-hashed" in default.stdout and "changed  cls/a.png" in default.stdout
    forced = medrun_proc("verify", run, "--rehash", "--json", env=env)
    assert forced.returncode == 5 and _tree(forced)["changed"] == ["cls/a.png"]
    assert json.loads(forced.stdout)["categories"]["data"]["rehash"] is True
    again = medrun_proc("verify", run, "--no-rehash", "--json", env=env)  # the re-hash corrected the cache
    assert again.returncode == 5 and _tree(again)["changed"] == ["cls/a.png"]


def test_large_data_trusts_the_cache_by_default_and_says_so(cli, run, monkeypatch):
    import medrun.artifacts.verify as v

    monkeypatch.setattr(v, "REHASH_MAX_BYTES", 1)
    r = cli("verify", run, "--json")
    assert r.code == 0 and r.json()["categories"]["data"]["check"] == TRUSTED
    assert cli("verify", run, "--rehash", "--json").json()["categories"]["data"]["check"] == REHASHED


def test_hidden_file_added_to_a_run_fails(medrun_proc, run, env, one_line_error):
    (run / "checkpoints" / ".evil.safetensors").write_bytes(b"not the weights")
    (run / ".hidden.json").write_text("{}")
    proc = medrun_proc("verify", run, "--json", env=env)
    assert proc.returncode == 5
    assert json.loads(proc.stdout)["categories"]["artifacts"]["added"] == [
        ".hidden.json",
        "checkpoints/.evil.safetensors",
    ]
    one_line_error(medrun_proc("verify", run, env=env), 5, "added", "checkpoints/.evil.safetensors")


def test_lock_is_exempt_and_a_temp_file_in_a_sealed_run_warns(medrun_proc, run, env):
    assert (run / ".lock").exists()
    (run / "checkpoints" / ".last.ckpt.tmp").write_bytes(b"half")
    proc = medrun_proc("verify", run, env=env)
    assert proc.returncode == 0, proc.stderr
    assert "warning: temporary file in a sealed run" in proc.stdout and "checkpoints/.last.ckpt.tmp" in proc.stdout
    strict = medrun_proc("verify", run, "--strict", env=env)
    assert strict.returncode == 5 and "temporary files in a sealed run" in strict.stderr


def test_signature_file_is_not_an_added_artifact(medrun_proc, run, env):
    (run / "MANIFEST.sha256.sig").write_text("-----BEGIN SSH SIGNATURE-----\n")
    proc = medrun_proc("verify", run, "--json", env=env)
    assert proc.returncode == 0, proc.stdout
    assert json.loads(proc.stdout)["signature"]["status"] == "unchecked"


def test_hidden_files_in_data_are_a_warning(medrun_proc, run, data, env):
    """The data fingerprint skips hidden names on purpose (.DS_Store must not change run ids, and the readers skip
    them); verify still names every one it finds, as a warning, and --strict fails on them."""
    (data / "cls" / ".evil.png").write_bytes(b"x")
    (data / ".cache").mkdir()
    (data / ".cache" / "many").write_text("y")
    proc = medrun_proc("verify", run, "--json", env=env)
    assert proc.returncode == 0, proc.stderr
    assert _tree(proc)["hidden"] == [".cache/", "cls/.evil.png"]
    plain = medrun_proc("verify", run, env=env)
    assert "warning: hidden, not fingerprinted: cls/.evil.png" in plain.stdout
    strict = medrun_proc("verify", run, "--strict", env=env)
    assert strict.returncode == 5 and "hidden files: .cache/, cls/.evil.png" in strict.stderr


def test_symlink_loop_in_data_fails_verify_naming_the_link(medrun_proc, run, data, env):
    (data / "cls" / "loop").symlink_to(data)
    proc = medrun_proc("verify", run, env=env)
    assert proc.returncode == 5, proc.stderr
    assert "Traceback" not in proc.stderr and "loop" in proc.stderr and str(data / "cls" / "loop") in proc.stderr


# -- the data walk (item 8): loops are an error, other links are followed --------------------------------------
def test_symlink_loop_in_data_folder_exits_3_naming_the_link(medrun_proc, tmp_path, env, one_line_error):
    out = tmp_path / "oasis"
    made = medrun_proc("fixture", "oasis", "--out", out, env=env)
    assert made.returncode == 0, made.stderr
    root = next(p.parent for p in out.rglob("*.jpg")).parent  # the folder holding the class folders
    link = next(p for p in root.iterdir() if p.is_dir()) / "again"
    link.symlink_to(root)
    proc = medrun_proc("train", "ad-lite", "--dataset", "oasis", "--data-dir", root, env=env)
    one_line_error(proc, 3, "symlink loop", str(link))
    assert not (tmp_path / "runs").exists()  # refused before a run directory was made


def test_links_to_folders_elsewhere_are_followed(tmp_path):
    from medrun.artifacts.fingerprint import fingerprint_tree

    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "o.txt").write_text("o")
    d = tmp_path / "d"
    d.mkdir()
    (d / "one").symlink_to(outside)
    (d / "two").symlink_to(outside)  # the same folder twice is no loop
    assert sorted(fingerprint_tree(d, None)["files"]) == ["one/o.txt", "two/o.txt"]


def test_data_lock_of_another_shape_fails_without_a_traceback(medrun_proc, run, env, one_line_error):
    (run / "data.lock.json").write_text('{"trees": {"data": {"root": "/", "files": {"a": "x"}}}}')
    one_line_error(medrun_proc("verify", run, env=env), 5, "data.lock.json")
