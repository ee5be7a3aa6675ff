"""HD95 and ASSD on a pair of 256×256×256 masks: medrun.metrics.segmentation against MONAI on the same masks.

Prints a Markdown section (heading, machine, table). Run directly or through ``benchmarks/run.py``.
"""

from __future__ import annotations

import os
import platform
import time

import numpy as np
import torch

N = 256
SPACING = (1.0, 0.8, 0.8)
REPEATS = 3


def masks() -> tuple[np.ndarray, np.ndarray]:
    """Two overlapping ellipsoids with a bumpy surface, about a fifth of the volume each."""
    z, y, x = np.ogrid[:N, :N, :N]
    rng = np.random.default_rng(0)
    bump = 0.06 * np.sin(x / 7.0 + rng.random()) * np.cos(y / 9.0)
    gt = ((z - 128) / 90.0) ** 2 + ((y - 128) / 70.0) ** 2 + ((x - 120) / 80.0) ** 2 < 1 + bump
    pred = ((z - 134) / 86.0) ** 2 + ((y - 124) / 74.0) ** 2 + ((x - 126) / 78.0) ** 2 < 1 - bump
    return pred, gt


def best_time(fn, repeats: int = REPEATS) -> tuple[float, float]:
    times, value = [], None
    for _ in range(repeats):
        t0 = time.perf_counter()
        value = fn()
        times.append(time.perf_counter() - t0)
    return min(times), float(value)


def main() -> None:
    from monai.metrics import compute_average_surface_distance, compute_hausdorff_distance

    from medrun.metrics import segmentation as S

    pred, gt = masks()
    tp, tg = torch.from_numpy(pred[None, None]), torch.from_numpy(gt[None, None])
    cases = [
        (
            "HD95",
            lambda: S.hausdorff95(pred, gt, spacing=SPACING),
            lambda: compute_hausdorff_distance(tp, tg, include_background=True, percentile=95, spacing=list(SPACING)),
        ),
        (
            "ASSD",
            lambda: S.assd(pred, gt, spacing=SPACING),
            lambda: compute_average_surface_distance(
                tp, tg, include_background=True, symmetric=True, spacing=list(SPACING)
            ),
        ),
    ]
    import monai

    torch.set_num_threads(os.cpu_count() or 1)
    print("## Surface distances: HD95 and ASSD on 256³ masks\n")
    print(
        f"Machine: {platform.machine()}, {os.cpu_count()} CPU cores, {platform.system()}, Python "
        f"{platform.python_version()}, numpy {np.__version__}, MONAI {monai.__version__}, torch {torch.__version__}. "
        f"Masks: two bumpy ellipsoids, {int(pred.sum()):,} and {int(gt.sum()):,} voxels, spacing {SPACING}. "
        f"Best of {REPEATS} runs, wall-clock seconds.\n"
    )
    print("| metric | medrun (s) | MONAI (s) | speed-up | medrun value | MONAI value |")
    print("|---|---:|---:|---:|---:|---:|")
    for name, ours, theirs in cases:
        t_ours, v_ours = best_time(ours)
        t_monai, v_monai = best_time(theirs)
        print(f"| {name} | {t_ours:.2f} | {t_monai:.2f} | {t_monai / t_ours:.1f}× | {v_ours:.4f} | {v_monai:.4f} |")


if __name__ == "__main__":
    main()
