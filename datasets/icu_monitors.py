"""Photos of bedside ICU monitors with screen corners and vital-sign labels (icu-vitals card).

The paper's collection (≈10K photos from four Indian hospitals, the CloudPhysician "Vital Extraction Challenge",
Inter-IIT 2023) has no working public link; its file layout could not be checked offline. medrun reads the card's
canonical layout, which a user builds from the downloaded CSVs::

    <root>/
        images/<name>.jpg            camera photos (any size; the challenge treats them as 1280×720)
        corners.csv                  image,x1,y1,x2,y2,x3,y3,x4,y4   screen corners in photo pixels, clockwise from
                                     the top-left (TL, TR, BR, BL)
        vitals.csv     (optional)    image,HR,SpO2,RR,SBP,DBP,MAP    integers; an empty cell = not shown
        boxes.csv      (optional)    image,text,x1,y1,…,x4,y4         word polygons with their text (the oracle OCR
                                     engine and ``ocr-bench``)
        ecg.csv        (optional)    image,x,y                        the ECG polyline's vertices in photo pixels

``image`` is the file name inside ``images/``. A row naming a missing image, a non-number, or a duplicate row is a
DataError naming the CSV, the line and the fix.

The fixture writes the same layout: 40 photos of 640×360 with a textured "room", a dark monitor under a random
perspective and ±15° rotation, the labels HR / SpO2 / RR / NIBP in the PIL default font, HR (green), SpO2 (cyan),
RR (yellow), "SBP/DBP" and "(MAP)" (red, MAP = round((SBP + 2·DBP)/3)), and a green ECG polyline.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass, field
from pathlib import Path

from medrun.errors import DataError

from . import DatasetInfo

DATASETS = [
    DatasetInfo("icu-monitors", "ICU monitor photos: screen corners, vitals, word boxes (CloudPhysician layout)",
                "images/*.jpg + corners.csv (image,x1..y4) [+ vitals.csv (image,HR,SpO2,RR,SBP,DBP,MAP), boxes.csv, "
                "ecg.csv]",
                "CloudPhysician Vital Extraction Challenge (Inter-IIT 2023) data, on request from the organisers; "
                "convert its CSVs to corners.csv / vitals.csv and point --data-dir at the folder holding images/",
                "medrun.datasets.icu_monitors:fixture", ("keypoints", "ocr", "photos")),
]

VITALS = ("HR", "SpO2", "RR", "SBP", "DBP", "MAP")
_HINT = ("point --data-dir at the folder holding images/ and corners.csv (see docs/papers/icu-vitals.md), "
         "or try --fixture")
_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp")


@dataclass
class Photo:
    name: str  # file name inside images/
    path: Path
    corners: list[tuple[float, float]]  # TL, TR, BR, BL in photo pixels
    vitals: dict[str, int | None] = field(default_factory=dict)  # empty when vitals.csv has no row
    boxes: list[tuple[str, list[tuple[float, float]]]] = field(default_factory=list)  # (text, 4-point polygon)
    ecg: list[tuple[float, float]] = field(default_factory=list)  # polyline vertices


def check_layout(root: Path) -> None:
    """Cheap checks (no image opened), run before the data is fingerprinted."""
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"ICU monitor folder not found: {root}", fix=_HINT)
    if not (root / "images").is_dir():
        inner = [p for p in sorted(root.iterdir()) if p.is_dir() and (p / "images").is_dir()]
        raise DataError(f"{root} has no images/ folder (the icu-monitors layout)",
                        fix=f"use {inner[0]} instead" if inner else _HINT)
    if not (root / "corners.csv").is_file():
        raise DataError(f"{root / 'corners.csv'} not found (screen corners: image,x1,y1,x2,y2,x3,y3,x4,y4)",
                        fix="write corners.csv beside images/ (see docs/papers/icu-vitals.md)")


def _rows(path: Path, required: tuple[str, ...]) -> list[tuple[int, dict]]:
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            reader = csv.DictReader(f)
            header = [h.strip() for h in reader.fieldnames or []]
            missing = [c for c in required if c not in header]
            if missing:
                raise DataError(f"{path}: missing column(s) {', '.join(missing)} "
                                f"(found: {', '.join(header) or 'none'})",
                                fix=f"the header must be {','.join(required)}")
            return [(i + 2, {k.strip(): (v or "").strip() for k, v in r.items() if k}) for i, r in enumerate(reader)]
    except UnicodeDecodeError as e:
        raise DataError(f"{path} is not a UTF-8 CSV", fix="save it as UTF-8 text") from e


def _num(path: Path, line: int, col: str, text: str, integer: bool = False):
    try:
        v = float(text)
    except ValueError:
        raise DataError(f"{path}:{line}: column {col} is '{text}', not a number",
                        fix="write plain numbers (pixels / integers), "
                            "an empty cell where a vital is not shown") from None
    if v != v or v in (float("inf"), float("-inf")):
        raise DataError(f"{path}:{line}: column {col} is not finite", fix="write a finite number")
    if integer:
        if v != int(v):
            raise DataError(f"{path}:{line}: {col} is {text}, not an integer", fix="vitals are whole numbers")
        return int(v)
    return v


def read(root: Path, *, need_vitals: bool = False) -> list[Photo]:
    """Every photo of ``corners.csv`` with its optional vitals, word boxes and ECG polyline."""
    root = Path(root)
    check_layout(root)
    present = {p.name for p in (root / "images").iterdir()
               if p.suffix.lower() in _SUFFIXES and not p.name.startswith(".")}
    cpath = root / "corners.csv"
    coords = tuple(f"{a}{i}" for i in range(1, 5) for a in "xy")
    photos: dict[str, Photo] = {}
    for line, r in _rows(cpath, ("image", *coords)):
        name = r["image"]
        if name not in present:
            raise DataError(f"{cpath}:{line}: image '{name}' is not in {root / 'images'}",
                            fix="fix the name or add the photo (names are file names inside images/)")
        if name in photos:
            raise DataError(f"{cpath}:{line}: image '{name}' is listed twice", fix="keep one row per image")
        v = [_num(cpath, line, c, r[c]) for c in coords]
        photos[name] = Photo(name, root / "images" / name, [(v[i], v[i + 1]) for i in range(0, 8, 2)])
    if not photos:
        raise DataError(f"{cpath} lists no images", fix="one row per photo: image,x1,y1,…,x4,y4")
    vpath = root / "vitals.csv"
    if vpath.is_file():
        for line, r in _rows(vpath, ("image", *VITALS)):
            if r["image"] not in photos:
                raise DataError(f"{vpath}:{line}: image '{r['image']}' has no row in corners.csv",
                                fix="every image of vitals.csv needs its screen corners")
            photos[r["image"]].vitals = {k: (_num(vpath, line, k, r[k], True) if r[k] else None) for k in VITALS}
    elif need_vitals:
        raise DataError(f"{vpath} not found: vital accuracy needs ground truth (image,HR,SpO2,RR,SBP,DBP,MAP)",
                        fix="write vitals.csv beside images/, or set -o eval.ocr=[] to score the corners only")
    bpath = root / "boxes.csv"
    if bpath.is_file():
        for line, r in _rows(bpath, ("image", "text", *coords)):
            if r["image"] not in photos:
                raise DataError(f"{bpath}:{line}: image '{r['image']}' has no row in corners.csv",
                                fix="every image of boxes.csv needs its screen corners")
            v = [_num(bpath, line, c, r[c]) for c in coords]
            photos[r["image"]].boxes.append((r["text"], [(v[i], v[i + 1]) for i in range(0, 8, 2)]))
    epath = root / "ecg.csv"
    if epath.is_file():
        for line, r in _rows(epath, ("image", "x", "y")):
            if r["image"] not in photos:
                raise DataError(f"{epath}:{line}: image '{r['image']}' has no row in corners.csv",
                                fix="every image of ecg.csv needs its screen corners")
            photos[r["image"]].ecg.append((_num(epath, line, "x", r["x"]), _num(epath, line, "y", r["y"])))
    return [photos[k] for k in sorted(photos)]


def load_rgb(path: Path):
    """The photo as an (H, W, 3) uint8 array; a DataError naming the file when it cannot be decoded."""
    import numpy as np
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            return np.asarray(im.convert("RGB"))
    except (UnidentifiedImageError, OSError, ValueError) as e:
        raise DataError(f"cannot decode image {path}: {e}",
                        fix="replace the file with a readable JPEG or PNG") from None


# -- the fixture ---------------------------------------------------------------------------------------------------
SCREEN = (480, 270)  # the monitor's display canvas (16:9)
COLOURS = {"HR": (40, 230, 60), "SpO2": (40, 220, 230), "RR": (240, 230, 40), "BP": (240, 60, 50)}


def font(size: int):
    from PIL import ImageFont

    return ImageFont.load_default(size=size)


def ecg_wave(n: int, rng) -> np.ndarray:  # noqa: F821
    """A synthetic ECG-like trace of ``n`` samples in [-1, 1]: a baseline, P and T bumps and sharp QRS spikes."""
    import numpy as np

    t = np.linspace(0, rng.uniform(2.5, 4.5), n)
    ph = (t + rng.uniform(0, 1)) % 1.0
    y = 0.15 * np.exp(-((ph - 0.2) / 0.04) ** 2) - 0.15 * np.exp(-((ph - 0.37) / 0.012) ** 2)
    y += 1.0 * np.exp(-((ph - 0.4) / 0.012) ** 2) - 0.3 * np.exp(-((ph - 0.43) / 0.012) ** 2)
    y += 0.3 * np.exp(-((ph - 0.65) / 0.06) ** 2) + 0.05 * np.sin(2 * np.pi * t * 0.3)
    return y / np.abs(y).max()


def render_screen(rng, vitals: dict, show_rr: bool = True):
    """The display canvas (RGB uint8, SCREEN size), its word boxes [(text, [(x, y)×4])] and the ECG polyline."""
    import numpy as np
    from PIL import Image, ImageDraw

    w, h = SCREEN
    base = rng.uniform(8, 30)
    img = Image.fromarray(np.clip(base + rng.normal(0, 3, (h, w, 3)), 0, 255).astype(np.uint8))
    d = ImageDraw.Draw(img)
    boxes = []

    def text(x, y, s, colour, size):
        f = font(size)
        d.text((x, y), s, fill=colour, font=f)
        x0, y0, x1, y1 = d.textbbox((x, y), s, font=f)
        boxes.append((s, [(x0, y0), (x1, y0), (x1, y1), (x0, y1)]))

    j = lambda a: float(rng.uniform(-a, a))  # noqa: E731
    flip = rng.random() < 0.5  # two templates: numbers column on the right or on the left
    col = (0.64 * w if not flip else 0.04 * w) + j(6)
    wave_x0 = (0.03 * w if not flip else 0.38 * w)
    # ECG on the top-left (or top-right) part of the screen
    xs = np.linspace(wave_x0 + 4, wave_x0 + 0.56 * w, 120)
    ys = 0.30 * h + j(6) - 0.13 * h * ecg_wave(len(xs), rng)
    ecg = list(zip(xs.tolist(), ys.tolist(), strict=True))
    d.line(ecg, fill=COLOURS["HR"], width=2)
    text(col, 0.04 * h + j(4), "HR", COLOURS["HR"], 16)
    text(col + 34 + j(4), 0.08 * h + j(4), str(vitals["HR"]), COLOURS["HR"], 44)
    text(col, 0.38 * h + j(4), "SpO2", COLOURS["SpO2"], 16)
    text(col + 44 + j(4), 0.40 * h + j(4), str(vitals["SpO2"]), COLOURS["SpO2"], 40)
    if show_rr:
        text(wave_x0 + j(4), 0.63 * h + j(4), "RR", COLOURS["RR"], 16)
        text(wave_x0 + 30 + j(4), 0.68 * h + j(4), str(vitals["RR"]), COLOURS["RR"], 36)
    bx = wave_x0 + 0.25 * w + j(4)
    text(bx, 0.63 * h + j(4), "NIBP", COLOURS["BP"], 16)
    text(bx, 0.71 * h + j(3), f"{vitals['SBP']}/{vitals['DBP']}", COLOURS["BP"], 34)
    text(bx + 20 + j(3), 0.86 * h + j(2), f"({vitals['MAP']})", COLOURS["BP"], 24)
    return np.asarray(img), boxes, ecg


def room(rng, width: int, height: int):
    """A textured background: smooth coloured noise plus a few flat rectangles (furniture, a window)."""
    import numpy as np
    from scipy.ndimage import gaussian_filter, zoom

    small = rng.uniform(60, 220, (height // 8 + 1, width // 8 + 1, 3))
    img = zoom(gaussian_filter(small, (1.5, 1.5, 0)), (8, 8, 1), order=1)[:height, :width]
    for _ in range(rng.integers(2, 5)):
        x0, y0 = rng.integers(0, width), rng.integers(0, height)
        img[y0:y0 + rng.integers(20, height // 2), x0:x0 + rng.integers(20, width // 3)] = rng.uniform(40, 240, 3)
    return np.clip(img + rng.normal(0, 4, img.shape), 0, 255).astype(np.uint8)


def monitor_quad(rng, width: int, height: int):
    """Four screen corners (TL, TR, BR, BL) in the photo: a 16:9 rectangle scaled, rotated (±15°), moved and
    perspective-distorted, kept inside the photo with a margin."""
    import numpy as np

    for _ in range(200):
        sw = rng.uniform(0.42, 0.62) * width
        sh = sw * SCREEN[1] / SCREEN[0] * rng.uniform(0.9, 1.1)
        rect = np.array([[-sw / 2, -sh / 2], [sw / 2, -sh / 2], [sw / 2, sh / 2], [-sw / 2, sh / 2]])
        rect += rng.normal(0, 0.04, (4, 2)) * [sw, sh]
        a = np.deg2rad(rng.uniform(-15, 15))
        rot = np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]])
        quad = rect @ rot.T + [width / 2 + rng.uniform(-0.12, 0.12) * width,
                               height / 2 + rng.uniform(-0.1, 0.1) * height]
        m = 0.04 * min(width, height)
        if quad[:, 0].min() > m and quad[:, 0].max() < width - m and \
                quad[:, 1].min() > m and quad[:, 1].max() < height - m:
            return quad
    raise RuntimeError("could not place the monitor")  # pragma: no cover


def synth_photo(rng, width: int = 640, height: int = 360, vitals: dict | None = None, show_rr: bool = True):
    """One synthetic monitor photo: (image, corners (4, 2), vitals, word boxes, ECG polyline), all in photo pixels."""
    import cv2
    import numpy as np

    if vitals is None:
        sbp, dbp = int(rng.integers(90, 180)), int(rng.integers(45, 100))
        sbp = max(sbp, dbp + 20)
        vitals = {"HR": int(rng.integers(50, 151)), "SpO2": int(rng.integers(85, 101)), "RR": int(rng.integers(8, 41)),
                  "SBP": sbp, "DBP": dbp, "MAP": int(round((sbp + 2 * dbp) / 3))}
    screen, boxes, ecg = render_screen(rng, vitals, show_rr)
    photo = room(rng, width, height)
    quad = monitor_quad(rng, width, height)
    src = np.float32([[0, 0], [SCREEN[0], 0], [SCREEN[0], SCREEN[1]], [0, SCREEN[1]]])
    hmat = cv2.getPerspectiveTransform(src, np.float32(quad))
    centre = quad.mean(0)
    bezel = centre + (quad - centre) * 1.12
    cv2.fillConvexPoly(photo, np.round(bezel).astype(np.int32), tuple(int(c) for c in rng.uniform(25, 70, 3)),
                       lineType=cv2.LINE_AA)
    warped = cv2.warpPerspective(screen, hmat, (width, height), flags=cv2.INTER_LINEAR)
    mask = cv2.warpPerspective(np.full(screen.shape[:2], 255, np.uint8), hmat, (width, height)) > 127
    photo[mask] = warped[mask]
    gain, bias = rng.uniform(0.85, 1.15), rng.uniform(-15, 15)  # lighting
    photo = np.clip(photo.astype(np.float32) * gain + bias, 0, 255).astype(np.uint8)

    def tf(points):
        p = cv2.perspectiveTransform(np.float32(points).reshape(-1, 1, 2), hmat).reshape(-1, 2)
        return [(float(x), float(y)) for x, y in p]

    shown = dict(vitals) if show_rr else {**vitals, "RR": None}
    return photo, quad, shown, [(t, tf(b)) for t, b in boxes], tf(ecg)


def fixture(out: Path, seed: int = 0, n: int = 40, width: int = 640, height: int = 360) -> Path:
    """``n`` synthetic monitor photos in the canonical layout (images/, corners.csv, vitals.csv, boxes.csv,
    ecg.csv). About 15 % of the photos do not show RR (blank cell)."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(seed)
    root = Path(out) / "icu-monitors"
    (root / "images").mkdir(parents=True, exist_ok=True)
    corners, vitals, boxes, ecgs = [], [], [], []
    for i in range(n):
        name = f"monitor_{i:04d}.jpg"
        photo, quad, vit, words, ecg = synth_photo(rng, width, height, show_rr=rng.random() > 0.15)
        Image.fromarray(photo).save(root / "images" / name, quality=92)
        corners.append([name, *[round(float(v), 2) for v in quad.reshape(-1)]])
        vitals.append([name, *["" if vit[k] is None else vit[k] for k in VITALS]])
        boxes += [[name, t, *[round(v, 2) for p in poly for v in p]] for t, poly in words]
        ecgs += [[name, round(x, 2), round(y, 2)] for x, y in ecg]
    coords = [f"{a}{i}" for i in range(1, 5) for a in "xy"]
    for fname, header, rows in (("corners.csv", ["image", *coords], corners),
                                ("vitals.csv", ["image", *VITALS], vitals),
                                ("boxes.csv", ["image", "text", *coords], boxes),
                                ("ecg.csv", ["image", "x", "y"], ecgs)):
        with open(root / fname, "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(header)
            w.writerows(rows)
    return root
