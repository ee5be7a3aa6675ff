"""superpixel-label: annotation images/s per superpixel method (issue 19, "superpixel annotation images/s per
superpixel method").

The isic2018 fixture lesions (generated into a temp folder) resized to 256×256, the paper's size, with the paper's
settings (800 superpixels, compactness 10): for each method, the superpixels alone, then the whole annotation of one
image (superpixels + simulated sparse labels + the nofill, dist and rw fills), best of ``BENCH_REPEATS`` passes over
``BENCH_IMAGES`` images. SEEDS runs only where OpenCV's contrib module is installed; SNIC is ``pysnic`` when it is
installed, else the SNIC-like compact watershed (the table says which). Single process.
"""

from __future__ import annotations

import os
import platform
import sys
import tempfile
from pathlib import Path

import _timing
import numpy as np

from medrun.datasets import isic2018
from medrun.pipelines.superpixel_label import method as M

N = int(os.environ.get("BENCH_IMAGES", 4))
REPEATS = int(os.environ.get("BENCH_REPEATS", 2))
SIZE = 256


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        root = isic2018.fixture(Path(tmp), 0, n=N, size=SIZE)
        pairs = [isic2018.load(c, SIZE) for c in isic2018.read(root)]
    p = M.Params(n_segments=800, compactness=10)
    print(f"machine: {platform.machine()}, {os.cpu_count()} CPU cores, load {os.getloadavg()[0]:.1f}, numpy "
          f"{np.__version__}, Python {sys.version.split()[0]}; {N} RGB images of {SIZE}×{SIZE}, 800 superpixels")
    print("| method | superpixels s/image | images/s | + sparse labels + nofill/dist/rw s/image | images/s | "
          "dist-fill M/N |")
    print("|---|---|---|---|---|---|")
    from dataclasses import replace

    runs = [("slic", p), ("seeds", p), ("snic", p), ("snic", replace(p, snic_impl="watershed"))]
    seen = set()
    for meth, p in runs:
        if meth == "seeds" and not M.seeds_available():
            print("| seeds | — | — | — | — | needs opencv-contrib-python-headless |")
            continue
        name = f"snic ({M.snic_backend(p)})" if meth == "snic" else meth
        if name in seen:  # pysnic missing: auto is the watershed already
            continue
        seen.add(name)
        t_sp = _timing.best(lambda m=meth, p=p: [M.superpixels(img, m, p) for img, _ in pairs], REPEATS) / N
        t_all = _timing.best(lambda m=meth, p=p: [M.annotate(img, gt, m, M.FILLS, p) for img, gt in pairs],
                             REPEATS) / N
        stats = [M.gap_stats(r["sparse"], r["dist"], gt) for r, (img, gt) in
                 zip((M.annotate(img, gt, meth, ("dist",), p) for img, gt in pairs), pairs, strict=True)]
        ratio = sum(s["M"] for s in stats) / max(1, sum(s["N"] for s in stats))
        print(f"| {name} | {t_sp:.3f} | {1 / t_sp:.1f} | {t_all:.3f} | {1 / t_all:.2f} | {ratio:.3f} |")
    p = M.Params()
    t_rw = _timing.best(lambda: [M.fill(M.sparse_labels(M.superpixels(img, "slic", p), gt), "rw", img, 130.0)
                                 for img, gt in pairs], REPEATS) / N
    print(f"\nrandom-walker fill alone (SLIC gap, incl. SLIC): {t_rw:.3f} s/image")


if __name__ == "__main__":
    main()
