"""Signatures over MANIFEST.sha256 with a user's SSH key (``ssh-keygen -Y sign`` / ``-Y verify``, namespace
``medrun``), for labs that need to know *who* sealed a run.

Why: MANIFEST.sha256 catches accidents and edits that leave it alone, but anyone who can write the run directory
can rewrite it after changing a file. A signature made with a key the tamperer does not hold closes that gap: verify
with ``--signers`` checks it against an OpenSSH allowed-signers file (``principal namespaces="medrun" <public key>``
per line). OpenSSH ≥ 8.2 is used as it is installed; medrun keeps no keys and no crypto of its own.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

from medrun.errors import EnvError, UsageError, VerifyError

from .rundir import MANIFEST, SIGNATURE, RunDir, atomic_write

NAMESPACE = "medrun"


def _ssh_keygen() -> str:
    exe = shutil.which("ssh-keygen")
    if exe is None:
        raise EnvError("ssh-keygen not found, which signs and checks run signatures",
                       fix="install OpenSSH 8.2 or later (apt install openssh-client, brew install openssh)")
    return exe


def _last_line(text: str) -> str:
    lines = [ln.strip() for ln in text.splitlines() if ln.strip() and not ln.startswith("Signing data on")]
    return lines[-1] if lines else "no message"


def sign(run: RunDir, key: Path) -> Path:
    """Write ``MANIFEST.sha256.sig`` beside MANIFEST.sha256, signed with ``key`` (a private key, or a public key
    whose private half is in ssh-agent). Refuses a run that is not complete or no longer verifies."""
    from .verify import check_artifacts

    if not run.is_complete():
        raise UsageError(f"run {run.path} is not complete, so there is no MANIFEST.sha256 to sign",
                         fix="finish it first with the command in its run.json")
    if not Path(key).is_file():
        raise UsageError(f"key file not found: {key}", file=key, fix="pass a private key, e.g. --key ~/.ssh/id_ed25519")
    a = check_artifacts(run)
    if a["status"] != "ok":
        raise VerifyError(f"run {run.path} does not match its MANIFEST.sha256 "
                          f"({len(a['changed'])} changed, {len(a['removed'])} removed, {len(a['added'])} added)",
                          fix="run `medrun verify` to see what; a run that does not verify is not signed")
    proc = subprocess.run([_ssh_keygen(), "-Y", "sign", "-f", str(key), "-n", NAMESPACE],
                          input=(run.path / MANIFEST).read_bytes(), capture_output=True, timeout=120)
    if proc.returncode != 0:
        raise UsageError(f"ssh-keygen could not sign with {key}: {_last_line(proc.stderr.decode(errors='replace'))}",
                         file=key, fix="pass a private key without a passphrase, or load it into ssh-agent and pass "
                                       "its .pub file")
    atomic_write(run.path / SIGNATURE, proc.stdout)
    return run.path / SIGNATURE


def verify(run: RunDir, signers: Path) -> dict:
    """{"status": "ok", "principals": [...]} when MANIFEST.sha256.sig is a good ``medrun`` signature over
    MANIFEST.sha256 by a key in the allowed-signers file; otherwise {"status": "fail", "problem": ...}."""
    signers = Path(signers)
    if not signers.is_file():
        raise UsageError(f"allowed-signers file not found: {signers}", file=signers,
                         fix='one line per signer: principal namespaces="medrun" ssh-ed25519 AAAA…')
    sig = run.path / SIGNATURE
    if not sig.exists():
        return {"status": "fail", "problem": f"{sig.name} is missing: the run is not signed",
                "fix": "sign it with `medrun sign RUN --key KEY`"}
    exe = _ssh_keygen()
    found = subprocess.run([exe, "-Y", "find-principals", "-s", str(sig), "-f", str(signers)], capture_output=True,
                           text=True, timeout=60)
    principals = found.stdout.split()
    if found.returncode != 0 or not principals:
        return {"status": "fail", "problem": f"{sig.name} was made by a key that is not in {signers}"}
    check = subprocess.run([exe, "-Y", "verify", "-f", str(signers), "-I", principals[0], "-n", NAMESPACE, "-s",
                            str(sig)], input=(run.path / MANIFEST).read_bytes(), capture_output=True, timeout=60)
    if check.returncode != 0:
        why = _last_line(check.stderr.decode(errors="replace") + check.stdout.decode(errors="replace"))
        return {"status": "fail", "problem": f"{sig.name} does not match MANIFEST.sha256 ({why})",
                "principals": principals}
    return {"status": "ok", "principals": principals}
