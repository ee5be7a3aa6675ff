"""NIH ChestX-ray14 (Wang et al. 2017): 112,120 frontal chest X-rays of 30,805 patients, 14 findings per image.
One reader for every pipeline that uses it (hamming-retrieval, idqce).

Layout (Kaggle ``nih-chest-xrays/data``; the NIH Clinical Center box gives the same files, its ``images_0NN.tar.gz``
unpacking to one ``images/`` folder, which is read too)::

    <root>/
        Data_Entry_2017.csv            one row per image (the NIH box: Data_Entry_2017_v2020.csv)
        train_val_list.txt             official patient-disjoint split: 86,524 image names
        test_list.txt                  25,596 image names
        images_001/images/00000001_000.png ... images_012/images/*.png     1024×1024 8-bit PNGs
        BBox_List_2017.csv, LOG_*.pdf, README_*.pdf                         (not read)

``Data_Entry_2017*.csv`` columns: ``Image Index`` (file name), ``Finding Labels`` (``|``-separated findings, or
``No Finding``), ``Follow-up #``, ``Patient ID``, ``Patient Age``, ``Patient Gender`` (v2020: ``Patient Sex``),
``View Position`` and the original size and pixel spacing. Kaggle's header spells the last two as
``OriginalImage[Width,Height],OriginalImagePixelSpacing[x,y],``: the commas inside the brackets split each into two
columns and the trailing comma adds an empty twelfth one. Only the first columns are read, by name.

Checks, each a DataError naming the file and the fix: a label CSV without the three columns this reader needs, a
``Finding Labels`` token outside the 14 findings and ``No Finding`` (line number given), an ``Image Index`` whose
PNG is under none of the image folders, a split list naming an image the CSV does not have.

Pixels (:func:`load_gray`): grayscale stays as it is, 16-bit PNGs are brought to 8 bits by their bit depth, an
alpha channel is dropped, and colour images (a few NIH files are RGB or RGBA) become the mean of their three
channels, as the hamming-retrieval card's reference code does. :func:`image_array` decodes a list of files once
into an (N, S, S) uint8 array, optionally kept as a ``.npy`` cache file that a later stage memory-maps.

The authors of the hamming-retrieval paper also released their own split (Mendeley c5x35tmj5v/1) as ``.npy``
images in ``train/``, ``gallery/`` and ``query/``, the labels in each file name (third ``_``-field, ``|``-separated):
:func:`read_npy_part` reads it, with a parser that keeps ``Pleural_Thickening`` whole (:func:`npy_labels`).

The fixture (:func:`fixture`) writes the Kaggle layout: 400 grayscale 128×128 PNGs in ``images_001/images/``,
``Data_Entry_2017.csv`` with Kaggle's header quirk, and patient-disjoint ``train_val_list.txt`` / ``test_list.txt``.
A torso with two dark lungs; four findings draw their own pattern (Cardiomegaly a large bright central blob,
Effusion a bright band across the lung bases, Nodule a small bright disc in a lung, Pneumothorax a dark wedge at
the upper left), 1–3 of them per image; 8 % of images are ``No Finding`` and a few carry ``Hernia`` (alone or
beside another finding) so that selection rules are exercised. Made-up patients have 1–3 follow-ups each.
"""

from __future__ import annotations

import csv
import os
from dataclasses import dataclass
from pathlib import Path

from medrun.errors import DataError

from . import DatasetInfo

DATASETS = [
    DatasetInfo("nih", "NIH ChestX-ray14 (112,120 frontal chest X-rays, 14 findings, multi-label)",
                "Data_Entry_2017*.csv + train_val_list.txt + test_list.txt + images_0NN/images/*.png",
                "Kaggle nih-chest-xrays/data, or the NIH Clinical Center's CXR8 box folder; point at the folder "
                "holding Data_Entry_2017.csv", "medrun.datasets.nih:fixture", ("multilabel", "xray", "retrieval")),
]

# the 14 findings, in the order of the NIH paper (Wang et al. 2017)
FINDINGS = ("Atelectasis", "Cardiomegaly", "Effusion", "Infiltration", "Mass", "Nodule", "Pneumonia", "Pneumothorax",
            "Consolidation", "Edema", "Emphysema", "Fibrosis", "Pleural_Thickening", "Hernia")
NO_FINDING = "No Finding"
REQUIRED = ("Image Index", "Finding Labels", "Patient ID")
SPLIT_LISTS = {"train_val": "train_val_list.txt", "test": "test_list.txt"}
NPY_PARTS = ("train", "gallery", "query")
_HINT = ("point at the folder holding Data_Entry_2017.csv and images_001/images/ … (Kaggle nih-chest-xrays/data), "
         "or try --fixture")


@dataclass(frozen=True)
class Entry:
    """One row of the label CSV: the image file, its findings (no ``No Finding``), patient and view."""

    name: str  # Image Index, e.g. 00000001_000.png
    path: Path
    labels: tuple[str, ...]
    patient: str
    follow_up: int | None = None
    view: str = ""


# -- layout ------------------------------------------------------------------------------------------------------
def labels_csv(root: Path, name: str | None = None) -> Path:
    """The label CSV: ``name`` when given, else ``Data_Entry_2017.csv`` (Kaggle; the paper's copy) or the one other
    ``Data_Entry_2017*.csv`` there is."""
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"NIH ChestX-ray14 folder not found at {root}", fix=_HINT)
    if name:
        path = root / name
        if not path.is_file():
            raise DataError(f"label CSV not found: {path}", fix="set dataset.labels_csv to a file name in the root "
                                                                 "(e.g. Data_Entry_2017.csv)")
        return path
    found = sorted(p for p in root.glob("Data_Entry_2017*.csv") if p.is_file())
    if not found:
        inner = [p for p in sorted(root.iterdir()) if p.is_dir() and any(p.glob("Data_Entry_2017*.csv"))]
        if inner:
            raise DataError(f"{root} is one level above the NIH ChestX-ray14 folder", fix=f"use {inner[0]} instead")
        raise DataError(f"{root} has no Data_Entry_2017*.csv (the NIH ChestX-ray14 label file)", fix=_HINT)
    exact = [p for p in found if p.name == "Data_Entry_2017.csv"]
    return exact[0] if exact else found[0]


def image_folders(root: Path) -> list[Path]:
    """``images_0NN/images`` folders (Kaggle), else ``images_0NN`` holding PNGs, else one ``images/`` folder."""
    root = Path(root)
    nested = sorted(p / "images" for p in root.glob("images_*") if (p / "images").is_dir())
    flat = sorted(p for p in root.glob("images_*") if p.is_dir() and not (p / "images").is_dir())
    single = [root / "images"] if (root / "images").is_dir() else []
    folders = nested + flat + single
    if not folders:
        raise DataError(f"{root} has no image folder (images_001/images/, … or images/)", fix=_HINT)
    return folders


def check_layout(root: Path, csv_name: str | None = None) -> None:
    """Cheap checks before the data is fingerprinted: the label CSV and an image folder exist."""
    labels_csv(root, csv_name)
    image_folders(root)


def _index_images(root: Path) -> dict[str, Path]:
    out: dict[str, Path] = {}
    for folder in image_folders(root):
        with os.scandir(folder) as it:
            for e in it:
                if not e.name.startswith(".") and e.name.lower().endswith(".png"):
                    out.setdefault(e.name, Path(e.path))
    return out


def read_entries(root: Path, csv_name: str | None = None) -> list[Entry]:
    """Every row of the label CSV as an :class:`Entry`, after checking its labels and that each image exists."""
    root = Path(root)
    path = labels_csv(root, csv_name)
    files = _index_images(root)
    allowed = set(FINDINGS) | {NO_FINDING}
    entries: list[Entry] = []
    missing: list[str] = []
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            reader = csv.DictReader(f)
            header = [h.strip() for h in (reader.fieldnames or [])]
            lacking = [c for c in REQUIRED if c not in header]
            if lacking:
                has = ", ".join(header[:6]) or "nothing"
                raise DataError(f"{path} lacks column(s) {', '.join(lacking)} (has {has})",
                                fix="use the NIH Data_Entry_2017.csv as distributed")
            reader.fieldnames = header
            for line, row in enumerate(reader, 2):
                name = (row.get("Image Index") or "").strip()
                if not name:
                    raise DataError(f"{path}, line {line}: empty Image Index", fix="remove the line or name its image")
                tokens = [t.strip() for t in (row.get("Finding Labels") or "").split("|") if t.strip()]
                bad = [t for t in tokens if t not in allowed]
                if bad or not tokens:
                    raise DataError(f"{path}, line {line} ({name}): Finding Labels '{row.get('Finding Labels')}' "
                                    f"holds {', '.join(repr(b) for b in bad) or 'no label'}, not one of the 14 "
                                    f"findings or '{NO_FINDING}'",
                                    fix=f"use {', '.join(FINDINGS)} or {NO_FINDING}, separated by '|'")
                if NO_FINDING in tokens and len(tokens) > 1:
                    raise DataError(f"{path}, line {line} ({name}): '{NO_FINDING}' together with findings",
                                    fix=f"write either findings or '{NO_FINDING}'")
                if name not in files:
                    missing.append(name)
                    continue
                fu = (row.get("Follow-up #") or "").strip()
                entries.append(Entry(name, files[name], tuple(t for t in tokens if t != NO_FINDING),
                                     (row.get("Patient ID") or "").strip(), int(fu) if fu.isdigit() else None,
                                     (row.get("View Position") or "").strip()))
    except UnicodeDecodeError as e:
        raise DataError(f"{path} is not a UTF-8 CSV ({e.reason})", fix="use the NIH Data_Entry_2017.csv") from None
    except csv.Error as e:
        raise DataError(f"{path}: not a readable CSV ({e})", fix="use the NIH Data_Entry_2017.csv") from None
    if missing:
        where = ", ".join(str(p.relative_to(root)) for p in image_folders(root)[:2])
        raise DataError(f"{path} names {len(missing)} image(s) that are under no image folder of {root} "
                        f"(first: {missing[0]}; looked in {where} …)",
                        fix="restore the missing PNGs (Kaggle ships images_001 … images_012), or point "
                            "dataset.labels_csv at a CSV listing only the images you have")
    if not entries:
        raise DataError(f"{path} lists no images", fix=_HINT)
    return entries


def read_list(root: Path, split: str, entries: list[Entry]) -> list[Entry]:
    """The entries of an official split list (``train_val`` or ``test``), in the list's order."""
    path = Path(root) / SPLIT_LISTS[split]
    if not path.is_file():
        raise DataError(f"official split list not found: {path}", fix="copy train_val_list.txt and test_list.txt from "
                                                                         "the NIH release next to Data_Entry_2017.csv")
    by_name = {e.name: e for e in entries}
    out = []
    for line, name in enumerate(path.read_text().splitlines(), 1):
        name = name.strip()
        if not name:
            continue
        if name not in by_name:
            raise DataError(f"{path}, line {line}: {name} is not a row of the label CSV",
                            fix="use the split lists that came with the same Data_Entry_2017 release")
        out.append(by_name[name])
    return out


def multi_hot(entries, labels) -> np.ndarray:  # noqa: F821 (numpy imported inside)
    """(N, L) uint8 label matrix of ``entries`` (or of label tuples) over ``labels``."""
    import numpy as np

    col = {lab: i for i, lab in enumerate(labels)}
    y = np.zeros((len(entries), len(labels)), np.uint8)
    for i, e in enumerate(entries):
        for lab in getattr(e, "labels", e):
            if lab in col:
                y[i, col[lab]] = 1
    return y


def check_labels(labels) -> list[str]:
    """Label names as given, or a DataError naming the ones that are not NIH findings."""
    bad = [lab for lab in labels if lab not in FINDINGS]
    if bad:
        raise DataError(f"unknown NIH finding(s): {', '.join(bad)}", fix=f"use {', '.join(FINDINGS)}")
    return list(labels)


# -- the authors' released .npy split (hamming-retrieval) -------------------------------------------------------
@dataclass(frozen=True)
class NpyItem:
    name: str
    path: Path
    labels: tuple[str, ...]


def npy_labels(stem: str, path: Path | None = None) -> tuple[str, ...]:
    """Labels of a released file name ``<patient>_<follow-up>_<A|B|…>[_…]``: everything after the second ``_``,
    split on ``|``; a token that is not a finding but starts with one followed by ``_`` (a trailing field) keeps
    the finding. ``Pleural_Thickening`` stays whole (the authors' ``split("_")`` cut it to ``Pleural``)."""
    parts = stem.split("_", 2)
    if len(parts) < 3 or not parts[2]:
        raise DataError(f"{path or stem}: no labels in the file name (expected <patient>_<follow-up>_<labels>.npy)",
                        fix="use the files of the authors' release as named there")
    out = []
    for token in parts[2].split("|"):
        token = token.strip()
        if token in FINDINGS or token == NO_FINDING:
            out.append(token)
            continue
        prefix = [f for f in sorted(FINDINGS, key=len, reverse=True) if token.startswith(f + "_")]
        if not prefix:
            raise DataError(f"{path or stem}: label '{token}' in the file name is not an NIH finding",
                            fix=f"labels are {', '.join(FINDINGS)}, separated by '|'")
        out.append(prefix[0])
    return tuple(t for t in out if t != NO_FINDING)


def read_npy_part(root: Path, part: str) -> list[NpyItem]:
    folder = Path(root) / part
    if not folder.is_dir():
        raise DataError(f"{Path(root)} has no {part}/ folder (the authors' released split has train/, gallery/, "
                        "query/)", fix="point at the folder holding them")
    items = [NpyItem(p.name, p, npy_labels(p.stem, p)) for p in sorted(folder.glob("*.npy"))
             if not p.name.startswith(".")]
    if not items:
        raise DataError(f"no .npy images in {folder}", fix="point at the folder of the authors' released split")
    return items


# -- pixels --------------------------------------------------------------------------------------------------------
def channels(path: Path) -> int:
    """Colour channels of an image file without its alpha (1 for grayscale, 3 for RGB/RGBA); ``.npy`` arrays count
    a leading or trailing axis of 3 or 4 as channels."""
    import numpy as np

    from .images import open_image

    if str(path).lower().endswith(".npy"):
        a = _load_npy(path, mmap=True)
        if a.ndim == 2:
            return 1
        c = a.shape[0] if a.shape[0] <= 4 else a.shape[-1]
        return int(c) - (1 if c in (2, 4) else 0)
    with open_image(path, decode=False) as im:
        if im.mode == "P":  # a palette: grey entries only count as one channel
            rgb = np.asarray(im.convert("RGB"))
            return 1 if (rgb == rgb[..., :1]).all() else 3
        return len([b for b in im.getbands() if b != "A"])


def _load_npy(path: Path, mmap: bool = False):
    import numpy as np

    try:
        return np.load(path, allow_pickle=False, mmap_mode="r" if mmap else None)
    except (ValueError, OSError, EOFError) as e:
        raise DataError(f"cannot read {path}: {type(e).__name__}: {str(e).splitlines()[0][:160] if str(e) else ''}",
                        fix="replace or delete the file, then run again") from None


def load_gray(path: Path, size: int):
    """(size, size) uint8: 8 bits by the file's bit depth, alpha dropped, colour averaged over its three channels,
    bilinear resize. ``.npy`` images: uint8 as is, uint16 / 257, floats ≤ 1 scaled by 255 (else clipped)."""
    import numpy as np
    from PIL import Image

    from .images import open_image, to_8bit

    if str(path).lower().endswith(".npy"):
        a = np.asarray(_load_npy(path))
        if a.ndim == 3:
            a = a if a.shape[-1] <= 4 else np.moveaxis(a, 0, -1)
            a = a[..., :3].astype(np.float64).mean(-1) if a.shape[-1] >= 3 else a[..., 0]
        if a.ndim != 2:
            raise DataError(f"{path} holds an array of shape {a.shape}, not an image", fix="H×W or H×W×C arrays")
        if a.dtype == np.uint16:
            a = a / 257.0
        elif a.dtype.kind == "f" and np.isfinite(a).all() and a.max(initial=0) <= 1.0:
            a = a * 255.0
        arr = np.clip(np.rint(np.nan_to_num(a.astype(np.float64))), 0, 255).astype(np.uint8)
    else:
        with open_image(path) as im:
            im = to_8bit(im, path)
            if im.mode in ("L", "LA"):
                arr = np.asarray(im.convert("L"))
            else:
                arr = np.rint(np.asarray(im.convert("RGB"), dtype=np.float64).mean(-1)).astype(np.uint8)
    if arr.shape != (size, size):
        arr = np.asarray(Image.fromarray(arr).resize((size, size), Image.BILINEAR))
    return arr


def image_array(paths, size: int, cache: Path | None = None, workers: int = 0, log=None):
    """(N, size, size) uint8 of ``paths`` through :func:`load_gray`. With ``cache`` (a ``.npy`` path whose name the
    caller derives from the data's content and ``size``) the array is decoded once, written under a temporary name
    and renamed, and memory-mapped by every later call. ``workers`` > 0 decodes in that many processes."""
    import numpy as np

    paths = list(paths)
    if cache is not None and Path(cache).is_file():
        try:
            arr = np.load(cache, mmap_mode="r", allow_pickle=False)
            if arr.shape == (len(paths), size, size) and arr.dtype == np.uint8:
                return arr
        except (ValueError, OSError):
            pass  # a damaged cache file is rebuilt
    if log and len(paths) > 2000:
        log(f"decoding {len(paths)} images at {size}×{size} once" + (f" into {cache}" if cache else ""))
    if workers > 0:
        from joblib import Parallel, delayed

        chunks = [paths[i:i + 256] for i in range(0, len(paths), 256)]
        parts = Parallel(n_jobs=workers)(delayed(_decode)(c, size) for c in chunks)
        arr = np.concatenate(parts) if parts else np.zeros((0, size, size), np.uint8)
    else:
        arr = _decode(paths, size)
    if cache is not None:
        cache = Path(cache)
        cache.parent.mkdir(parents=True, exist_ok=True)
        tmp = cache.with_name(f".{cache.name}.{os.getpid()}.tmp")
        try:
            out = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.uint8, shape=arr.shape)
            out[:] = arr
            out.flush()
            del out
            os.replace(tmp, cache)
        except OSError:
            tmp.unlink(missing_ok=True)  # the cache only saves time: without it the array is still returned
    return arr


def _decode(paths, size: int):
    import numpy as np

    out = np.empty((len(paths), size, size), np.uint8)
    for i, p in enumerate(paths):
        out[i] = load_gray(p, size)
    return out


# -- fixture -------------------------------------------------------------------------------------------------------
PATTERNS = ("Cardiomegaly", "Effusion", "Nodule", "Pneumothorax")  # the findings the fixture draws
CSV_HEADER = ("Image Index,Finding Labels,Follow-up #,Patient ID,Patient Age,Patient Gender,View Position,"
              "OriginalImage[Width,Height],OriginalImagePixelSpacing[x,y],")


def draw_cxr(labels, rng, size: int = 128):
    """A grayscale 'chest X-ray' (uint8, size×size) whose visible structure follows ``labels``."""
    import numpy as np

    s = float(size)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    cx, cy = s / 2 + rng.normal(0, s * 0.02), s / 2 + rng.normal(0, s * 0.02)
    img = np.full((size, size), 25.0, np.float32)
    body = ((xx - cx) / (s * 0.44)) ** 2 + ((yy - cy - s * 0.04) / (s * 0.5)) ** 2 <= 1
    img[body] = 135.0
    lungs = []
    for side in (-1, 1):
        lx, ly = cx + side * s * 0.19, cy - s * 0.04
        lung = ((xx - lx) / (s * 0.14)) ** 2 + ((yy - ly) / (s * 0.3)) ** 2 <= 1
        img[lung] = 60.0
        lungs.append((lx, ly, lung))
    heart_r = s * (0.22 if "Cardiomegaly" in labels else 0.11) * rng.uniform(0.92, 1.08)
    heart = ((xx - cx - s * 0.03) / heart_r) ** 2 + ((yy - cy - s * 0.12) / (heart_r * 0.85)) ** 2 <= 1
    img[heart] = 200.0 if "Cardiomegaly" in labels else 150.0
    if "Effusion" in labels:
        top = cy + s * rng.uniform(0.1, 0.16)
        band = (yy > top) & (yy < cy + s * 0.28)
        for _, _, lung in lungs:
            img[band & lung] = 190.0
    if "Nodule" in labels:
        lx, ly, _ = lungs[int(rng.integers(2))]
        nx, ny = lx + rng.uniform(-0.07, 0.07) * s, ly + rng.uniform(-0.18, 0.05) * s
        img[((xx - nx) ** 2 + (yy - ny) ** 2) <= (s * 0.05) ** 2] = 235.0
    if "Pneumothorax" in labels:
        lx, ly, _ = lungs[0]  # the image's left = the patient's right lung
        wedge = (xx - (lx - s * 0.14)) + (yy - (ly - s * 0.3)) < s * rng.uniform(0.24, 0.3)
        img[wedge & body & (yy < ly) & (xx < lx + s * 0.05)] = 5.0
    if "Hernia" in labels:
        img[((xx - cx) ** 2 + (yy - cy - s * 0.36) ** 2) <= (s * 0.06) ** 2] = 170.0
    img = img * rng.uniform(0.85, 1.15) + rng.normal(0, 6, (size, size))
    return np.clip(img, 0, 255).astype(np.uint8)


def _fixture_labels(rng) -> tuple[str, ...]:
    u = rng.random()
    if u < 0.08:
        return ()
    if u < 0.1:
        return ("Hernia",)
    n = int(rng.choice([1, 2, 3], p=[0.5, 0.35, 0.15]))
    labels = set(rng.choice(PATTERNS, size=n, replace=False).tolist())
    if rng.random() < 0.03:
        labels.add("Hernia")
    return tuple(sorted(labels))


def fixture(out_dir: Path, seed: int = 0, n: int = 400, size: int = 128) -> Path:
    """The Kaggle layout in miniature (see the module docstring); returns the root to pass as ``--data-dir``."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(seed)
    root = Path(out_dir)
    folder = root / "images_001" / "images"
    folder.mkdir(parents=True, exist_ok=True)
    rows, by_patient = [], {}
    patient = 0
    while len(rows) < n:
        patient += 1
        for follow in range(min(int(rng.integers(1, 4)), n - len(rows))):
            labels = _fixture_labels(rng)
            name = f"{patient:08d}_{follow:03d}.png"
            Image.fromarray(draw_cxr(labels, rng, size)).save(folder / name, optimize=True)
            sex, view = ("M", "F")[int(rng.integers(2))], ("PA", "AP")[int(rng.random() < 0.3)]
            rows.append(f"{name},{'|'.join(labels) or NO_FINDING},{follow},{patient},{int(rng.integers(18, 90))},"
                        f"{sex},{view},2500,2048,0.143,0.143,")
            by_patient.setdefault(patient, []).append(name)
    (root / "Data_Entry_2017.csv").write_text(CSV_HEADER + "\n" + "\n".join(rows) + "\n")
    test_patients = {p for p in by_patient if p % 4 == 0}  # patient-disjoint, about a quarter, as the official lists
    lists = {"train_val": [], "test": []}
    for p, names in by_patient.items():
        lists["test" if p in test_patients else "train_val"] += names
    for split, fname in SPLIT_LISTS.items():
        (root / fname).write_text("\n".join(sorted(lists[split])) + "\n")
    return root
