"""sepsis-synth generators: synthetic rows per second at the paper's size, KDE-KNN against plain KDE (its nearest
baseline: the same densities without the k-NN gate) and SMOTE, and TabDDPM's training and sampling against them.

KDE-KNN, KDE and SMOTE are timed as functions (``pipelines/sepsis_synth/generators.py``) on a synthetic training
table of the paper's size (1084 rows = 85 % of 1275, 18.55 % sepsis, 27 features, standardised, two classes apart by
about one SD), 540 + 540 rows per set, best of ``BENCH_REPEATS`` (3). TabDDPM is timed through the CLI exactly as a
user runs it (``medrun generate … -o generate.method=tabddpm`` on the sepsis-csv fixture, Lightning training,
sampling through the predictor): ``BENCH_TABDDPM_STEPS`` (500) training steps of 256 rows, then one set of 540 + 540
rows with T = 1000 reverse steps; the card's 5000 steps are projected linearly from the measured step rate.
Prints a Markdown section.
"""

from __future__ import annotations

import json
import os
import platform
import tempfile
from pathlib import Path

import numpy as np
from _timing import best

REPEATS = int(os.environ.get("BENCH_REPEATS", 3))
STEPS = int(os.environ.get("BENCH_TABDDPM_STEPS", 500))
N, D, PER_CLASS = 1084, 27, 540


def table(seed: int = 0):
    rng = np.random.default_rng(seed)
    y = (rng.random(N) < 0.1855).astype(np.int64)
    a = rng.normal(size=(D, 6))
    cov = a @ a.T * 0.3 + np.eye(D)
    x = rng.multivariate_normal(np.zeros(D), cov, N) + 0.9 * y[:, None] * (np.arange(D) < 6)
    return (x - x.mean(0)) / x.std(0), y


def tabddpm(tmp: Path) -> dict:
    from medrun.cli.main import main

    os.environ.setdefault("MEDRUN_CACHE", str(tmp / "cache"))
    os.environ["MEDRUN_PLAIN"] = "1"
    out = tmp / "out.json"
    import contextlib
    import io

    buf = io.StringIO()
    with contextlib.redirect_stdout(buf), contextlib.redirect_stderr(io.StringIO()):
        code = main(["generate", "sepsis-synth", "--dataset", "sepsis-csv", "--fixture",
                     "--runs-dir", str(tmp / "runs"), "-o", "generate.method=tabddpm",
                     "-o", f"generate.n_per_class={PER_CLASS}", "-o", "generate.sets=1",
                     "-o", f"generate.tabddpm.steps={STEPS}", "--json"])
    assert code == 0, buf.getvalue()[-2000:]
    out.write_text(buf.getvalue())
    return json.loads(buf.getvalue())["metrics"]


def main() -> None:
    import torch

    from medrun.pipelines.sepsis_synth import generators as gen

    x, y = table()
    rows = 2 * PER_CLASS
    timed = {
        "KDE (no gate, the nearest baseline)": best(lambda: gen.sample_kde(x, y, PER_CLASS, np.random.default_rng(0)),
                                                    REPEATS),
        "KDE-KNN (k = 5)": best(lambda: gen.sample_kdeknn(x, y, PER_CLASS, np.random.default_rng(0)), REPEATS),
        "SMOTE (imbalanced-learn, both classes)": best(lambda: gen.sample_smote(x, y, PER_CLASS, 0), REPEATS),
    }
    _, _, st = gen.sample_kdeknn(x, y, PER_CLASS, np.random.default_rng(0))
    with tempfile.TemporaryDirectory() as tmp:
        m = tabddpm(Path(tmp))
    fit, sample = m["fit_seconds"], m["sample_seconds"]
    base = timed["KDE (no gate, the nearest baseline)"]
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    threads = torch.get_num_threads()
    print("## sepsis-synth: synthetic rows per second (KDE-KNN, TabDDPM and their baselines)\n")
    print(f"Machine: {platform.machine()}, {os.cpu_count()} CPU cores, {platform.system()}, Python "
          f"{platform.python_version()}, torch {torch.__version__} ({threads} threads), no GPU; load average at the "
          f"end {load:.1f} (the machine was shared with other jobs). Training table {N} × {D} (the paper's 85 % of "
          f"MaDB, 18.55 % sepsis), {PER_CLASS} + {PER_CLASS} rows per set; best of {REPEATS}.\n")
    print("| generator | seconds per set | rows / s | × plain KDE |")
    print("|---|---:|---:|---:|")
    for name, secs in timed.items():
        print(f"| {name} | {secs:.3f} | {rows / secs:,.0f} | {secs / base:.1f} |")
    print(f"| TabDDPM sampling (T = 1000, MLP 4×256, through the predictor) | {sample:.2f} | {rows / sample:,.0f} | "
          f"{sample / base:.0f} |")
    print(f"| TabDDPM training, {STEPS} steps of 256 rows (Lightning) | {fit:.2f} | — | — |")
    print(f"\nKDE-KNN kept {st['acceptance_0']:.1%} of the non-sepsis and {st['acceptance_1']:.1%} of the sepsis "
          f"candidates (the k-NN gate is the whole difference to plain KDE). TabDDPM trains at {STEPS / fit:.0f} "
          f"steps/s here, so the card's 5000 steps take about {5000 * fit / STEPS:.0f} s, plus {sample:.1f} s per "
          f"set of {rows} rows; one TabDDPM set costs about "
          f"{(5000 * fit / STEPS + sample) / timed['KDE-KNN (k = 5)']:.0f}× a KDE-KNN set.")


if __name__ == "__main__":
    main()
