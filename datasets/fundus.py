"""Colour fundus photographs for the idqce pipeline (Table 3): MuReD and ODIR-5K (multi-label downstream sets) and
EyePACS (Kaggle diabetic-retinopathy-detection, the pre-training set, labels unused for SSL).

Layouts, each as distributed::

    MuReD (Mendeley Data pcmgk7cwx5 / the authors' "Multi-Label Retinal Diseases" release)
        <root>/images/<ID>.png                 2,208 colour fundus images (ID = the CSV's ID column)
        <root>/train_data.csv                  ID, then one 0/1 column per label (20: DR, NORMAL, MH, … OTHER)
        <root>/val_data.csv                    same columns; the held-out split (used as the test split here)

    ODIR-5K (Kaggle andrewmvd/ocular-disease-recognition-odir5k)
        <root>/full_df.csv                     one row per eye image: ID, Patient Age, Patient Sex, Left-Fundus,
                                               Right-Fundus, Left-/Right-Diagnostic Keywords, N,D,G,C,A,H,M,O (the
                                               patient's 0/1 labels), filepath, labels ("['N']"), target, filename
        <root>/ODIR-5K/Training Images/<ID>_left.jpg, <ID>_right.jpg   (Kaggle nests it once more,
                                               ODIR-5K/ODIR-5K/Training Images/, which is read too)

    EyePACS (Kaggle diabetic-retinopathy-detection)
        <root>/train/<patient>_left.jpeg, <patient>_right.jpeg        35,126 images
        <root>/trainLabels.csv                 image,level (0–4); optional, checked when present, unused for SSL

Splits (none is given by the paper): MuReD train_data.csv → training, val_data.csv → test; ODIR a seeded
patient-disjoint 80/20 split of full_df.csv's IDs; EyePACS every train/ image for pre-training with a seeded 10 % of
patients held out as the test list (reconstruction metrics; the 5 DR grades as one-hot labels when
trainLabels.csv is there). The idqce pipeline reads every image as grey (the mean of R, G, B), like its X-rays.

Checks, each a DataError naming the file and the fix: a missing CSV or image folder, a CSV without the columns the
reader needs or with a label column outside the card's set, a value that is not 0/1 (MuReD, ODIR) or a grade
outside 0–4 (EyePACS), with its line, and a row naming an image that is not there.

Fixtures (``fixture_mured``, ``fixture_odir``, ``fixture_eyepacs``): the same names, formats and quirks in
miniature (colour images: 96×96 PNGs for MuReD, 128×128 JPEGs for ODIR and EyePACS). A dark background, an orange
retina, a bright optic disc; labels draw patterns visible in grey: bright dots around the macula (MuReD ARMD, ODIR A),
dark red blots (MuReD DR, ODIR D, EyePACS grade ≥ 1, more with the grade), a large bright optic disc (MuReD ODC,
ODIR G), a dark macular hole (MuReD MH), an overall milky haze (ODIR C).
"""

from __future__ import annotations

import ast
import csv
from pathlib import Path

from medrun.errors import DataError

from . import DatasetInfo
from .nih import Entry

DATASETS = [
    DatasetInfo("mured", "MuReD: Multi-Label Retinal Diseases (2,208 colour fundus images, 20 labels, multi-label)",
                "images/*.png + train_data.csv + val_data.csv (ID, one 0/1 column per label)",
                "Mendeley Data, 'Multi-Label Retinal Diseases (MuReD) Dataset' (Rodríguez et al. 2022); point at the "
                "folder holding train_data.csv", "medrun.datasets.fundus:fixture_mured", ("multilabel", "fundus")),
    DatasetInfo("odir", "ODIR-5K: Ocular Disease Intelligent Recognition (6,392 fundus images of 3,358 patients, "
                "8 labels N,D,G,C,A,H,M,O)", "full_df.csv + ODIR-5K/Training Images/*.jpg",
                "Kaggle andrewmvd/ocular-disease-recognition-odir5k; point at the folder holding full_df.csv",
                "medrun.datasets.fundus:fixture_odir", ("multilabel", "fundus")),
    DatasetInfo("eyepacs", "EyePACS, Kaggle diabetic-retinopathy-detection (35,126 training fundus images; grades "
                "unused for self-supervised pre-training)", "train/*.jpeg (+ trainLabels.csv: image,level)",
                "Kaggle competition diabetic-retinopathy-detection (train.zip.00x + trainLabels.csv.zip, unpacked); "
                "point at the folder holding train/", "medrun.datasets.fundus:fixture_eyepacs", ("fundus", "ssl")),
]

MURED_LABELS = ("DR", "NORMAL", "MH", "ODC", "TSLN", "ARMD", "DN", "MYA", "BRVO", "ODP", "CRVO", "CNV", "RS", "ODE",
                "LS", "CSR", "HTR", "ASR", "CRS", "OTHER")
MURED_CSVS = {"train": "train_data.csv", "test": "val_data.csv"}
ODIR_LABELS = ("N", "D", "G", "C", "A", "H", "M", "O")
ODIR_CSV = "full_df.csv"
ODIR_IMAGE_DIRS = ("ODIR-5K/Training Images", "ODIR-5K/ODIR-5K/Training Images", "Training Images",
                   "preprocessed_images")
EYEPACS_LABELS = ("No DR", "Mild", "Moderate", "Severe", "Proliferative DR")
EYEPACS_CSV = "trainLabels.csv"
LABELS = {"mured": MURED_LABELS, "odir": ODIR_LABELS, "eyepacs": EYEPACS_LABELS}
# the labels each fixture draws (the fixture manifests probe these)
PATTERNS = {"mured": ("DR", "MH", "ODC", "ARMD"), "odir": ("D", "G", "C", "A"),
            "eyepacs": ("No DR", "Mild", "Moderate", "Severe", "Proliferative DR")}


def _rows(path: Path, fix: str) -> tuple[list[str], list[tuple[int, dict]]]:
    if not path.is_file():
        raise DataError(f"label CSV not found: {path}", fix=fix)
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            reader = csv.DictReader(f)
            header = [(h or "").strip() for h in (reader.fieldnames or [])]
            reader.fieldnames = header
            rows = [(line, {k: (v or "").strip() if isinstance(v, str) else v for k, v in r.items()})
                    for line, r in enumerate(reader, 2)]
    except (UnicodeDecodeError, csv.Error) as e:
        raise DataError(f"{path}: not a readable CSV ({e})", fix=fix) from None
    if not rows:
        raise DataError(f"{path} lists no images", fix=fix)
    return header, rows


def _binary(path: Path, line: int, name: str, col: str, value: str) -> int:
    try:
        v = float(value)
    except ValueError:
        v = None
    if v not in (0.0, 1.0):
        raise DataError(f"{path}, line {line} ({name}): {col} is '{value}', not 0 or 1",
                        fix="label columns hold 0 or 1 (as distributed)")
    return int(v)


def _missing(path: Path, folder: Path, missing: list[str], fix: str):
    if missing:
        raise DataError(f"{path} names {len(missing)} image(s) that are not in {folder} (first: {missing[0]})",
                        fix=fix)


def _root(root: Path, what: str, hint: str) -> Path:
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"{what} folder not found at {root}", fix=hint)
    return root


# -- MuReD ---------------------------------------------------------------------------------------------------------
_MURED_HINT = "point at the MuReD folder holding images/, train_data.csv and val_data.csv, or try --fixture"


def _mured_image(folder: Path, ident: str) -> Path | None:
    for name in (ident, f"{ident}.png", f"{ident}.tif", f"{ident}.jpg"):
        if (folder / name).is_file():
            return folder / name
    return None


def read_mured(root: Path) -> dict[str, list[Entry]]:
    """``{"train": [...], "test": [...]}``: train_data.csv and val_data.csv as entries (labels: the 1-columns)."""
    root = _root(root, "MuReD", _MURED_HINT)
    folder = root / "images"
    if not folder.is_dir():
        raise DataError(f"{root} has no images/ folder (MuReD's fundus PNGs)", fix=_MURED_HINT)
    out = {}
    for split, fname in MURED_CSVS.items():
        path = root / fname
        header, rows = _rows(path, _MURED_HINT)
        if "ID" not in header:
            raise DataError(f"{path} lacks the ID column (has {', '.join(header[:6])})",
                            fix="use MuReD's train_data.csv / val_data.csv as distributed")
        cols = [h for h in header if h and h != "ID"]
        unknown = [c for c in cols if c not in MURED_LABELS]
        if unknown:
            raise DataError(f"{path}: column(s) {', '.join(unknown)} not among MuReD's 20 labels",
                            fix=f"label columns are {', '.join(MURED_LABELS)}")
        entries, missing = [], []
        for line, row in rows:
            ident = row.get("ID") or ""
            if not ident:
                raise DataError(f"{path}, line {line}: empty ID", fix="remove the line or name its image")
            labels = tuple(c for c in cols if _binary(path, line, ident, c, row.get(c) or ""))
            img = _mured_image(folder, ident)
            if img is None:
                missing.append(f"{ident}.png")
                continue
            entries.append(Entry(img.name, img, labels, ident))
        _missing(path, folder, missing, "restore the missing images or remove their rows")
        out[split] = entries
    return out


# -- ODIR-5K ---------------------------------------------------------------------------------------------------------
_ODIR_HINT = "point at the folder holding full_df.csv and ODIR-5K/Training Images/ (Kaggle), or try --fixture"


def odir_images(root: Path) -> Path:
    for rel in ODIR_IMAGE_DIRS:
        if (root / rel).is_dir():
            return root / rel
    raise DataError(f"{root} has no ODIR-5K/Training Images/ folder", fix=_ODIR_HINT)


def read_odir(root: Path) -> list[Entry]:
    """Every row of full_df.csv (one eye image each) with the patient's labels among N, D, G, C, A, H, M, O."""
    root = _root(root, "ODIR-5K", _ODIR_HINT)
    path = root / ODIR_CSV
    header, rows = _rows(path, _ODIR_HINT)
    folder = odir_images(root)
    lacking = [c for c in ("ID", "filename", *ODIR_LABELS) if c not in header]
    if lacking:
        raise DataError(f"{path} lacks column(s) {', '.join(lacking)} (has {', '.join(header[:6])})",
                        fix="use Kaggle's full_df.csv as distributed")
    entries, missing = [], []
    for line, row in rows:
        name = row.get("filename") or ""
        if not name:
            raise DataError(f"{path}, line {line}: empty filename", fix="remove the line or name its image")
        labels = tuple(c for c in ODIR_LABELS if _binary(path, line, name, c, row.get(c) or ""))
        raw = row.get("labels")
        if raw:
            try:
                listed = ast.literal_eval(raw)
            except (ValueError, SyntaxError):
                listed = [raw]
            bad = [x for x in (listed if isinstance(listed, list) else [listed]) if x not in ODIR_LABELS]
            if bad:
                raise DataError(f"{path}, line {line} ({name}): labels '{raw}' holds {bad[0]!r}, not one of "
                                f"{', '.join(ODIR_LABELS)}", fix="use ODIR's 8 labels N,D,G,C,A,H,M,O")
        if not (folder / name).is_file():
            missing.append(name)
            continue
        entries.append(Entry(name, folder / name, labels, row.get("ID") or name.split("_")[0]))
    _missing(path, folder, missing, "restore the missing images or remove their rows")
    return entries


# -- EyePACS -------------------------------------------------------------------------------------------------------
_EYEPACS_HINT = "point at the Kaggle diabetic-retinopathy-detection folder holding train/ (and trainLabels.csv)"


def read_eyepacs(root: Path) -> list[Entry]:
    """Every ``train/*.jpeg``; labels (the one-hot DR grade) from trainLabels.csv when it is there."""
    root = _root(root, "EyePACS", _EYEPACS_HINT)
    folder = root / "train"
    if not folder.is_dir():
        raise DataError(f"{root} has no train/ folder (EyePACS' .jpeg images)", fix=_EYEPACS_HINT)
    files = {p.stem: p for p in sorted(folder.iterdir()) if p.suffix.lower() in (".jpeg", ".jpg")
             and not p.name.startswith(".")}
    if not files:
        raise DataError(f"no .jpeg images in {folder}", fix=_EYEPACS_HINT)
    grades: dict[str, int] = {}
    path = root / EYEPACS_CSV
    if path.is_file():
        header, rows = _rows(path, _EYEPACS_HINT)
        if "image" not in header or "level" not in header:
            raise DataError(f"{path} lacks the image/level columns (has {', '.join(header[:4])})",
                            fix="use Kaggle's trainLabels.csv as distributed, or remove it (labels are unused)")
        missing = []
        for line, row in rows:
            name, level = row.get("image") or "", row.get("level") or ""
            if level not in ("0", "1", "2", "3", "4"):
                raise DataError(f"{path}, line {line} ({name}): level '{level}' is not a DR grade 0–4",
                                fix="levels are 0 (no DR) … 4 (proliferative DR)")
            if name not in files:
                missing.append(f"{name}.jpeg")
            grades[name] = int(level)
        _missing(path, folder, missing, "restore the missing images or remove their rows from trainLabels.csv")
    return [Entry(p.name, p, (EYEPACS_LABELS[grades[s]],) if s in grades else (), s.split("_")[0])
            for s, p in files.items()]


# -- the splits the idqce pipeline uses --------------------------------------------------------------------------
def _held_out(entries: list[Entry], fraction: float, seed: int) -> tuple[list[Entry], list[Entry]]:
    import numpy as np

    patients = sorted({e.patient for e in entries})
    k = max(1, round(fraction * len(patients)))
    held = set(np.random.default_rng(seed).permutation(patients)[:k].tolist())
    return [e for e in entries if e.patient not in held], [e for e in entries if e.patient in held]


def read_split(name: str, root: Path, seed: int = 0) -> dict[str, list[Entry]]:
    """``{"train_val": [...], "test": [...]}`` for ``mured``, ``odir`` or ``eyepacs`` (see the module docstring)."""
    if name == "mured":
        s = read_mured(root)
        return {"train_val": s["train"], "test": s["test"]}
    entries = read_odir(root) if name == "odir" else read_eyepacs(root)
    train_val, test = _held_out(entries, 0.2 if name == "odir" else 0.1, seed + 1)
    return {"train_val": train_val, "test": test}


# -- fixtures --------------------------------------------------------------------------------------------------------
def draw_fundus(signs, rng, size: int = 128, noise: float = 5.0):
    """A colour 'fundus photograph' (size×size×3 uint8) with the patterns of ``signs`` (see the docstring):
    ``drusen``, ``blots`` (an int: how many), ``cup``, ``hole``, ``haze``."""
    import numpy as np

    s = float(size)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    cx, cy = s / 2 + rng.normal(0, s * 0.01), s / 2 + rng.normal(0, s * 0.01)
    img = np.zeros((size, size, 3), np.float32)
    retina = (xx - cx) ** 2 + (yy - cy) ** 2 <= (s * 0.46) ** 2
    img[retina] = (170, 75, 35)
    side = 1 if rng.random() < 0.5 else -1  # left/right eye: disc on either side
    dx, dy = cx + side * s * 0.22, cy + rng.normal(0, s * 0.02)
    r_disc = s * (0.12 if "cup" in signs else 0.06) * rng.uniform(0.9, 1.1)
    img[(xx - dx) ** 2 + (yy - dy) ** 2 <= r_disc ** 2] = (250, 220, 150)
    for _ in range(4):  # vessels leaving the disc
        ang = rng.uniform(0, 2 * np.pi)
        t = np.abs((xx - dx) * np.sin(ang) - (yy - dy) * np.cos(ang)) < s * 0.012
        along = (xx - dx) * np.cos(ang) + (yy - dy) * np.sin(ang)
        img[t & (along > 0) & retina] = (120, 30, 20)
    mx, my = cx - side * s * 0.05, cy
    img[(xx - mx) ** 2 + (yy - my) ** 2 <= (s * 0.07) ** 2] *= 0.8
    if "drusen" in signs:
        for _ in range(int(rng.integers(6, 10))):
            px, py = mx + rng.normal(0, s * 0.07), my + rng.normal(0, s * 0.07)
            img[(xx - px) ** 2 + (yy - py) ** 2 <= (s * 0.02) ** 2] = (255, 240, 130)
    if "hole" in signs:
        img[(xx - mx) ** 2 + (yy - my) ** 2 <= (s * 0.05) ** 2] = (60, 15, 10)
    for _ in range(int(signs.get("blots", 0)) if isinstance(signs, dict) else 0):
        px, py = cx + rng.uniform(-0.3, 0.3) * s, cy + rng.uniform(-0.3, 0.3) * s
        img[((xx - px) ** 2 + (yy - py) ** 2 <= (s * 0.03) ** 2) & retina] = (70, 10, 5)
    if "haze" in signs:
        img[retina] = img[retina] * 0.5 + 110
    img = img * rng.uniform(0.85, 1.15) + rng.normal(0, noise, (size, size, 1))
    return np.clip(img, 0, 255).astype(np.uint8)


def _pick(rng, patterns, p_none: float = 0.15, others=()) -> tuple[str, ...]:
    if rng.random() < p_none:
        return ()
    n = int(rng.choice([1, 2], p=[0.65, 0.35]))
    labels = set(rng.choice(list(patterns), size=n, replace=False).tolist())
    if others and rng.random() < 0.1:
        labels.add(str(rng.choice(list(others))))
    return tuple(sorted(labels))


def fixture_mured(out_dir: Path, seed: int = 0, n_train: int = 240, n_val: int = 80, size: int = 96) -> Path:
    """MuReD's layout in miniature: ``images/<ID>.png``, ``train_data.csv`` and ``val_data.csv`` (ID + 20 0/1
    columns; NORMAL = 1 when no other label, as in MuReD)."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(seed)
    root = Path(out_dir)
    (root / "images").mkdir(parents=True, exist_ok=True)
    others = [x for x in MURED_LABELS if x not in PATTERNS["mured"] and x != "NORMAL"]
    ident = 0
    for fname, n in (("train_data.csv", n_train), ("val_data.csv", n_val)):
        lines = [",".join(("ID", *MURED_LABELS))]
        for _ in range(n):
            ident += 1
            labels = set(_pick(rng, PATTERNS["mured"], others=others)) or {"NORMAL"}
            signs = {"drusen": 1} if "ARMD" in labels else {}
            signs.update({"cup": 1} if "ODC" in labels else {}, **({"hole": 1} if "MH" in labels else {}))
            if "DR" in labels:
                signs["blots"] = int(rng.integers(4, 8))
            Image.fromarray(draw_fundus(signs, rng, size, 2.0)).save(root / "images" / f"{ident}.png")
            lines.append(",".join([str(ident), *("1" if x in labels else "0" for x in MURED_LABELS)]))
        (root / fname).write_text("\n".join(lines) + "\n")
    return root


ODIR_HEADER = ("ID,Patient Age,Patient Sex,Left-Fundus,Right-Fundus,Left-Diagnostic Keywords,"
               "Right-Diagnostic Keywords,N,D,G,C,A,H,M,O,filepath,labels,target,filename")
_KEYWORDS = {"N": "normal fundus", "D": "moderate non proliferative retinopathy", "G": "glaucoma",
             "C": "cataract", "A": "dry age-related macular degeneration", "H": "hypertensive retinopathy",
             "M": "pathological myopia", "O": "drusen"}


def fixture_odir(out_dir: Path, seed: int = 0, n_patients: int = 160, size: int = 128) -> Path:
    """ODIR-5K's Kaggle layout in miniature: ``full_df.csv`` (one row per eye image, the patient's N…O columns,
    Kaggle's ``filepath``, ``labels`` as "['D']", ``target`` as a one-hot list) and
    ``ODIR-5K/Training Images/<ID>_left.jpg`` / ``_right.jpg``."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(seed)
    root = Path(out_dir)
    folder = root / "ODIR-5K" / "Training Images"
    folder.mkdir(parents=True, exist_ok=True)
    rows = []
    for pid in range(n_patients):
        labels = set(_pick(rng, PATTERNS["odir"], others=("H", "M", "O"))) or {"N"}
        signs = {k: 1 for lab, k in (("A", "drusen"), ("G", "cup"), ("C", "haze")) if lab in labels}
        if "D" in labels:
            signs["blots"] = int(rng.integers(4, 8))
        kw = ",".join(_KEYWORDS[x] for x in sorted(labels))
        first = sorted(labels)[0]
        age, sex = int(rng.integers(30, 85)), ("Male", "Female")[int(rng.integers(2))]
        for eye in ("left", "right"):
            name = f"{pid}_{eye}.jpg"
            Image.fromarray(draw_fundus(signs, rng, size)).save(folder / name, quality=90)
            target = "[" + ", ".join("1" if x == first else "0" for x in ODIR_LABELS) + "]"
            rows.append(",".join([str(pid), str(age), sex, f"{pid}_left.jpg", f"{pid}_right.jpg", f'"{kw}"',
                                  f'"{kw}"', *("1" if x in labels else "0" for x in ODIR_LABELS),
                                  f"../input/ocular-disease-recognition-odir5k/ODIR-5K/Training Images/{name}",
                                  f"\"['{first}']\"", f'"{target}"', name]))
    (root / ODIR_CSV).write_text(ODIR_HEADER + "\n" + "\n".join(rows) + "\n")
    return root


def fixture_eyepacs(out_dir: Path, seed: int = 0, n_patients: int = 120, size: int = 128) -> Path:
    """EyePACS' Kaggle layout in miniature: ``train/<patient>_left.jpeg`` / ``_right.jpeg`` and
    ``trainLabels.csv`` (image,level); more dark blots with the grade."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(seed)
    root = Path(out_dir)
    (root / "train").mkdir(parents=True, exist_ok=True)
    lines = ["image,level"]
    for i in range(n_patients):
        patient = 10 + 3 * i + int(rng.integers(3))
        for eye in ("left", "right"):
            level = int(rng.choice(5, p=[0.5, 0.15, 0.2, 0.08, 0.07]))
            signs = {"blots": 3 * level, **({"drusen": 1} if level >= 3 else {})}
            Image.fromarray(draw_fundus(signs, rng, size)).save(root / "train" / f"{patient}_{eye}.jpeg",
                                                                quality=90)
            lines.append(f"{patient}_{eye},{level}")
    (root / EYEPACS_CSV).write_text("\n".join(lines) + "\n")
    return root
