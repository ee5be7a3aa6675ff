"""covid-severity seconds per scan at the paper's size: one 512×512×300 chest CT (0.7 mm pixels, 1 mm slices) read
from DICOM with the pipeline's reader, then card steps 2–8 at the default settings (the paper's preset, the 512
grid, Frangi at sigmas 1, 2, 3 px) with the wall and CPU time of each step, single process.

The scan is the fixture's phantom (lungs, vessels, a liver dome, ground glass in every lobe) generated at 512² over
60 slices and interpolated to 300, so the lungs fill the volume as in a real chest CT; the cost depends on the lung
area per slice, not on the values. Prints a Markdown section. Environment: BENCH_COVID_SLICES (default 300).
"""

from __future__ import annotations

import os
import platform
import tempfile
import time
from pathlib import Path

import numpy as np

SLICES = int(os.environ.get("BENCH_COVID_SLICES", 300))


def volume(slices: int):
    from scipy.ndimage import zoom

    from medrun.datasets import ricord

    base = max(8, slices // 5)
    hu, lobes, _, planted = ricord.phantom(np.random.default_rng(0), (2, 2, 3, 1, 2), 512, base, vessels=12)
    f = slices / base
    return zoom(hu, (f, 1, 1), order=1).astype(np.float32), zoom(lobes, (f, 1, 1), order=0), planted


def main() -> None:
    from medrun.datasets import ricord
    from medrun.pipelines.covid_severity import method

    hu, lobes, planted = volume(SLICES)
    s = method.Settings()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "MIDRC-RICORD-1A" / "CASE-1" / "study" / "series"
        ricord.write_series(folder, hu, case="CASE-1", study="1.2.3", series="1.2.3.4", spacing=0.7, thickness=1.0,
                            description="BENCH", sex="F", age=50, seed=0)
        t = {}
        t0, c0 = time.perf_counter(), time.process_time()
        found = ricord.scan(Path(tmp) / "MIDRC-RICORD-1A")
        vol = ricord.read_volume(ricord.choose_series("CASE-1", found["CASE-1"]))
        t[f"read DICOM ({SLICES} files, HU)"] = (time.perf_counter() - t0, time.process_time() - c0)
    assert vol.hu.shape == (SLICES, 512, 512)

    t0, c0 = time.perf_counter(), time.process_time()
    rs, cs = method.lung_box(lobes > 0, s.px(s.base_top_px) + s.px(s.motion_px) + 8)  # as method.segment
    hu_c, lobes_c = vol.hu[:, rs, cs], lobes[:, rs, cs]
    lung0 = lobes_c > 0
    p = method.percent_labels(lung0)
    lung1 = method.remove_pleura(lung0, s)
    t["2 lung box, pleura"] = (time.perf_counter() - t0, time.process_time() - c0)
    t0, c0 = time.perf_counter(), time.process_time()
    lung2, organ = method.remove_organ_lining(lung1, p, vol.spacing[0], s)
    t["3 organ rims"] = (time.perf_counter() - t0, time.process_time() - c0)
    t0, c0 = time.perf_counter(), time.process_time()
    vessels = method.vessel_mask(hu_c, lung2, s)
    t["4 vessels (Frangi, 3 scales)"] = (time.perf_counter() - t0, time.process_time() - c0)
    t0, c0 = time.perf_counter(), time.process_time()
    raw = (lung2 & ~vessels) & (hu_c >= s.hu_min) & (hu_c <= s.hu_max)
    bands = method.motion_bands(lung1, lobes_c, p, s)
    infection = method.refine(raw, bands, s)
    t["5–7 window, refinement, motion"] = (time.perf_counter() - t0, time.process_time() - c0)
    t0, c0 = time.perf_counter(), time.process_time()
    g = method.grade(*method.involvement(infection, lobes_c))
    t["8 grading"] = (time.perf_counter() - t0, time.process_time() - c0)
    total, cpu = sum(w for w, _ in t.values()), sum(c for _, c in t.values())
    lung_slices = int(lung0.reshape(len(lung0), -1).any(1).sum())

    print(f"## covid-severity: seconds per 512×512×{SLICES} CT scan (benchmarks/bench_covid_severity.py)\n")
    print(f"Machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPU cores, one process; numpy "
          f"{np.__version__}. Phantom scan with lungs on {lung_slices} of {SLICES} slices (lung box "
          f"{rs.stop - rs.start}×{cs.stop - cs.start} px); CTSS {g['ctss']} "
          f"(planted lobe scores {[ricord.score_of(x) for x in planted]}, found {g['scores']}).\n")
    print("| step | wall s | CPU s | share of wall |")
    print("|---|---|---|---|")
    for k, (w, c) in t.items():
        print(f"| {k} | {w:.2f} | {c:.2f} | {100 * w / total:.0f} % |")
    print(f"| **whole scan** | **{total:.1f}** | **{cpu:.1f}** | {1000 * total / lung_slices:.0f} ms wall per lung "
          f"slice |")
    print(f"\nLoad average when it ended: {os.getloadavg()[0]:.1f} (wall time stretches with other jobs on the "
          "cores; CPU seconds much less).")


if __name__ == "__main__":
    main()
