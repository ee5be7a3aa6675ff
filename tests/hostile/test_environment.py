"""Environment and argument failures as a user meets them: a trainer setting Lightning refuses (exit 2) or hardware
the machine lacks (exit 4) stops the command before any run directory exists; a file-size limit, a full disk, or a
read-only cache or export folder gives exit 4 with the path and no traceback, and the run is never left complete."""

from __future__ import annotations

import contextlib
import json
import os
import resource
import signal
import subprocess
from pathlib import Path
from types import SimpleNamespace

import pytest

TRAIN = ("train", "ad-lite", "--dataset", "oasis", "--fixture", "-o", "train.epochs=1", "-o", "dataset.img_size=32")


@pytest.fixture(scope="module", autouse=True)
def _fixture_ready():
    """Generate the oasis fixture once in the session cache, so limits below hit the run, not the generator."""
    from medrun.pipelines.runner import fixture_root

    fixture_root("oasis", log=lambda *_: None)


def _runs(runs: Path) -> list[Path]:
    return sorted(runs.glob("*/*-*")) if runs.exists() else []


@pytest.mark.parametrize(("args", "code", "needle"), [
    (("--precision", "bogus"), 2, "bogus"),
    (("--devices", "abc"), 2, "devices"),
    (("--strategy", "nonsense"), 2, "nonsense"),
    (("--accelerator", "gpu"), 4, "gpu"),
])
def test_bad_trainer_settings_stop_before_the_run_exists(args, code, needle, tmp_path, cli, one_line_error):
    """In-process (``cli`` runs ``main`` as the command does): a subprocess would spend its time importing
    Lightning four times over."""
    if args[1] == "gpu":
        import torch

        if torch.cuda.is_available():
            pytest.skip("this machine has a GPU")
    runs = tmp_path / "runs"
    r = cli(*TRAIN, *args, "--runs-dir", runs)
    one_line_error(SimpleNamespace(returncode=r.code, stderr=r.err), code, needle)
    assert _runs(runs) == []


def test_fixture_with_data_dir_is_refused(tmp_path, medrun_proc, one_line_error):
    one_line_error(medrun_proc(*TRAIN, "--data-dir", tmp_path), 2, "--fixture", "--data-dir", "drop")


def _fsize_limit(limit: int):
    def apply():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # so the write fails with EFBIG instead of killing the process
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    return apply


def _assert_failed_not_complete(run: Path) -> None:
    assert not (run / "MANIFEST.sha256").exists()
    assert json.loads((run / "run.json").read_text())["status"] != "complete"
    assert not list(run.rglob("*.tmp")), "a failed write left its temp file"


def test_file_size_limit_is_an_environment_error(tmp_path, medrun_proc, one_line_error):
    runs = tmp_path / "runs"
    proc = medrun_proc(*TRAIN, "-o", "trainer.checkpoint_every_n_steps=1", env={"MEDRUN_RUNS": str(runs)},
                       preexec=_fsize_limit(256 * 1024))  # the run's small files fit, its first checkpoint does not
    one_line_error(proc, 4, "last.ckpt", "file too large")
    (run,) = _runs(runs)
    _assert_failed_not_complete(run)
    assert json.loads((run / "run.json").read_text())["status"] == "failed"


@contextlib.contextmanager
def _read_only(folder: Path):
    """Make ``folder`` unwritable. chmod does that for a normal user; root writes through any mode, so as root the
    folder gets a read-only tmpfs mounted over it (skipped where mounting is not allowed, e.g. an unprivileged
    container)."""
    folder.mkdir(parents=True, exist_ok=True)
    if os.geteuid() != 0:
        folder.chmod(0o555)
        try:
            yield
        finally:
            folder.chmod(0o755)
        return
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=64k", "tmpfs", str(folder)], capture_output=True)
    if mounted.returncode != 0:
        pytest.skip("root ignores chmod, and mounting a read-only tmpfs is not permitted here")
    try:
        yield
    finally:
        subprocess.run(["umount", str(folder)], check=True)


@contextlib.contextmanager
def _small_disk(folder: Path, size: str):
    """A tmpfs of ``size`` at ``folder`` (root only), so writes fail with ENOSPC as on a full disk."""
    folder.mkdir(parents=True, exist_ok=True)
    if os.geteuid() != 0 or subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder)],
                                           capture_output=True).returncode != 0:
        pytest.skip("a small tmpfs needs root and permission to mount")
    try:
        yield
    finally:
        subprocess.run(["umount", str(folder)], check=True)


def test_read_only_cache_is_an_environment_error(tmp_path, medrun_proc, one_line_error):
    cache, runs = tmp_path / "cache", tmp_path / "runs"
    with _read_only(cache):
        proc = medrun_proc(*TRAIN, env={"MEDRUN_CACHE": str(cache), "MEDRUN_RUNS": str(runs)})
    one_line_error(proc, 4, str(cache))
    assert _runs(runs) == []


def test_export_into_a_read_only_folder_is_an_environment_error(tmp_path, medrun_proc, one_line_error):
    from test_replace_guard import trained_run

    runs, run = trained_run()  # reused: the guard tests trained it
    shelf = tmp_path / "shelf"
    with _read_only(shelf):
        proc = medrun_proc("export", run, "--out", shelf / "bundle", env={"MEDRUN_RUNS": str(runs)})
        assert not (shelf / "bundle").exists()
    one_line_error(proc, 4, str(shelf))


def test_full_disk_is_an_environment_error(tmp_path, medrun_proc, one_line_error):
    runs = tmp_path / "runs"
    with _small_disk(
        runs, "1m"
    ):  # run.json and friends fit; a checkpoint with its optimizer state (about 2.8 MB) does not
        proc = medrun_proc(*TRAIN, "-o", "trainer.checkpoint_every_n_steps=1", env={"MEDRUN_RUNS": str(runs)})
        one_line_error(proc, 4, "no space left")
        (run,) = _runs(runs)
        assert not (run / "MANIFEST.sha256").exists()
        assert json.loads((run / "run.json").read_text())["status"] != "complete"
        assert not list(run.rglob("*.tmp"))


def test_a_failed_figure_write_keeps_the_earlier_png(tmp_path, monkeypatch):
    """Figures are rendered to bytes first and then renamed into place: a disk that fills during the write leaves
    the earlier PNG (or none), never a truncated or zero-byte one."""
    import errno

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from medrun.artifacts import rundir
    from medrun.pipelines.report import save_figure

    png = tmp_path / "figures" / "curve.png"
    save_figure(plt.subplots()[0], png)
    before = png.read_bytes()

    def full(*_):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(rundir.os, "fsync", full)
    with pytest.raises(OSError):
        save_figure(plt.subplots()[0], png)
    assert png.read_bytes() == before and sorted(p.name for p in png.parent.iterdir()) == ["curve.png"]
    with pytest.raises(OSError):
        save_figure(plt.subplots()[0], tmp_path / "new" / "x.png")
    assert not any((tmp_path / "new").iterdir())
