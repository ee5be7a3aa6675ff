"""NCNP ECoG biomarker images (epilepsy-mtl card): HFO wavelet maps and IED waveform images per patient.

The paper's data (five focal-epilepsy patients, NCNP Tokyo) is private and has no public release, so the card
fixes the layout a user arranges their own images in::

    <root>/
        hfo/<patient_id>/HFO/*.png       fast-ripple candidates (Morlet CWT power, 250–500 Hz × 340 ms, colour map)
        hfo/<patient_id>/nonHFO/*.png
        ied/<patient_id>/IED/*.png       600 ms amplitude-vs-time traces centred on the candidate
        ied/<patient_id>/nonIED/*.png
        labels.csv                       optional: task,patient,file,label (overrides the folder label)

Images are 227×227 RGB (the paper's rendering; ``image_size`` checks it, ``None`` accepts any size) and are
resized to 28×28 with anti-aliasing and scaled to [0, 1] for the model (:func:`load_images`).

``labels.csv``: ``task`` is ``hfo`` or ``ied``; ``file`` is the path relative to the root
(``hfo/pt01/HFO/x.png``) or relative to ``<task>/<patient>/``; ``label`` is a class folder name
(``HFO``/``nonHFO``, ``IED``/``nonIED``) or 1/0. A row naming a file that is not there, an unknown task or label,
or a missing column is an error naming the row.

A fold file (``read_folds``) assigns patients to folds for the leave-patients-out protocol: columns
``patient,fold``; a patient in two folds, or a patient of the data missing from the file, is an error naming it.

The fixture writes this layout with 5 patients × 60 images per task (≈29 % HFO, ≈38 % IED, the paper's class
ratios), 227×227 PNGs that compress well (smooth colour maps, line drawings on white):

- HFO: a smooth noise power map; positives add a compact hot blob (a 300–450 Hz burst of 30–80 ms) near the centre
  in time; negatives add a broadband vertical stripe (an artefact) or nothing.
- IED: a noisy trace; positives add a sharp biphasic spike (20–70 ms) with a slow wave at the centre; negatives
  are noise or an ongoing oscillation.
- Each patient has its own brightness (HFO) and amplitude (IED) offset and background level, so
  leave-one-patient-out is harder than 5-fold CV.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

from medrun.errors import DataError

from . import DatasetInfo
from .images import open_image, to_8bit, warn_empty

DATASETS = [
    DatasetInfo("ncnp-ecog", "ECoG HFO wavelet + IED waveform images per patient (NCNP Tokyo; private, card layout)",
                "<root>/{hfo/<patient>/{HFO,nonHFO},ied/<patient>/{IED,nonIED}}/*.png (227×227 RGB) "
                "+ optional labels.csv",
                "private (NCNP Tokyo, not released): arrange your own HFO/IED candidate images in this layout and pass "
                "--data-dir",
                "medrun.datasets.ncnp_ecog:fixture", ("classification", "ecog", "multitask")),
]

TASKS = ("hfo", "ied")
CLASSES = {"hfo": ("nonHFO", "HFO"), "ied": ("nonIED", "IED")}  # index = label (1 = the biomarker)
LABELS_CSV = "labels.csv"
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")
_HINT = "point --data-dir at the folder holding hfo/ and ied/ (the card's layout), or try --fixture"


@dataclass(frozen=True)
class Sample:
    path: Path
    label: int  # 1: HFO / IED, 0: non-HFO / non-IED
    patient: str
    task: str

    def rel(self, root: Path) -> str:
        return Path(self.path).relative_to(root).as_posix()


def check_layout(root: Path) -> None:
    """Cheap: the root holds hfo/ and ied/, each with at least one patient folder."""
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"NCNP ECoG image folder not found at {root}", fix=_HINT)
    missing = [t for t in TASKS if not (root / t).is_dir()]
    if missing:
        inner = [p for p in root.iterdir() if p.is_dir() and all((p / t).is_dir() for t in TASKS)]
        raise DataError(f"{root} does not have the epilepsy-mtl layout: missing {', '.join(m + '/' for m in missing)}",
                        fix=f"use {inner[0]} instead" if inner else _HINT)
    for t in TASKS:
        if not any(p.is_dir() for p in (root / t).iterdir()):
            raise DataError(f"{root / t} has no patient folders",
                            fix=f"add {t}/<patient_id>/{{{','.join(CLASSES[t])}}}/*.png")


def read(root: Path, image_size: int | None = 227) -> dict[str, list[Sample]]:
    """Every image of both tasks, labelled from its class folder (or ``labels.csv``), sorted by path.

    ``image_size``: the side every image must have (the paper renders 227×227); ``None`` accepts any size.
    """
    root = Path(root)
    check_layout(root)
    out: dict[str, list[Sample]] = {}
    for task in TASKS:
        samples = []
        for patient in sorted(p for p in (root / task).iterdir() if p.is_dir() and not p.name.startswith(".")):
            sub = sorted(p.name for p in patient.iterdir() if p.is_dir() and not p.name.startswith("."))
            unknown = [s for s in sub if s not in CLASSES[task]]
            if unknown:
                raise DataError(f"{patient / unknown[0]} is not a class folder of {task}",
                                fix=f"name the class folders {' and '.join(CLASSES[task])} (labels come from them)")
            n0 = len(samples)
            for label, cls in enumerate(CLASSES[task]):
                folder = patient / cls
                if folder.is_dir():
                    found = [Sample(p, label, patient.name, task) for p in sorted(folder.iterdir())
                             if p.suffix.lower() in IMAGE_SUFFIXES and not p.name.startswith(".")]
                    if not found:
                        warn_empty(folder)
                    samples += found
            if len(samples) == n0:
                raise DataError(f"no images under {patient}",
                                fix=f"add {'/ or '.join(CLASSES[task])}/ folders of PNGs, or remove the patient folder")
        out[task] = samples
    if (root / LABELS_CSV).is_file():
        out = _apply_labels(root, out)
    if image_size is not None:
        check_sizes(root, [s for t in TASKS for s in out[t]], image_size)
    return out


def check_sizes(root: Path, samples: list[Sample], size: int) -> None:
    """Every image is size×size (header only); the first that is not is named."""
    for s in samples:
        with open_image(s.path, decode=False) as im:
            w, h = im.size
        if (w, h) != (size, size):
            raise DataError(f"image {s.path} is {w}×{h} pixels, expected {size}×{size} (the paper's rendering)",
                            fix=f"re-render it at {size}×{size}, or set -o dataset.image_size=null to accept any size "
                                "(every image is resized to 28×28)")


def _apply_labels(root: Path, data: dict[str, list[Sample]]) -> dict[str, list[Sample]]:
    path = root / LABELS_CSV
    index = {s.rel(root): (t, i) for t in TASKS for i, s in enumerate(data[t])}
    out = {t: list(v) for t, v in data.items()}
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        missing = [c for c in ("task", "patient", "file", "label") if c not in (reader.fieldnames or [])]
        if missing:
            raise DataError(f"{path} lacks column(s) {', '.join(missing)} (has: {', '.join(reader.fieldnames or [])})",
                            fix="the header must be task,patient,file,label")
        for line, row in enumerate(reader, start=2):
            task = (row["task"] or "").strip().lower()
            if task not in TASKS:
                raise DataError(f"{path}:{line}: unknown task {row['task']!r}", fix="task is hfo or ied")
            file = (row["file"] or "").strip()
            key = file if file in index else f"{task}/{row['patient'].strip()}/{file}"
            if key not in index or index[key][0] != task:
                raise DataError(f"{path}:{line}: file {file!r} of patient {row['patient']!r} is not an image of "
                                f"{root / task}", fix="use the path relative to the root, e.g. hfo/pt01/HFO/x.png")
            value = (row["label"] or "").strip()
            names = {c.lower(): i for i, c in enumerate(CLASSES[task])} | {"0": 0, "1": 1}
            if value.lower() not in names:
                raise DataError(f"{path}:{line}: label {value!r} is not one of {', '.join(CLASSES[task])}, 0, 1",
                                fix="fix the row's label")
            t, i = index[key]
            s = out[t][i]
            out[t][i] = Sample(s.path, names[value.lower()], s.patient, s.task)
    return out


def read_folds(path: Path, patients: list[str]) -> dict[str, int]:
    """``patient,fold`` rows → {patient: fold}; a patient in two folds, or one of ``patients`` missing, is an error."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"fold file not found: {path}",
                        fix="pass a CSV with columns patient,fold via -o dataset.fold_file=PATH")
    folds: dict[str, int] = {}
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        if not {"patient", "fold"} <= set(reader.fieldnames or []):
            raise DataError(f"{path} needs columns patient,fold (has: {', '.join(reader.fieldnames or [])})",
                            fix="one row per patient: patient,fold")
        for line, row in enumerate(reader, start=2):
            p = (row["patient"] or "").strip()
            try:
                k = int(row["fold"])
            except (TypeError, ValueError):
                raise DataError(f"{path}:{line}: fold {row['fold']!r} of patient {p} is not an integer",
                                fix="folds are integers") from None
            if p in folds and folds[p] != k:
                raise DataError(f"patient {p} is in two folds ({folds[p]} and {k}) in {path} (line {line})",
                                fix="put every patient in exactly one fold, so no patient is both trained and "
                                    "tested on")
            folds[p] = k
    absent = [p for p in patients if p not in folds]
    if absent:
        more = f" (nor {len(absent) - 1} more)" if len(absent) > 1 else ""
        raise DataError(f"patient {absent[0]} is not in {path}{more}",
                        fix="give every patient of the data a fold")
    unknown = sorted(set(folds) - set(patients))
    if unknown:
        raise DataError(f"{path} names patient {unknown[0]}, who has no images", fix="remove the row or add the images")
    return folds


def load_images(samples: list[Sample], size: int = 28):
    """(N, 3, size, size) float32 in [0, 1]: RGB, resized with anti-aliasing (scikit-image)."""
    import numpy as np
    from skimage.transform import resize

    out = np.zeros((len(samples), 3, size, size), dtype=np.float32)
    for i, s in enumerate(samples):
        with open_image(s.path) as im:
            arr = np.asarray(to_8bit(im, s.path).convert("RGB"), dtype=np.float32) / 255.0
        out[i] = resize(arr, (size, size), anti_aliasing=True, preserve_range=True).transpose(2, 0, 1)
    return np.clip(out, 0, 1)


# -- fixture ------------------------------------------------------------------------------------------------
def _smooth_noise(rng, size: int, cells: int = 12):
    import numpy as np
    from PIL import Image

    low = Image.fromarray(rng.normal(0, 1, (cells, cells)).astype(np.float32), mode="F")
    return np.asarray(low.resize((size, size), Image.BICUBIC), dtype=np.float64)


def hfo_image(rng, positive: bool, brightness: float = 0.0, noise: float = 1.0, size: int = 227):
    """A CWT power map rendered with the jet colour map: x 0–340 ms, y 500 (top) to 250 Hz."""
    import matplotlib
    import numpy as np

    t = np.linspace(0, 340, size)[None, :]
    f = np.linspace(500, 250, size)[:, None]
    power = 0.22 + brightness + 0.07 * noise * _smooth_noise(rng, size)
    if positive:
        t0, f0 = rng.uniform(130, 210), rng.uniform(300, 450)
        dur = rng.uniform(30, 80)
        power += rng.uniform(0.45, 0.7) * np.exp(-((t - t0) ** 2) / (2 * (dur / 3) ** 2)
                                                 - (f - f0) ** 2 / (2 * 28.0**2))
    elif rng.random() < 0.5:  # a broadband artefact: a narrow vertical stripe over all frequencies
        t0, w = rng.uniform(30, 310), rng.uniform(4, 12)
        power += rng.uniform(0.35, 0.6) * np.exp(-((t - t0) ** 2) / (2 * w**2)) * np.ones_like(f)
    rgb = matplotlib.colormaps["jet"](np.clip(power, 0, 1))[..., :3]
    return (rgb * 255).round().astype(np.uint8)


def ied_trace(rng, positive: bool, gain: float = 1.0, noise: float = 1.0, n: int = 240):
    """A 600 ms trace (µV-like units) sampled at n points; positives carry a biphasic spike + slow wave at the
    centre."""
    import numpy as np
    from scipy.ndimage import gaussian_filter1d

    t = np.linspace(0, 600, n)
    x = gaussian_filter1d(rng.normal(0, 1, n), 2.0) * 3.0 * noise
    if positive:
        c, w = 300 + rng.normal(0, 10), rng.uniform(20, 70)
        x += -rng.uniform(11, 15) * np.exp(-((t - c) ** 2) / (2 * (w / 5) ** 2))  # sharp negative peak
        x += rng.uniform(3, 5) * np.exp(-((t - c - w / 2) ** 2) / (2 * (w / 6) ** 2))  # second phase
        x += -rng.uniform(3, 4.5) * np.exp(-((t - c - w - 90) ** 2) / (2 * 45.0**2))  # slow wave
    elif rng.random() < 0.5:  # ongoing oscillation
        x += rng.uniform(2, 4) * np.sin(2 * np.pi * rng.uniform(8, 20) * t / 1000 + rng.uniform(0, 6.3))
    return x * gain


def ied_image(rng, positive: bool, gain: float = 1.0, noise: float = 1.0, size: int = 227):
    """The trace drawn (5 px, dark blue, anti-aliased) on white, ±16 units over the image height (a fixed scale, so
    the patient's amplitude shows; the paper's traces have "a flexible range")."""
    return draw_trace(ied_trace(rng, positive, gain, noise), size, 16.0)


def draw_trace(x, size: int = 227, scale: float | None = None):
    """A 1-D trace as a size×size RGB image: 5 px dark-blue anti-aliased line on white, ±scale over the height
    (``None``: the trace's own max |x|, the paper's "flexible range")."""
    import numpy as np
    from skimage.draw import line_aa

    x = np.asarray(x, dtype=np.float64)
    scale = scale or float(np.abs(x).max()) or 1.0
    cols = np.linspace(4, size - 5, len(x))
    rows = np.clip(size / 2 - x * (size / 2 - 6) / scale, 3, size - 4)
    ink = np.zeros((size, size))
    for i in range(len(x) - 1):
        for dr in (-2, -1, 0, 1, 2):
            rr, cc, val = line_aa(int(round(rows[i])) + dr, int(round(cols[i])), int(round(rows[i + 1])) + dr,
                                  int(round(cols[i + 1])))
            np.maximum.at(ink, (rr, cc), val)
    color = np.array([20, 30, 140], dtype=np.float64)
    img = 255 * (1 - ink[..., None]) + color * ink[..., None]
    return img.round().astype(np.uint8)


def fixture(out: Path, seed: int = 0, patients: int = 5, per_patient: int = 60) -> Path:
    """5 patients × 60 images per task in the card's layout, with a labels.csv agreeing with the folders."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(seed)
    root = Path(out) / "ncnp-ecog"
    hfo_pos = [17, 18, 17, 18, 17]  # 87 / 300 = 29 % (the paper's 433 / 1500)
    ied_pos = [23, 23, 22, 23, 23]  # 114 / 300 = 38 % (573 / 1500)
    rows = []
    for k in range(patients):
        pid = f"pt{k + 1:02d}"
        # per patient: HFO brightness and IED amplitude offsets, and a background level for each (its recording noise)
        brightness, gain = rng.uniform(-0.12, 0.12), rng.uniform(0.6, 1.4)
        noise_hfo, noise_ied = rng.uniform(0.8, 1.8), rng.uniform(0.8, 1.5)
        for task, npos, draw, offset, noise in (("hfo", hfo_pos[k % 5], hfo_image, brightness, noise_hfo),
                                                ("ied", ied_pos[k % 5], ied_image, gain, noise_ied)):
            labels = np.array([1] * npos + [0] * (per_patient - npos))
            rng.shuffle(labels)
            for i, y in enumerate(labels):
                folder = root / task / pid / CLASSES[task][y]
                folder.mkdir(parents=True, exist_ok=True)
                path = folder / f"{pid}_{task}_{i:03d}.png"
                Image.fromarray(draw(rng, bool(y), offset, noise)).save(path)
                rows.append({"task": task, "patient": pid, "file": path.relative_to(root).as_posix(),
                             "label": CLASSES[task][y]})
    with open(root / LABELS_CSV, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=["task", "patient", "file", "label"])
        w.writeheader()
        w.writerows(rows)
    return root
