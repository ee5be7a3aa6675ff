"""fusing-forces: simulated interactions per second (issue 19, "the fusing-forces simulation interactions/s").

One interaction of the whole-mirror loop (``pipelines/fusing_forces/simulate.py``) is: the error maps and skeleton
segments of the chosen patch (Alg. 2–3: two skeletonisations, a dilation, a labelling), two simulated strokes (add
and erase), and one f_iter forward pass over the two candidates, plus pFM counts. This times those parts on
patches of the ETMIRA fixture at two sizes — 64² with the fixture's network (EfficientNet-B0, small decoder) and
256² with the paper's (EfficientNet-B6, decoder 256…16), random weights — and reports interactions/s as
1 / (stroke time + forward time). Single process, torch threads as set (default 1). The end-to-end rate of a real
``simulate`` run is in its metrics (``interactions_per_sec``).
"""

from __future__ import annotations

import os
import platform
import sys
import tempfile
from pathlib import Path

import _timing
import numpy as np
import torch
import torch.nn.functional as F

from medrun.datasets import etmira
from medrun.pipelines.fusing_forces import interaction as I
from medrun.pipelines.fusing_forces import pipeline as P
from medrun.pipelines.fusing_forces.config import Model

REPEATS = int(os.environ.get("BENCH_REPEATS", 3))
N = int(os.environ.get("BENCH_PATCHES", 8))


def main() -> None:
    torch.set_num_threads(int(os.environ.get("BENCH_THREADS", 1)))
    with tempfile.TemporaryDirectory() as tmp:
        side = etmira.sides(etmira.fixture(Path(tmp), 0))[0]
        _, gt, _, _ = etmira.load(side)
    print(f"machine: {platform.machine()}, {os.cpu_count()} CPU cores, load {os.getloadavg()[0]:.1f}, "
          f"torch {torch.__version__} ({torch.get_num_threads()} thread), Python {sys.version.split()[0]}")
    rng = np.random.default_rng(0)
    print("| patch (network input) | network | strokes: s/interaction | f_iter (2 candidates): s | interactions/s |")
    print("|---|---|---|---|---|")
    for size, mm in ((64, Model(backbone="efficientnet-b0", decoder_channels=(64, 32, 16, 16, 8))), (256, Model())):
        crops = [gt[y:y + 64, x:x + 64] for y, x in ((96, 128), (128, 192), (160, 224), (128, 128))] * (N // 4)
        g = [(F.interpolate(torch.from_numpy(c.astype(np.float32))[None, None], size=(size, size)) > 0.5)[0, 0]
             .numpy() for c in crops]
        skels = [I.skel(a) for a in g]
        ys = [np.roll(a, 3, 1) | np.roll(s, 20, 0) for a, s in zip(g, skels, strict=True)]  # a shifted, noisy mask
        w = 3.2 * size / 512

        def strokes(ys=ys, skels=skels, size=size, w=w):
            for y, s in zip(ys, skels, strict=True):
                segs = I.candidates(y, s, round(9 * size / 512))
                for op in ("add", "erase"):
                    I.simulate(y, s, np.zeros(y.shape, np.int8), rng, w, policy=op, segs=segs)

        net = P.build_unet(mm, 3).eval()
        x = torch.randn(2, 3, size, size)

        def forward(net=net, x=x):
            with torch.no_grad():
                net(x)

        t_s = _timing.best(strokes, REPEATS) / len(ys)
        t_f = _timing.best(forward, REPEATS, warmup=True)
        print(f"| {size}² | {mm.backbone} | {t_s:.4f} | {t_f:.4f} | {1 / (t_s + t_f):.2f} |")


if __name__ == "__main__":
    main()
