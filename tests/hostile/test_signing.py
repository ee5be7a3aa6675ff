"""Signed runs (issue 14, Tests): MANIFEST.sha256 catches edits that leave it alone; a tamperer who rewrites it is
caught only by a signature. `medrun sign` / `medrun verify --signers` with throwaway ed25519 keys."""

import json
import shutil
import subprocess

import pytest

from medrun.artifacts import sha256_file

pytestmark = pytest.mark.skipif(shutil.which("ssh-keygen") is None, reason="ssh-keygen (OpenSSH) is not installed")


@pytest.fixture
def env(tmp_path):
    return {"MEDRUN_CACHE": str(tmp_path / "cache"), "MEDRUN_RUNS": str(tmp_path / "runs")}


@pytest.fixture
def keys(tmp_path):
    """alice (in the allowed-signers file) and mallory (not), both without a passphrase."""
    d = tmp_path / "keys"
    d.mkdir()
    for who in ("alice", "mallory"):
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", who, "-f", str(d / who)], check=True)
    pub = (d / "alice.pub").read_text().split()
    (d / "allowed_signers").write_text(f'alice@lab namespaces="medrun" {pub[0]} {pub[1]}\n')
    return d


@pytest.fixture
def run(tmp_path, data, make_run):
    return make_run(tmp_path / "runs", data)


def _verify(medrun_proc, run, keys, env):
    return medrun_proc("verify", run, "--signers", keys / "allowed_signers", "--json", env=env)


def test_good_signature_passes_and_sig_is_not_an_artifact(medrun_proc, run, keys, env):
    signed = medrun_proc("sign", run, "--key", keys / "alice", env=env)
    assert signed.returncode == 0, signed.stderr
    assert (run / "MANIFEST.sha256.sig").read_text().startswith("-----BEGIN SSH SIGNATURE-----")
    ok = _verify(medrun_proc, run, keys, env)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    report = json.loads(ok.stdout)
    assert report["signature"] == {"status": "ok", "principals": ["alice@lab"]}
    assert report["categories"]["artifacts"]["added"] == []
    plain = medrun_proc("verify", run, env=env)
    assert plain.returncode == 0 and "present, not checked (use --signers FILE)" in plain.stdout


def test_rewritten_manifest_passes_plain_verify_but_fails_the_signature(medrun_proc, run, keys, env, one_line_error):
    assert medrun_proc("sign", run, "--key", keys / "alice", env=env).returncode == 0
    (run / "metrics.json").write_text('{"accuracy": 0.99}\n')  # the tamperer edits a file and re-seals it
    lines = [f"{sha256_file(run / 'metrics.json')}  metrics.json" if ln.endswith("  metrics.json") else ln
             for ln in (run / "MANIFEST.sha256").read_text().splitlines()]
    (run / "MANIFEST.sha256").write_text("\n".join(lines) + "\n")
    assert medrun_proc("verify", run, env=env).returncode == 0  # what verify alone does not promise
    bad = _verify(medrun_proc, run, keys, env)
    assert bad.returncode == 5 and json.loads(bad.stdout)["signature"]["status"] == "fail"
    one_line_error(medrun_proc("verify", run, "--signers", keys / "allowed_signers", env=env), 5,
                   "signature", "does not match MANIFEST.sha256")


def test_wrong_signer_and_unsigned_run_fail(medrun_proc, run, keys, env, one_line_error):
    unsigned = medrun_proc("verify", run, "--signers", keys / "allowed_signers", env=env)
    one_line_error(unsigned, 5, "not signed")
    assert medrun_proc("sign", run, "--key", keys / "mallory", env=env).returncode == 0
    wrong = medrun_proc("verify", run, "--signers", keys / "allowed_signers", env=env)
    one_line_error(wrong, 5, "not in", "allowed_signers")


def test_sign_refuses_a_run_that_does_not_verify_or_is_incomplete(medrun_proc, run, keys, env, one_line_error,
                                                                  tmp_path, data, make_run):
    (run / "metrics.json").write_text("{}")
    one_line_error(medrun_proc("sign", run, "--key", keys / "alice", env=env), 5, "does not match")
    assert not (run / "MANIFEST.sha256.sig").exists()
    running = make_run(tmp_path / "runs", data, run_id="cd" * 32, status="running")
    one_line_error(medrun_proc("sign", running, "--key", keys / "alice", env=env), 2, "not complete")
    one_line_error(medrun_proc("sign", run, "--key", keys / "nobody", env=env), 2, "key file not found")


def test_reopening_a_signed_run_drops_its_signature(medrun_proc, run, keys, env):
    """A run reopened to resume or --force is no longer complete, and no longer signed either."""
    from medrun.artifacts import RunDir

    assert medrun_proc("sign", run, "--key", keys / "alice", env=env).returncode == 0
    RunDir(run).open().close()
    assert not (run / "MANIFEST.sha256").exists() and not (run / "MANIFEST.sha256.sig").exists()


def test_fixture_marker_is_not_a_hidden_data_file(tmp_path):
    from medrun.artifacts.fingerprint import hidden_entries

    (tmp_path / ".medrun-fixture.json").write_text("{}")
    (tmp_path / ".DS_Store").write_text("")
    assert hidden_entries(tmp_path) == [".DS_Store"]
