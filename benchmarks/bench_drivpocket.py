"""drivpocket: preprocess proteins/s and predict s/protein at the paper's size.

Issue 20: "drivpocket preprocess proteins/s and predict s/protein". Synthetic scPDB entries of about 3,000 heavy atoms
(an scPDB protein's usual size; the fixture generator's blob grown to a 20 Å sphere) are parsed, typed and gridded
(65³ at 0.5 Å, 14 channels, float16 grids + labels) into a cold cache, then found in a warm one. Predict: the card's
full network (44.0 M parameters, random weights, eval mode, float32 on the CPU) on the boxes of one protein: its
top-(n+2) = 3 candidate centres from a CSV (the paper's protocol with one ligand), each box gridded, run, fused by SFM
and segmented; the 8 Å lattice fallback is estimated from the per-box time and the protein's lattice size.
``BENCH_DP_PROTEINS`` (default 4) and ``BENCH_THREADS`` (default 1) change the work.
"""

from __future__ import annotations

import os
import platform
import tempfile
import time
from pathlib import Path

import numpy as np

PROTEINS = int(os.environ.get("BENCH_DP_PROTEINS", 4))
THREADS = int(os.environ.get("BENCH_THREADS", 1))


def big_entry(root: Path, i: int, rng) -> Path:
    from medrun.datasets import binding_sites as bs

    g = np.arange(-21, 21.01, 2.3)
    lat = np.stack(np.meshgrid(g, g, g, indexing="ij"), -1).reshape(-1, 3)
    atoms = lat[np.linalg.norm(lat, axis=1) < 20] + rng.uniform(-.4, .4, (1, 3))
    types = rng.choice(["C.3", "C.ar", "N.am", "N.2", "O.2", "O.3", "S.3"], len(atoms),
                       p=[.45, .15, .1, .05, .1, .1, .05])
    centre = atoms[np.argmax(atoms[:, 0])] - np.array([3.0, 0, 0])
    keep = np.linalg.norm(atoms - centre, axis=1) > 4
    atoms, types = atoms[keep], types[keep]
    lig = centre + rng.uniform(-2, 2, (15, 3))
    cav = centre + rng.uniform(-3, 3, (150, 3))
    e = root / f"{i + 1}big_1"
    e.mkdir(parents=True)
    bs.write_mol2(e / "protein.mol2", atoms, types, e.name, "RES")
    bs.write_mol2(e / "ligand.mol2", lig, ["C.3"] * len(lig), "LIG", "LIG")
    bs.write_mol2(e / "cavity6.mol2", cav, ["Du"] * len(cav), "cavity", "CAV")
    bs.write_mol2(e / "site.mol2", lig, ["C.3"] * len(lig), "site", "SIT")
    return e


def main() -> None:
    import torch

    from medrun.datasets import binding_sites as bs
    from medrun.models.drivpocket import DRIVPocket
    from medrun.pipelines.drivpocket import geometry as geo
    from medrun.pipelines.drivpocket import preprocess as prep

    torch.set_num_threads(THREADS)
    rng = np.random.default_rng(0)
    s = {"size": 65, "spacing": 0.5, "label_radius": 1.0, "grids": True}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        items = [big_entry(tmp / "scpdb", i, rng) for i in range(PROTEINS)]
        quiet = lambda *a, **k: None  # noqa: E731
        _, cold = prep.compute("scpdb", items, s, tmp / "cache", quiet)
        _, warm = prep.compute("scpdb", items, s, tmp / "cache", quiet)
        size = sum(f.stat().st_size for f in (tmp / "cache").glob("*.npz")) / PROTEINS / 1e6
        p = prep.load(next((tmp / "cache").glob("*.npz")))
        atoms = len(p.coords)

        net = DRIVPocket().eval()
        n_params = sum(q.numel() for q in net.parameters())
        cands = [p.centres[0] + rng.normal(size=3) * 3 for _ in range(3)]
        t0 = time.perf_counter()
        parts = {"grid + point set": 0.0, "network": 0.0, "SFM + pocket": 0.0}
        for c in cands:
            t = time.perf_counter()
            grid = geo.density(p.coords, p.channels, c, 65, 0.5, bs.RADII)
            pts, feats, vox, idx = geo.point_set(p.coords, p.channels, c, 65, 0.5, 1024)
            parts["grid + point set"] += time.perf_counter() - t
            t = time.perf_counter()
            with torch.no_grad():
                v, a = net(*(torch.from_numpy(x)[None] for x in (grid, pts, feats, vox)))
            parts["network"] += time.perf_counter() - t
            t = time.perf_counter()
            pv, pa = torch.sigmoid(v[0, 0]).numpy(), torch.sigmoid(a[0]).numpy()
            fused = geo.sfm(pv, p.coords[idx].astype(np.float64), pa, c, 0.5)
            geo.pocket(fused, c, 0.5)
            parts["SFM + pocket"] += time.perf_counter() - t
        per_protein = time.perf_counter() - t0
        lattice = len(geo.lattice_candidates(p.coords.astype(np.float64), 8.0))

    print("## drivpocket: preprocess proteins/s and predict s/protein at 65³ (benchmarks/bench_drivpocket.py)\n")
    print(f"Machine: {platform.machine()}, {os.cpu_count()} CPU cores, no GPU, torch {torch.__version__} "
          f"({THREADS} thread), Python {platform.python_version()}. Synthetic scPDB entries of {atoms:,} heavy "
          "atoms.\n")
    print("| step | value |\n|---|---:|")
    print(f"| preprocess, cold cache: proteins/s (parse mol2, type, grid 65³ × 14 + labels, write npz) | "
          f"{cold['computed'] / cold['compute_seconds']:.2f} |")
    print(f"| preprocess, warm cache: proteins/s (hash files, find npz) | {warm['items'] / warm['seconds']:.1f} |")
    print(f"| cache file per protein (MB, float16 grid, compressed) | {size:.2f} |")
    print(f"| predict, 3 candidate boxes (CSV): s/protein, full network ({n_params / 1e6:.2f} M) | "
          f"{per_protein:.1f} |")
    for k, v in parts.items():
        print(f"| … of which {k} (s) | {v:.2f} |")
    print(f"| predict, lattice fallback ({lattice} boxes at 8 Å): s/protein, estimated | "
          f"{per_protein / 3 * lattice:.0f} |")


if __name__ == "__main__":
    main()
