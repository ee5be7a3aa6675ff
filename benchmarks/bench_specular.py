"""specular: detection frames/s at 384×288 against OpenCV's SIFT in the same run (issue 19, "specular detection
frames/s at 384×288 against OpenCV's SIFT").

On the cvc-clinicspec fixture frames (384×288): the fused highlight detector (MMSER by the scipy component tree,
and by cv2.MSER; the intensity–saturation test with false-region removal), Navier–Stokes inpainting, and the
feature detectors of ``match`` (the kornia affine-covariant detector with descriptors at 8000 frames, OpenCV SIFT,
ORB, Harris), each the best of ``BENCH_REPEATS`` passes over ``BENCH_FRAMES`` frames. Single process, torch
threads as set (default 1).
"""

from __future__ import annotations

import os
import platform
import sys
import tempfile
from pathlib import Path

import _timing
import torch

from medrun.datasets import specular as data
from medrun.pipelines.specular import features, method

N = int(os.environ.get("BENCH_FRAMES", 4))
REPEATS = int(os.environ.get("BENCH_REPEATS", 2))


def main() -> None:
    torch.set_num_threads(int(os.environ.get("BENCH_THREADS", 1)))
    with tempfile.TemporaryDirectory() as tmp:
        root = data.fixture_clinicspec(Path(tmp), 0)
        frames = [data.load_rgb(f.image) for f in data.read_frames(root / "images", root / "masks")[:N]]
    grays = [method.intensity(f) for f in frames]
    print(f"machine: {platform.machine()}, {os.cpu_count()} CPU cores, load {os.getloadavg()[0]:.1f}, "
          f"torch {torch.__version__} ({torch.get_num_threads()} thread), Python {sys.version.split()[0]}; "
          f"{N} frames of 384×288")
    p, p_cv = method.Params(), method.Params(mser_impl="opencv")
    masks = [method.detect(f, p)["fused"] for f in frames]
    jobs = {
        "MMSER (component tree)": lambda: [method.mmser(g, p) for g in grays],
        "MMSER (cv2.MSER)": lambda: [method.mmser(g, p_cv) for g in grays],
        "IS + false-region removal": lambda: [method.remove_false_regions(method.is_candidates(f, p), p)
                                              for f in frames],
        "fused detector (tree)": lambda: [method.detect(f, p) for f in frames],
        "fused detector (cv2.MSER)": lambda: [method.detect(f, p_cv) for f in frames],
        "NS inpainting of S_R": lambda: [method.inpaint(f, m) for f, m in zip(frames, masks, strict=True)],
        "OpenCV SIFT (detect + describe)": lambda: [features.opencv(g, "sift") for g in grays],
        "OpenCV ORB": lambda: [features.opencv(g, "orb") for g in grays],
        "Harris + SIFT descriptors": lambda: [features.opencv(g, "harris") for g in grays],
        "covariant (kornia, 8000, + SIFT desc.)": lambda: [features.covariant(g, 8000) for g in grays],
    }
    print("| step | s/frame | frames/s |")
    print("|---|---|---|")
    for name, fn in jobs.items():
        t = _timing.best(fn, REPEATS, warmup=name.startswith("covariant")) / N
        print(f"| {name} | {t:.3f} | {1 / t:.2f} |")
    n_cov = sum(len(features.covariant(g, 8000).xy) for g in grays) / N
    n_sift = sum(len(features.opencv(g, "sift").xy) for g in grays) / N
    print(f"features per frame: covariant {n_cov:.0f}, SIFT {n_sift:.0f}")


if __name__ == "__main__":
    main()
