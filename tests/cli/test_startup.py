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
])
def test_no_heavy_imports(argvs, tmp_path):
    out = subprocess.run([sys.executable, "-c", CHECK.format(argvs=argvs)], capture_output=True, text=True,
                         cwd=tmp_path, env={"MEDRUN_CACHE": str(tmp_path / "c"), "PATH": "/usr/bin:/bin"})
    assert out.returncode == 0, out.stderr
    codes, heavy = out.stdout.strip().splitlines()[-1].rsplit("] ", 1)
    assert heavy == "[]", f"{argvs} imported {heavy}"
    assert set(eval(codes + "]")) == {0}
