"""epilepsy-mtl ``render``: raw candidate segments → the paper's HFO and IED images (card, "Task and data").

Input (``--data-dir``): ``<root>/{hfo,ied}/<patient>/<class>/*.npz`` holding ``x`` (one channel, 1-D) and ``fs`` (Hz),
or ``*.npy`` (1-D) with the sampling rate from ``render.fs``; the candidate sits at the segment's centre. Output:
``images/{hfo,ied}/<patient>/<class>/<name>.png`` in the run directory, 227×227 RGB: the layout the other stages
read (pass that folder as ``--data-dir``).

- HFO: complex Morlet CWT power (3 cycles, 0.488 Hz steps over 250–500 Hz) of the central 340 ms, normalised to
  its maximum, 500 Hz at the top, resized to 227×227 and drawn with the jet colour map. Needs fs > 1 kHz.
- IED (after Quon et al.): linear detrend; 50 Hz notch and its odd harmonics below Nyquist (``iirnotch``, Q 30);
  Butterworth band-pass 1–250 Hz (order 4, ``sosfiltfilt``; the upper edge capped at 0.45·fs); downsampled to
  200 Hz (``resample_poly``); the central 600 ms drawn as an amplitude trace with a flexible range (±max |x|).
  Common average reference and the 3-SD electrode rejection need every channel of a recording, so they are left to
  the user's segment extraction.
"""

from __future__ import annotations

import time
from fractions import Fraction
from pathlib import Path

import numpy as np
from PIL import Image

from medrun.datasets import ncnp_ecog
from medrun.errors import DataError

HFO_WINDOW_MS, IED_WINDOW_MS, IED_FS = 340, 600, 200


def morlet_power(x: np.ndarray, fs: float, freqs: np.ndarray, n_cycles: float = 3.0) -> np.ndarray:
    """(len(freqs), len(x)) power of the complex Morlet transform (σ_t = n_cycles / (2π f), unit L1 norm)."""
    from scipy.signal import fftconvolve

    out = np.empty((len(freqs), len(x)))
    for k, f in enumerate(freqs):
        sigma = n_cycles / (2 * np.pi * f)
        t = np.arange(-3.5 * sigma, 3.5 * sigma + 1 / fs, 1 / fs)
        w = np.exp(2j * np.pi * f * t) * np.exp(-(t**2) / (2 * sigma**2))
        out[k] = np.abs(fftconvolve(x, w / np.abs(w).sum(), mode="same")) ** 2
    return out


def _centre(x: np.ndarray, fs: float, ms: float, path: Path) -> np.ndarray:
    n = int(round(ms * fs / 1000))
    if len(x) < n:
        raise DataError(f"segment {path} has {len(x)} samples ({1000 * len(x) / fs:.0f} ms), shorter than the "
                        f"{ms:.0f} ms window", fix="extract longer segments around each candidate")
    start = (len(x) - n) // 2
    return x[start:start + n]


def hfo_image(x: np.ndarray, fs: float, path: Path, size: int = 227) -> np.ndarray:
    import matplotlib

    if fs <= 1000:
        raise DataError(f"segment {path} is sampled at {fs:g} Hz; the 250–500 Hz band needs more than 1 kHz",
                        fix="render HFO candidates from the raw recording (1–2 kHz)")
    freqs = np.arange(250, 500 + 1e-9, 0.488)
    power = morlet_power(x - x.mean(), fs, freqs)
    n = int(round(HFO_WINDOW_MS * fs / 1000))
    start = (len(x) - n) // 2
    if start < 0:
        _centre(x, fs, HFO_WINDOW_MS, path)
    power = power[::-1, start:start + n]  # 500 Hz at the top
    power = power / (power.max() or 1.0)
    img = np.asarray(Image.fromarray(power.astype(np.float32), mode="F").resize((size, size), Image.BICUBIC))
    rgb = matplotlib.colormaps["jet"](np.clip(img, 0, 1))[..., :3]
    return (rgb * 255).round().astype(np.uint8)


def ied_signal(x: np.ndarray, fs: float) -> np.ndarray:
    """Detrend, 50 Hz notch + odd harmonics, 1–250 Hz band-pass, resample to 200 Hz."""
    from scipy.signal import butter, detrend, filtfilt, iirnotch, resample_poly, sosfiltfilt

    x = detrend(np.asarray(x, dtype=np.float64))
    h = 50.0
    while h < fs / 2 - 1:
        b, a = iirnotch(h, 30.0, fs)
        x = filtfilt(b, a, x)
        h += 100.0
    sos = butter(4, [1.0, min(250.0, 0.45 * fs)], btype="bandpass", fs=fs, output="sos")
    x = sosfiltfilt(sos, x)
    ratio = Fraction(IED_FS) / Fraction(fs).limit_denominator(1000)
    return resample_poly(x, ratio.numerator, ratio.denominator)


def ied_image(x: np.ndarray, fs: float, path: Path, size: int = 227) -> np.ndarray:
    if fs < IED_FS:
        raise DataError(f"segment {path} is sampled at {fs:g} Hz, below the 200 Hz the IED pipeline works at",
                        fix="render IED candidates from the raw recording")
    y = _centre(ied_signal(x, fs), IED_FS, IED_WINDOW_MS, path)
    return ncnp_ecog.draw_trace(y, size, None)


def load_segment(path: Path, default_fs: float | None) -> tuple[np.ndarray, float]:
    try:
        if path.suffix == ".npz":
            with np.load(path, allow_pickle=False) as z:
                if "x" not in z:
                    raise DataError(f"{path} has no array 'x' (has: {', '.join(z.files)})",
                                    fix="store the signal as array x (and the rate as fs) in the .npz")
                x = np.asarray(z["x"], dtype=np.float64)
                fs = float(z["fs"]) if "fs" in z else default_fs
        else:
            x, fs = np.asarray(np.load(path, allow_pickle=False), dtype=np.float64), default_fs
    except (OSError, ValueError) as e:
        raise DataError(f"cannot read segment {path}: {e.__class__.__name__}: {e}",
                        fix="replace or delete the file") from None
    if fs is None:
        raise DataError(f"segment {path} has no sampling rate", fix="store fs in the .npz, or set -o render.fs=HZ")
    if x.ndim != 1 or not np.isfinite(x).all():
        raise DataError(f"segment {path} is not one finite 1-D channel (shape {x.shape})",
                        fix="save one channel per file")
    return x, fs


def render(pipe) -> dict:
    root, ctx = pipe.root, pipe.ctx
    t0 = time.perf_counter()
    counts = {}
    for task, draw in (("hfo", hfo_image), ("ied", ied_image)):
        files = sorted(p for p in (root / task).rglob("*")
                       if p.suffix in (".npz", ".npy") and not p.name.startswith("."))
        for f in files:
            rel = f.relative_to(root)
            if len(rel.parts) != 4 or rel.parts[2] not in ncnp_ecog.CLASSES[task]:
                classes = ",".join(ncnp_ecog.CLASSES[task])
                raise DataError(f"segment {f} is not at {task}/<patient>/{{{classes}}}/<name>",
                                fix="arrange segments in the image layout, by patient and class")
            x, fs = load_segment(f, pipe.m.render.fs)
            ctx.write_png(f"images/{rel.with_suffix('.png').as_posix()}", draw(x, fs, f))
        counts[task] = len(files)
    if not any(counts.values()):
        raise DataError(f"no .npz/.npy segments under {root}/hfo or {root}/ied",
                        fix="pass --data-dir with <task>/<patient>/<class>/*.npz segments (x, fs)")
    ctx.log(f"rendered {counts['hfo']} HFO and {counts['ied']} IED images into {ctx.path / 'images'}")
    return {"n_hfo": counts["hfo"], "n_ied": counts["ied"], "images": str(ctx.path / "images"),
            "seconds": round(time.perf_counter() - t0, 2)}
