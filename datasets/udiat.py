"""UDIAT breast ultrasound "Dataset B" (Yap et al. 2017): 163 images with lesion masks, benign / malignant.

Layout (as distributed on request by the UDIAT Diagnostic Centre)::

    BUS_Dataset_B/
        original/000001.png ... 000163.png     grey-scale ultrasound images
        GT/000001.png ...                      binary lesion masks (0 / 255), same name and size
        DatasetB.xlsx                          one row per image: image id and type (Benign / Malignant)

The label sheet may also be given as ``DatasetB.csv`` with the same columns (read when no .xlsx is present).
Columns are found by name, case-insensitively: the id column is the first whose name contains "image" or "id"
(or the first column), the label column the first containing "type", "class" or "label". Ids match file stems
exactly or as numbers (``1`` matches ``000001.png``).
"""

from __future__ import annotations

from pathlib import Path

from medrun.errors import DataError

from . import DatasetInfo
from .ultrasound import CLASSES, Case, load, synthetic_lesion  # noqa: F401 (load re-exported)

DATASETS = [
    DatasetInfo(
        "udiat",
        "UDIAT breast ultrasound Dataset B (163 images, benign / malignant, lesion masks)",
        "BUS_Dataset_B/{original,GT}/<id>.png + DatasetB.xlsx (or DatasetB.csv)",
        "UDIAT Diagnostic Centre, Sabadell (on request; Yap et al. 2017); "
        "point at the folder holding original/ and GT/",
        "medrun.datasets.udiat:fixture",
        ("segmentation", "classification", "ultrasound"),
    ),
]

_HINT = "point at the folder holding original/, GT/ and DatasetB.xlsx, or try --fixture"


def label_file(root: Path) -> Path:
    for name in ("DatasetB.xlsx", "DatasetB.csv"):
        if (root / name).is_file():
            return root / name
    raise DataError(f"no label sheet in {root}: expected DatasetB.xlsx or DatasetB.csv",
                    fix="copy DatasetB.xlsx from the distribution next to original/ and GT/")


def check_layout(root: Path) -> None:
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"UDIAT folder not found at {root}", fix=_HINT)
    missing = [d for d in ("original", "GT") if not (root / d).is_dir()]
    if missing:
        inner = [p for p in root.iterdir() if p.is_dir() and (p / "original").is_dir() and (p / "GT").is_dir()]
        if inner:
            raise DataError(f"{root} is one level above the UDIAT folder", fix=f"use {inner[0]} instead")
        raise DataError(f"{root} does not have the UDIAT layout: missing folder(s) {', '.join(missing)}", fix=_HINT)
    label_file(root)


def _key(x) -> str:
    s = str(x).strip()
    if s.endswith(".png"):
        s = s[:-4]
    try:
        return str(int(float(s)))
    except ValueError:
        return s


def read_labels(path: Path) -> dict[str, int]:
    """{id key: 0 benign / 1 malignant} from DatasetB.xlsx or .csv (see the module docstring for the columns)."""
    import pandas as pd

    try:
        df = pd.read_excel(path) if path.suffix == ".xlsx" else pd.read_csv(path)
    except ImportError as e:
        from medrun.errors import EnvError

        raise EnvError(f"reading {path} needs openpyxl ({e})",
                       fix="pip install openpyxl, or save the sheet as DatasetB.csv") from None
    except Exception as e:  # corrupt sheet
        raise DataError(f"cannot read {path}: {e.__class__.__name__}: {e}", fix="re-export the sheet") from None
    cols = [str(c) for c in df.columns]
    low = [c.lower() for c in cols]
    id_col = next(
        (c for c, lc in zip(cols, low, strict=True) if "image" in lc or lc == "id"), cols[0] if cols else None
    )
    type_col = next(
        (c for c, lc in zip(cols, low, strict=True) if any(w in lc for w in ("type", "class", "label"))), None
    )
    if id_col is None or type_col is None:
        raise DataError(f"{path} has no image-id and type columns (found: {', '.join(cols) or 'none'})",
                        fix="the sheet needs columns 'Image' and 'Type' (Benign / Malignant)")
    out = {}
    for i, (ident, kind) in enumerate(zip(df[id_col], df[type_col], strict=True)):
        if pd.isna(ident):
            continue
        word = str(kind).strip().lower()
        if word not in CLASSES:
            raise DataError(f"{path} row {i + 2}: type '{kind}' is neither Benign nor Malignant",
                            fix="fix the cell or remove the row")
        out[_key(ident)] = CLASSES.index(word)
    return out


def read(root: Path) -> list[Case]:
    """Every image of ``original/`` with its ``GT/`` mask and its label from the sheet; a missing mask or an
    image the sheet does not list is an error naming the file."""
    root = Path(root)
    check_layout(root)
    sheet = label_file(root)
    labels = read_labels(sheet)
    cases = []
    for img in sorted((root / "original").glob("*.png")):
        mask = root / "GT" / img.name
        if not mask.is_file():
            raise DataError(f"mask missing for {img}: {mask}", fix="restore the mask file or remove the image")
        key = _key(img.stem)
        if key not in labels:
            raise DataError(f"{img.name} is not listed in {sheet}", fix="add its row (Image, Type) or remove the image")
        cases.append(Case(img.stem, img, (mask,), labels[key]))
    return cases


def fixture(out: Path, seed: int = 0, n_benign: int = 12, n_malignant: int = 12, size: int = 64) -> Path:
    """A miniature Dataset B: ``original/``, ``GT/`` and ``DatasetB.xlsx`` (columns Image, Type; ids as numbers,
    as a spreadsheet stores them), benign and malignant interleaved."""
    import numpy as np
    import pandas as pd
    from PIL import Image

    rng = np.random.default_rng(seed + 1)
    root = Path(out) / "BUS_Dataset_B"
    (root / "original").mkdir(parents=True, exist_ok=True)
    (root / "GT").mkdir(parents=True, exist_ok=True)
    kinds = ["Benign"] * n_benign + ["Malignant"] * n_malignant
    kinds = [kinds[i] for i in rng.permutation(len(kinds))]
    for i, kind in enumerate(kinds, start=1):
        img, mask = synthetic_lesion(rng, kind == "Malignant", size)
        Image.fromarray(img).save(root / "original" / f"{i:06d}.png")
        Image.fromarray(mask.astype(np.uint8) * 255).save(root / "GT" / f"{i:06d}.png")
    pd.DataFrame({"Image": list(range(1, len(kinds) + 1)), "Type": kinds}).to_excel(root / "DatasetB.xlsx", index=False)
    return root
