"""--help, list, show and validate must not import torch, Lightning or MONAI (checked in a fresh interpreter)."""

import subprocess
import sys

import pytest

from medrun.manifests import MANIFEST_DIR

CHECK = """
import sys
from medrun.cli.main import main
codes = [main(a) for a in {argvs!r}]
heavy = sorted(m for m in ("torch", "lightning", "monai", "pytorch_lightning", "torchmetrics") if m in sys.modules)
print(codes, heavy)
"""


@pytest.mark.parametrize("argvs", [
    [["--help"]],
    [["list"], ["list", "--json"]],
    [["show", "ad-lite", "--dataset", "oasis"], ["show", "ad-lite", "--schema"]],
    [["validate", str(MANIFEST_DIR / "ad-lite" / "oasis.yaml")]],
    [["train", "--help"], ["eval", "--help"]],
    [["verify", "--help"], ["runs", "--help"], ["runs", "list"], ["runs", "list", "--json"], ["rerun", "--help"]],
])
def test_no_heavy_imports(argvs, tmp_path):
    out = subprocess.run([sys.executable, "-c", CHECK.format(argvs=argvs)], capture_output=True, text=True,
                         cwd=tmp_path, env={"MEDRUN_CACHE": str(tmp_path / "c"), "PATH": "/usr/bin:/bin"})
    assert out.returncode == 0, out.stderr
    codes, heavy = out.stdout.strip().splitlines()[-1].rsplit("] ", 1)
    assert heavy == "[]", f"{argvs} imported {heavy}"
    assert set(eval(codes + "]")) == {0}


PROVENANCE = """
import sys
sys.path.insert(0, {tests!r})
from conftest import _make_run
from pathlib import Path
data = Path("data"); data.mkdir(); (data / "x.txt").write_text("x")
a = _make_run(Path("runs"), data, run_id="aa" * 32)
b = _make_run(Path("runs"), data, run_id="bb" * 32)
from medrun.cli.main import main
codes = [main(a) for a in (["verify", str(a)], ["verify", "aa", "--strict", "--json"], ["runs", "list"],
                           ["runs", "show", "aa"], ["runs", "diff", "aa", "bb"], ["runs", "compare", "aa", "bb"])]
heavy = sorted(m for m in ("torch", "lightning", "monai", "pytorch_lightning", "torchmetrics") if m in sys.modules)
print(codes, heavy)
"""


def test_provenance_commands_on_a_run_import_nothing_heavy(tmp_path):
    """verify and runs list/show/diff/compare on a real run directory stay light (rerun is the one that may not)."""
    from pathlib import Path

    tests = str(Path(__file__).resolve().parents[1])
    out = subprocess.run([sys.executable, "-c", PROVENANCE.format(tests=tests)], capture_output=True, text=True,
                         cwd=tmp_path, env={"MEDRUN_CACHE": str(tmp_path / "c"), "PATH": "/usr/bin:/bin"})
    assert out.returncode == 0, out.stderr
    codes, heavy = out.stdout.strip().splitlines()[-1].rsplit("] ", 1)
    assert heavy == "[]", heavy
    assert set(eval(codes + "]")) == {0}, out.stdout + out.stderr
