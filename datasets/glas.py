"""GlaS: the MICCAI 2015 Gland Segmentation challenge (Sirinukunwattana et al. 2017), colon histology (H&E) with
gland instance annotations and a benign / malignant grade per image.

Layout (as unpacked from the Warwick "Warwick QU Dataset (Released 2016_07_08)" archive)::

    Warwick QU Dataset (Released 2016_07_08)/
        train_1.bmp  train_1_anno.bmp  ...      85 training images
        testA_1.bmp  testA_1_anno.bmp  ...      60 images of Test A
        testB_1.bmp  testB_1_anno.bmp  ...      20 images of Test B
        Grade.csv    name, patient ID, grade (GlaS), grade (Sirinukunwattana et al. 2015)

Images are 24-bit RGB BMPs (mostly 775×522, some larger); an ``_anno.bmp`` holds the gland instances (0 background,
1…n one gland each, labels need not be consecutive). ``Grade.csv`` gives the grade as ``benign`` / ``malignant``;
the released file pads its cells with spaces, which the reader strips. The split is the official one: the part is
the file name's prefix (``train``, ``testA``, ``testB``). Labels: benign 0, malignant 1.
"""

from __future__ import annotations

import csv
import re
from pathlib import Path

from medrun.errors import DataError

from . import DatasetInfo
from .ultrasound import CLASSES, Case

DATASETS = [
    DatasetInfo("glas", "GlaS colon histology: gland instances and benign / malignant grade (official split)",
                "Warwick QU Dataset (Released 2016_07_08)/{train,testA,testB}_N.bmp + _N_anno.bmp, Grade.csv",
                "Warwick TIA Centre GlaS challenge page; point at the 'Warwick QU Dataset (Released 2016_07_08)' "
                "folder", "medrun.datasets.glas:fixture", ("segmentation", "classification", "histology")),
]

PARTS = ("train", "testA", "testB")
_NAME = re.compile(r"^(?P<part>train|testA|testB)_(?P<n>\d+)$")
_HINT = "point at the 'Warwick QU Dataset (Released 2016_07_08)' folder (it holds Grade.csv and the .bmp files)"


def part_of(case_id: str) -> str:
    """``train`` / ``testA`` / ``testB`` from a case id such as ``testA_12``."""
    return case_id.split("_", 1)[0]


def check_layout(root: Path) -> None:
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"GlaS folder not found at {root}", fix=_HINT)
    if not (root / "Grade.csv").is_file():
        inner = [p for p in root.iterdir() if p.is_dir() and (p / "Grade.csv").is_file()]
        if inner:
            raise DataError(f"{root} is one level above the GlaS folder", fix=f"use {inner[0]} instead")
        raise DataError(f"{root} has no Grade.csv, so it is not the GlaS folder", fix=_HINT)


def _grades(path: Path) -> dict[str, int]:
    """name → 0 / 1 from Grade.csv (header and cells stripped of the spaces the released file carries)."""
    with open(path, newline="", encoding="utf-8-sig") as f:
        rows = [[c.strip() for c in r] for r in csv.reader(f) if r]
    if not rows:
        raise DataError(f"{path} is empty", fix="restore Grade.csv from the GlaS archive")
    header = [h.lower() for h in rows[0]]
    if "name" not in header or "grade (glas)" not in header:
        raise DataError(f"{path} lacks the columns 'name' and 'grade (GlaS)' (found {', '.join(rows[0])})",
                        fix="restore Grade.csv from the GlaS archive")
    i, j = header.index("name"), header.index("grade (glas)")
    out = {}
    for line, r in enumerate(rows[1:], start=2):
        grade = r[j].lower() if len(r) > j else ""
        if grade not in CLASSES:
            raise DataError(f"{path} line {line}: grade '{grade}' is neither benign nor malignant",
                            fix="fix the row or restore Grade.csv from the GlaS archive")
        out[r[i]] = CLASSES.index(grade)
    return out


def read(root: Path, parts=PARTS) -> list[Case]:
    """Every image of the named parts with its annotation and grade, in the official order (part, number). An image
    without ``_anno.bmp`` or without a Grade.csv row is an error naming the file."""
    root = Path(root)
    check_layout(root)
    grades = _grades(root / "Grade.csv")
    cases = []
    for p in root.iterdir():
        m = _NAME.match(p.stem)
        if not m or p.suffix.lower() != ".bmp" or m.group("part") not in parts:
            continue
        anno = p.with_name(f"{p.stem}_anno{p.suffix}")
        if not anno.is_file():
            raise DataError(f"no annotation for {p} (expected {anno.name})", fix="restore it or remove the image")
        if p.stem not in grades:
            raise DataError(f"{p.name} has no row in {root / 'Grade.csv'}", fix="restore Grade.csv from the archive")
        cases.append(Case(p.stem, p, (anno,), grades[p.stem]))
    if not cases:
        raise DataError(f"{root} holds no {'/'.join(parts)}_N.bmp images", fix=_HINT)
    return sorted(cases, key=lambda c: (PARTS.index(part_of(c.id)), int(c.id.rsplit("_", 1)[1])))


def load(case: Case, size: int | None = None, instances: bool = False):
    """(image float32 H×W×3 in [0, 1], mask uint8 H×W in {0, 1}), or the gland instance map (int32) instead of the
    mask with ``instances=True``; resized to size×size when given (bilinear; nearest for the annotation, which keeps
    its labels). The annotation must have its image's size; a case without one (predict) gets an empty mask."""
    import numpy as np
    from PIL import Image

    from .images import open_image, to_8bit

    with open_image(case.image) as im:
        image = to_8bit(im, case.image).convert("RGB")
    if not case.masks:  # an image to predict on: no annotation
        anno = np.zeros((image.height, image.width), np.int32)
    else:
        with open_image(case.masks[0]) as an:
            anno = np.asarray(an.convert("I") if an.mode not in ("L", "P", "I;16", "I") else an).astype(np.int32)
    if anno.shape != (image.height, image.width):
        raise DataError(f"annotation {case.masks[0]} is {anno.shape[1]}×{anno.shape[0]} but its image is "
                        f"{image.width}×{image.height}", fix="an annotation must have its image's size")
    if size is not None:
        image = image.resize((size, size), Image.BILINEAR)
        anno = np.asarray(Image.fromarray(anno).resize((size, size), Image.NEAREST)).astype(np.int32)
    out = anno if instances else (anno > 0).astype(np.uint8)
    return np.asarray(image, dtype=np.float32) / 255.0, out


# -- fixture ----------------------------------------------------------------------------------------------------
def synthetic_gland_image(rng, malignant: bool, height: int = 64, width: int = 80):
    """An H&E-like tile: pink stroma with glands drawn as white lumens in a purple epithelial rim. Benign glands
    are few, round and well apart; malignant ones are crowded, irregular star-shaped blobs of varied size with a
    darker, denser rim. Returns (RGB uint8 H×W×3, instance labels int32 H×W)."""
    import numpy as np
    from scipy import ndimage
    from skimage.draw import ellipse, polygon

    labels = np.zeros((height, width), np.int32)
    n = int(rng.integers(5, 8)) if malignant else int(rng.integers(2, 4))
    for k in range(1, n + 1):
        for _ in range(20):  # place without touching an earlier gland
            cy, cx = rng.uniform(8, height - 8), rng.uniform(8, width - 8)
            if malignant:
                spikes = int(rng.integers(5, 8))
                ang = np.linspace(0, 2 * np.pi, 2 * spikes, endpoint=False) + rng.uniform(0, np.pi)
                rad = np.where(np.arange(2 * spikes) % 2 == 0, rng.uniform(5, 9), rng.uniform(2.5, 4))
                rr, cc = polygon(cy + rad * np.sin(ang), cx + rad * np.cos(ang), (height, width))
            else:
                rr, cc = ellipse(cy, cx, rng.uniform(6, 9), rng.uniform(7, 11), (height, width),
                                 rotation=rng.uniform(0, np.pi))
            grown = ndimage.binary_dilation(labels > 0, iterations=2)
            if len(rr) and not grown[rr, cc].any():
                labels[rr, cc] = k
                break
    gland = labels > 0
    lumen = ndimage.binary_erosion(gland, iterations=3 if not malignant else 1)
    rim = gland & ~lumen
    stroma = np.array([0.93, 0.72, 0.82])
    img = np.tile(stroma, (height, width, 1)) * rng.uniform(0.9, 1.05, (height, width, 1))
    img[rim] = np.array([0.45, 0.25, 0.6]) * (0.75 if malignant else 1.0)
    img[lumen] = np.array([0.97, 0.95, 0.97])
    img += rng.normal(0, 0.04, img.shape)
    return (255 * np.clip(img, 0, 1)).astype(np.uint8), labels


def fixture(out: Path, seed: int = 0, n_train: int = 16, n_test_a: int = 8, n_test_b: int = 4,
            height: int = 64, width: int = 80) -> Path:
    """A miniature of the official layout: ``n_train`` / ``n_test_a`` / ``n_test_b`` BMP tiles (half benign, half
    malignant, alternating), their instance annotations (8-bit BMPs, labels 1…n, with one gap in the numbering to
    exercise non-consecutive labels) and a Grade.csv padded with spaces as the released one."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(seed)
    root = Path(out) / "Warwick QU Dataset (Released 2016_07_08)"
    root.mkdir(parents=True, exist_ok=True)
    rows = ["name, patient ID, grade (GlaS), grade (Sirinukunwattana et al. 2015)"]
    for part, n in (("train", n_train), ("testA", n_test_a), ("testB", n_test_b)):
        for i in range(1, n + 1):
            malignant = i % 2 == 0
            img, labels = synthetic_gland_image(rng, malignant, height, width)
            if i == 1:
                labels = np.where(labels > 1, labels + 1, labels)  # labels 1, 3, 4 …: a gap as in real files
            Image.fromarray(img).save(root / f"{part}_{i}.bmp")
            Image.fromarray(labels.astype(np.uint8)).save(root / f"{part}_{i}_anno.bmp")
            grade = CLASSES[int(malignant)]
            rows.append(f"{part}_{i}, {i}, {grade}, {'adenocarcinoma' if malignant else 'healthy'}")
    (root / "Grade.csv").write_text("\n".join(rows) + "\n")
    return root
