import json
import os

import pytest


@pytest.fixture(autouse=True, scope="session")
def _isolated_cache(tmp_path_factory):
    """Fixtures and the stat cache go to a per-session folder, never the user's ~/.cache."""
    os.environ["MEDRUN_CACHE"] = str(tmp_path_factory.mktemp("medrun-cache"))
    os.environ["MEDRUN_PLAIN"] = "1"
    os.environ.pop("MEDRUN_RUNS", None)
    if os.environ.get("PYTEST_XDIST_WORKER"):
        import torch

        torch.set_num_threads(1)  # two workers on two cores
    yield


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
