"""medrun verify: artifacts, data, code and environment checks on hand-made runs and on a real fixture train run."""

import json
import shutil

import pytest

from medrun.artifacts import RunDir
from medrun.artifacts.verify import verify_run


@pytest.fixture
def data(tmp_path):
    d = tmp_path / "data"
    (d / "a").mkdir(parents=True)
    (d / "a" / "1.png").write_bytes(b"one")
    (d / "b.csv").write_text("x,y\n")
    return d


@pytest.fixture
def run(runs, data, make_run):
    return make_run(runs, data)


def cats(report):
    return report["categories"]


def test_intact_run_verifies(cli, run, runs):
    r = cli("verify", run, "--json")
    assert r.code == 0, r.err
    out = r.json()
    assert out["ok"] and {c: v["status"] for c, v in out["categories"].items()} == {
        "artifacts": "ok", "data": "ok", "code": "ok", "environment": "ok"}
    assert cli("verify", "abab", "--runs-dir", runs).code == 0  # by id prefix


def test_tampered_artifact_exit_5_names_it(cli, run):
    before = (run / "MANIFEST.sha256").read_text()
    (run / "metrics.json").write_text('{"accuracy": 0.99}\n')
    r = cli("verify", run)
    assert r.code == 5
    assert "metrics.json" in r.err and "changed" in r.err
    assert "changed  metrics.json" in r.out
    assert (run / "MANIFEST.sha256").read_text() == before  # verify alters nothing


def test_removed_and_added_artifacts(cli, run):
    (run / "checkpoints" / "model.safetensors").unlink()
    (run / "figures" / "extra.png").write_bytes(b"x")
    out = cli("verify", run, "--json")
    assert out.code == 5
    a = out.json()["categories"]["artifacts"]
    assert a["removed"] == ["checkpoints/model.safetensors"] and a["added"] == ["figures/extra.png"]


def test_changed_added_removed_data(cli, run, data):
    (data / "a" / "1.png").write_bytes(b"ONE")
    (data / "new.txt").write_text("n")
    (data / "b.csv").unlink()
    r = cli("verify", run, "--json")
    assert r.code == 5
    t = r.json()["categories"]["data"]["trees"]["data"]
    assert (t["changed"], t["added"], t["removed"]) == (["a/1.png"], ["new.txt"], ["b.csv"])
    assert "a/1.png" in r.err


def test_stat_mode_data_change(cli, runs, data, make_run):
    run = make_run(runs, data, mode="stat")
    (data / "b.csv").write_text("x,y,z\n")
    r = cli("verify", run, "--json")
    assert r.code == 5 and r.json()["categories"]["data"]["trees"]["data"]["changed"] == ["b.csv"]


def test_data_folder_gone_is_a_clear_failure(cli, run, data):
    shutil.rmtree(data)
    r = cli("verify", run)
    assert r.code == 5
    assert f"folder {data.resolve()} is gone" in r.err and "Traceback" not in r.err


def test_env_drift_warns_and_strict_fails(cli, run):
    env = json.loads((run / "env.json").read_text())
    env["packages"]["numpy"] = "0.0.1"
    env["packages"]["some-old-package"] = "1.0"
    env["python"] = "3.0.0"
    (run / "env.json").write_text(json.dumps(env))
    # env.json is itself an artifact: re-seal its hash so only the environment check sees the edit
    lines = (run / "MANIFEST.sha256").read_text().splitlines()
    from medrun.artifacts import sha256_file

    fixed = [f"{sha256_file(run / 'env.json')}  env.json" if line.endswith("  env.json") else line for line in lines]
    (run / "MANIFEST.sha256").write_text("\n".join(fixed) + "\n")
    r = cli("verify", run, "--json")
    assert r.code == 0, r.err
    diffs = {d["key"]: d for d in r.json()["categories"]["environment"]["differences"]}
    assert diffs["packages.numpy"]["recorded"] == "0.0.1" and diffs["packages.some-old-package"]["current"] is None
    assert diffs["python"]["recorded"] == "3.0.0"
    plain = cli("verify", run)
    assert plain.code == 0 and "packages.numpy: 0.0.1 ->" in plain.out and "warning" in plain.out
    strict = cli("verify", run, "--strict")
    assert strict.code == 5 and "environment differs" in strict.err


def test_code_drift_warns_and_strict_fails(cli, run):
    info = json.loads((run / "run.json").read_text())
    info["code"]["sha256"] = "0" * 64
    (run / "run.json").write_text(json.dumps(info))
    rd = RunDir(run)
    rd.seal()  # a legitimately sealed run from other code
    r = cli("verify", run, "--json")
    assert r.code == 0 and r.json()["categories"]["code"]["status"] == "drift"
    assert cli("verify", run, "--strict").code == 5


def test_incomplete_run_exit_2(cli, runs, data, make_run):
    run = make_run(runs, data, status="running")
    r = cli("verify", run)
    assert r.code == 2 and "not complete" in r.err and "status: running" in r.err


def test_half_written_dir_exit_2(cli, tmp_path):
    d = tmp_path / "runs" / "ad-lite" / "train-000000000000"
    d.mkdir(parents=True)
    r = cli("verify", d)
    assert r.code == 2 and "no run.json" in r.err


def test_manifest_lists_gone_files_exit_5(cli, run):
    info = json.loads((run / "run.json").read_text())
    (run / "run.json").write_text(json.dumps({**info, "status": "running"}))
    (run / "metrics.json").unlink()
    r = cli("verify", run)
    assert r.code == 5 and "metrics.json" in r.err


def test_malformed_manifest_exit_5(cli, run):
    (run / "MANIFEST.sha256").write_text("garbage\n")
    r = cli("verify", run)
    assert r.code == 5 and "malformed" in r.err


def test_unknown_and_ambiguous_ids(cli, runs, data, make_run):
    make_run(runs, data, run_id="abc1" + "0" * 60)
    make_run(runs, data, run_id="abc2" + "0" * 60)
    none = cli("verify", "ffff", "--runs-dir", runs)
    assert none.code == 2 and "no run matches 'ffff'" in none.err
    many = cli("verify", "abc", "--runs-dir", runs)
    assert many.code == 2 and "matches 2 runs" in many.err


def test_verify_report_without_cli(run):
    report = verify_run(RunDir(run))
    assert cats(report)["artifacts"]["files"] == len(RunDir(run).files())


@pytest.mark.slow
def test_real_train_run_verifies_and_detects_tampered_weights(cli, tmp_path_factory):
    runs = tmp_path_factory.mktemp("verify-real") / "runs"
    r = cli("train", "ad-lite", "--dataset", "oasis", "--fixture", "--runs-dir", runs, "--json")
    assert r.code == 0, r.err
    run = runs / "ad-lite" / f"train-{r.json()['run_id'][:12]}"
    ok = cli("verify", run, "--strict", "--json")
    assert ok.code == 0, ok.out + ok.err
    with open(run / "checkpoints" / "model.safetensors", "r+b") as f:
        f.seek(-1, 2)
        last = f.read(1)
        f.seek(-1, 2)
        f.write(bytes([last[0] ^ 1]))
    bad = cli("verify", r.json()["run_id"][:8], "--runs-dir", runs)
    assert bad.code == 5 and "checkpoints/model.safetensors" in bad.err
