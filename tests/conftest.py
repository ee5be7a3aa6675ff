import json
import os

import pytest


@pytest.fixture(autouse=True, scope="session")
def _isolated_cache(tmp_path_factory):
    """Fixtures and the stat cache go to a folder of this test session, never the user's ~/.cache. The xdist workers
    share it (the folder above each worker's own), so each fixture is generated once per session, not once per
    worker: concurrent first use is safe (the fixture cache locks; tests/hostile/test_fixture_race.py)."""
    base = tmp_path_factory.getbasetemp()
    shared = base.parent / "medrun-cache" if os.environ.get("PYTEST_XDIST_WORKER") else base / "medrun-cache"
    shared.mkdir(exist_ok=True)
    os.environ["MEDRUN_CACHE"] = str(shared)
    os.environ["MEDRUN_PLAIN"] = "1"
    os.environ.pop("MEDRUN_RUNS", None)
    if os.environ.get("PYTEST_XDIST_WORKER"):
        import torch

        torch.set_num_threads(1)  # two workers on two cores
    yield


@pytest.fixture
def fixture_copy(tmp_path):
    """``fixture_copy(name)``: a private copy of a dataset's fixture, which is generated once per session into the
    shared cache; for tests that damage or edit the data (copying is much cheaper than generating)."""
    import shutil
    from pathlib import Path

    def make(name: str, seed: int = 0) -> Path:
        from medrun.pipelines.runner import fixture_root

        src = fixture_root(name, seed, log=lambda *a, **k: None)
        return Path(shutil.copytree(src, tmp_path / f"{name}-seed{seed}", symlinks=True))

    return make


@pytest.fixture
def unlabelled_images(tmp_path):
    """A folder of new, unlabelled files as a clinic exports them, from the session's own-images fixture (the one
    ``--dataset imagefolder --fixture`` trains on): a DICOM of the ``right`` class, a 16-bit PNG of the ``left``
    class, and a note that is not an image."""
    import shutil

    from medrun.pipelines.runner import fixture_root

    src = fixture_root("imagefolder", 0, log=lambda *a, **k: None)
    new = tmp_path / "new"
    new.mkdir()
    for f in ("right/right_002.dcm", "left/left_000.png"):
        shutil.copy(src / f, new)
    (new / "notes.txt").write_text("not an image")
    return new


@pytest.fixture
def runs(tmp_path):
    return tmp_path / "runs"


class Result:
    def __init__(self, code, out, err):
        self.code, self.out, self.err = code, out, err

    def json(self):
        return json.loads(self.out)


@pytest.fixture
def cli(capsys):
    """Run ``medrun ARGS`` in-process; returns exit code and captured output."""
    from medrun.cli.main import main

    def run(*args):
        code = main([str(a) for a in args])
        captured = capsys.readouterr()
        return Result(code, captured.out, captured.err)

    return run


def _make_run(runs, data, run_id="ab" * 32, stage="train", mode="content", metrics=None, pipeline="ad-lite",
              status="complete", started="2026-01-01T00:00:00+0000", manifest_text="pipeline: ad-lite\nseed: 1\n"):
    """A sealed run directory made without training (what the runner writes, minus the model), for provenance tests."""
    from medrun.artifacts import RunDir, run_path
    from medrun.artifacts.env import capture_env
    from medrun.artifacts.fingerprint import code_fingerprint, combine, fingerprint_tree

    fp = {"data": fingerprint_tree(data, None, mode)}
    rd = RunDir(run_path(runs, pipeline, stage, run_id)).open()
    rd.write_text("manifest.yaml", manifest_text)
    rd.write_json("env.json", capture_env())
    rd.write_json("data.lock.json", {"fingerprint": combine(fp), "trees": fp, "splits": {}})
    rd.write_json("run.json", {"id": run_id, "pipeline": pipeline, "stage": stage, "status": "running",
                               "dataset": "oasis", "fixture": True, "parent": None, "started": started,
                               "code": code_fingerprint(), "data_sha256": combine(fp), "seed": 1})
    rd.write_json("metrics.json", metrics or {"accuracy": 0.5})
    rd.write_text("checkpoints/model.safetensors", "weights")
    if status == "complete":
        rd.seal()
    else:
        rd.update_info(status=status)
    rd.close()
    return rd.path


@pytest.fixture
def make_run():
    return _make_run


@pytest.fixture
def data(tmp_path):
    """A one-file data folder for runs built with ``make_run``."""
    d = tmp_path / "data"
    d.mkdir()
    (d / "x.txt").write_text("x")
    return d
