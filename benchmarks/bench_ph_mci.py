"""ph-mci topology per subject at the paper's size: 160 Dosenbach ROIs in 6 networks, T = 187 time points (the
authors' code comment), H0–H2 Rips persistence with gudhi and every ROI pair's 1-Wasserstein distance within each
network (2,179 pairs × 3 dimensions) with gudhi + POT. Cold cache with 1 and 2 workers, then a warm cache (nothing
computed, only the CSVs hashed and the cache files found). Also the split of one subject's time into persistence and
distances, and the per-pair cost of POT against gudhi's Hera backend (auction algorithm) for reference.

Synthetic subjects (sinusoids + noise, the fixture's generator at full size); the cost depends on the point count,
not on the values. Prints a Markdown section. Environment: BENCH_PH_SUBJECTS (default 4), BENCH_PH_T (default 187).
"""

from __future__ import annotations

import os
import platform
import tempfile
import time
from pathlib import Path

import numpy as np

SUBJECTS = int(os.environ.get("BENCH_PH_SUBJECTS", 4))
T = int(os.environ.get("BENCH_PH_T", 187))


def write_subjects(root: Path, n: int) -> list:
    from medrun.datasets import adni_rsfmri as ds
    from medrun.pipelines.ph_mci import topo

    rng = np.random.default_rng(0)
    items = []
    for s in range(n):
        for net, rois in ds.NETWORKS.items():
            d = root / "HC" / net
            d.mkdir(parents=True, exist_ok=True)
            x = rng.uniform(1, 3, (rois, 1)) * np.sin(rng.uniform(0.2, 0.5, (rois, 1)) * np.arange(T)
                                                      + rng.uniform(0, 6, (rois, 1))) + rng.normal(0, 0.1, (rois, T))
            x = np.round(x, 6)
            x[x == 0] = 1e-6
            p = d / f"002_S_{s:04d}.csv"
            np.savetxt(p, x, delimiter=",", fmt="%.6f")
            items.append(topo.Item(f"HC/{net}/{p.stem}", p, net))
    return items


def main() -> None:
    import gudhi
    import ot

    from medrun.datasets import adni_rsfmri as ds
    from medrun.pipelines.ph_mci import topo

    quiet = lambda *a, **k: None  # noqa: E731
    s = topo.Settings()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        items = write_subjects(tmp / "data", SUBJECTS)
        topo.wasserstein(np.zeros((0, 2)), np.zeros((0, 2)))  # import POT outside the timings
        rows = {}
        for workers in (1, 2):
            cache = tmp / f"cache{workers}"
            t0, c0 = time.perf_counter(), time.process_time()
            _, st = topo.compute(items, s, cache, ds.read_series, workers, quiet)
            cold, cpu = time.perf_counter() - t0, time.process_time() - c0
            t0 = time.perf_counter()
            _, st2 = topo.compute(items, s, cache, ds.read_series, workers, quiet)
            warm = time.perf_counter() - t0
            assert st["computed"] == len(items) and st2["computed"] == 0
            rows[workers] = (cold / SUBJECTS, warm / SUBJECTS, cpu / SUBJECTS if workers == 1 else None)
            print(f"<!-- {workers} worker(s): cold {cold / SUBJECTS:.2f} s/subject, warm {warm / SUBJECTS:.4f} -->",
                  flush=True)

        # one subject: persistence vs distances, and the per-pair cost of the two Wasserstein backends
        x_all = [ds.read_series(it.path, it.network) for it in items[:6]]
        t0 = time.perf_counter()
        dgms = [[topo.rips_diagrams(topo.embed(r, s.window, s.drop_last), s.max_dim) for r in x] for x in x_all]
        t_ph = time.perf_counter() - t0
        t0 = time.perf_counter()
        pairs = 0
        for net in dgms:
            for k in range(3):
                topo.distance_matrix([d[k] for d in net])
                pairs += len(net) * (len(net) - 1) // 2
        t_w = time.perf_counter() - t0
        h0 = [d[0] for d in dgms[2][:10]]  # DMN, H0 (~183 points each)
        t0 = time.perf_counter()
        n = 0
        for i in range(len(h0)):
            for j in range(i + 1, len(h0)):
                topo.wasserstein(h0[i], h0[j])
                n += 1
        t_pot = (time.perf_counter() - t0) / n
        from gudhi.hera import wasserstein_distance as hera

        t0 = time.perf_counter()
        for i in range(len(h0)):
            for j in range(i + 1, len(h0)):
                hera(h0[i], h0[j], order=1, internal_p=np.inf)
        t_hera = (time.perf_counter() - t0) / n

    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print("## ph-mci: persistence + Wasserstein features per subject (160 ROIs, T = 187)\n")
    print(f"Machine: {platform.machine()}, {os.cpu_count()} CPU cores (2-core CPU, no GPU), {platform.system()}, "
          f"Python {platform.python_version()}, gudhi {gudhi.__version__}, POT {ot.__version__}. Load average "
          f"{load:.1f} when it finished (the machine is shared with other jobs). {SUBJECTS} synthetic subjects × 6 "
          "network CSVs, wall-clock per subject.\n")
    print("| cache | workers | wall s / subject | CPU s / subject (this process) |")
    print("|---|---:|---:|---:|")
    for w, (cold, _, cpu) in rows.items():
        print(f"| cold | {w} | {cold:.2f} | {f'{cpu:.2f}' if cpu is not None else '— (in the workers)'} |")
    for w, (_, warm, _) in rows.items():
        print(f"| warm | {w} | {warm:.4f} | |")
    print(f"\nSpeed-up of 2 workers over 1 (cold): {rows[1][0] / rows[2][0]:.2f}×. With other jobs holding the "
          "cores, a second worker has no free core to run on; the CPU-seconds column is the load-independent figure.")
    print(f"\nOne subject, 1 worker: Rips persistence of 160 ROIs {t_ph:.2f} s; {pairs} W1 distances (2,179 ROI "
          f"pairs × H0–H2) {t_w:.2f} s. Each ROI's diagrams are computed once and reused for all its pairs, and only "
          f"i < j is computed. Per H0 pair (~{len(h0[0])} points per diagram): gudhi + POT (exact, used) "
          f"{t_pot * 1e3:.2f} ms, gudhi's Hera (auction, approximate; not used) {t_hera * 1e3:.2f} ms.")


if __name__ == "__main__":
    main()
