"""icu-vitals: extraction throughput, photos/s (issue 19, "icu-vitals extract images/s").

The chain of ``medrun extract`` on the icu-monitors fixture (640×360 photos, crops resized to 640×360 as the
fixture manifest; the real manifest crops to 1280×720): ARP deskew, corner regression, crop, ECG tracing, OCR and
rules, timed per photo, for the tiny regressor at 128² and the paper's EfficientNet-B4 regressor at 380² (random
weights: speed does not depend on them), with the oracle OCR (rules only) and crnn-tiny (classical detection + CRNN,
random weights). Deskew and corner regression are timed alone; crop, ECG and OCR + rules are timed on the true
corners (random regressor weights would find no screen and skip them), and the whole chain is the sum. Single
process, float32, torch threads as set (default: 1).
"""

from __future__ import annotations

import os
import platform
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import torch

from medrun import manifests
from medrun.datasets import icu_monitors
from medrun.pipelines.icu_vitals import deskew as dsk
from medrun.pipelines.icu_vitals import extract as ex
from medrun.pipelines.icu_vitals import ocr
from medrun.pipelines.icu_vitals.config import IcuVitalsManifest
from medrun.pipelines.icu_vitals.pipeline import build_net

N = int(os.environ.get("BENCH_PHOTOS", 8))
regress = ex.regress


def predictor(net, x):
    with torch.no_grad():
        return net.eval()(x)


def pipe_for(backbone: str):
    m = manifests.validate(manifests.load_file(manifests.manifest_path("icu-vitals", "icu-monitors", fixture=True)),
                           IcuVitalsManifest)
    if backbone != "tiny":
        m.model = m.model.model_copy(update={"backbone": backbone, "input_size": 380, "head_norm": False,
                                             "head_convs": (1280, 1540, 1960), "head_dense": (1024, 128)})
    return SimpleNamespace(m=m, predictor=predictor), build_net(m.model).eval()


def main() -> None:
    torch.set_num_threads(int(os.environ.get("BENCH_THREADS", 1)))
    with tempfile.TemporaryDirectory() as tmp:
        photos = icu_monitors.read(icu_monitors.fixture(Path(tmp), 0, n=N))
        images = [icu_monitors.load_rgb(p.path) for p in photos]
    print(f"machine: {platform.machine()}, {os.cpu_count()} CPU cores, torch {torch.__version__} "
          f"({torch.get_num_threads()} thread), Python {sys.version.split()[0]}; {N} photos of 640×360")
    rows = []
    for backbone in ("tiny", "effnet-b4"):
        pipe, net = pipe_for(backbone)
        ex.regress(pipe, net, images[:1])  # warm-up
        t0 = time.perf_counter()
        for im in images:
            dsk.deskew(im, pipe.m.deskew)
        t_deskew = (time.perf_counter() - t0) / N
        t0 = time.perf_counter()
        for im in images:
            ex.regress(pipe, net, [im])
        t_regress = (time.perf_counter() - t0) / N
        crnn = ocr.CrnnTiny(ocr.build_crnn(pipe.m.train_ocr).eval(), predictor)
        no_deskew = pipe.m.model_copy(update={"extract": pipe.m.extract.model_copy(update={"deskew": False})})
        crop_pipe = SimpleNamespace(m=no_deskew, predictor=predictor)
        for name, engine in (("oracle", ocr.Oracle()), ("crnn-tiny", crnn)):
            t_crop = t_ocr = 0.0
            for p, im in zip(photos, images, strict=True):
                ex.regress = lambda _pipe, _net, _ims, q=np.float32(p.corners): [q]  # the true corners
                t0 = time.perf_counter()
                s = ex.locate(crop_pipe, net, [p.name], [im])[0]
                t1 = time.perf_counter()
                assert s.found, s.reason
                ex.read(crop_pipe, engine, s, [(t, np.float32(b)) for t, b in p.boxes])
                t_crop += t1 - t0
                t_ocr += time.perf_counter() - t1
            ex.regress = regress
            total = t_deskew + t_regress + (t_crop + t_ocr) / N
            rows.append((backbone, name, t_deskew, t_regress, t_crop / N, t_ocr / N, total))
    print("| corner model | OCR | deskew s | corners s | crop + ECG s | OCR + rules s | whole chain s/photo "
          "| photos/s |")
    print("|---|---|---:|---:|---:|---:|---:|---:|")
    for b, o, d, r, c, w, t in rows:
        print(f"| {b} | {o} | {d:.3f} | {r:.3f} | {c:.3f} | {w:.3f} | {t:.3f} | {1 / t:.2f} |")


if __name__ == "__main__":
    main()
