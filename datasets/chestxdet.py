"""ChestX-Det: 3,578 NIH ChestX-14 chest X-rays with polygon masks of 13 findings (Deepwise-AILab/ChestX-Det-Dataset).

Layout (the two annotation files from the repository beside the unpacked train_data.zip and test_data.zip)::

    <root>/ChestX_Det_train.json     [{"file_name": "36199.png", "syms": ["Effusion", …],
    <root>/ChestX_Det_test.json        "boxes": [[x1, y1, x2, y2], …], "polygons": [[[x, y], …], …]}, …]
    <root>/train/36199.png           1024×1024 grey PNG
    <root>/test/…

Each polygon belongs to the finding at the same index of ``syms``; polygons are rasterised with
``skimage.draw.polygon`` (the lorasam card) and OR-ed per finding. The text prompt is the finding's name in lower
case. An image whose file is missing, a finding outside the 13, or ``syms`` and ``polygons`` of different lengths
is an error naming the JSON file and the image. An image with no findings has an empty mask for every class.
"""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path

from medrun.errors import DataError

from . import DatasetInfo
from .surgical import Frame, open_image

DATASETS = [
    DatasetInfo("chestxdet", "ChestX-Det chest X-rays with polygon masks of 13 findings (NIH ChestX-14 subset)",
                "ChestX_Det_{train,test}.json + {train,test}/<file_name>.png",
                "github.com/Deepwise-AILab/ChestX-Det-Dataset (JSON) and its train_data.zip / test_data.zip; "
                "point at the folder holding the JSON files and train/, test/", "medrun.datasets.chestxdet:fixture",
                ("segmentation", "x-ray")),
]

SYMS = ["Atelectasis", "Calcification", "Cardiomegaly", "Consolidation", "Diffuse Nodule", "Effusion", "Emphysema",
        "Fibrosis", "Fracture", "Mass", "Nodule", "Pleural Thickening", "Pneumothorax"]
CLASSES = [s.lower() for s in SYMS]
_HINT = "point at the ChestX-Det folder holding ChestX_Det_train.json, ChestX_Det_test.json, train/ and test/"


def annotation_file(root: Path, part: str) -> Path:
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"ChestX-Det not found at {root}", fix=_HINT)
    path = root / f"ChestX_Det_{part}.json"
    if not path.is_file():
        raise DataError(f"{root} does not have the ChestX-Det layout: {path.name} is missing", fix=_HINT)
    return path


@lru_cache(maxsize=4)
def _entries(path: Path, mtime_ns: int) -> dict[str, dict]:
    """file_name → entry of one annotation file, checked once per file version."""
    try:
        entries = json.loads(path.read_text())
        out = {e["file_name"]: e for e in entries}
        for e in entries:
            syms, polys = e.get("syms", []), e.get("polygons", [])
            if len(syms) != len(polys):
                raise DataError(f"{path}: {e['file_name']} has {len(syms)} syms but {len(polys)} polygons",
                                fix="the annotation file is damaged; download it again")
            bad = [s for s in syms if s not in SYMS]
            if bad:
                raise DataError(f"{path}: {e['file_name']} has unknown finding '{bad[0]}'",
                                fix=f"known findings: {', '.join(SYMS)}")
        return out
    except (ValueError, KeyError, TypeError, AttributeError) as e:
        raise DataError(f"cannot read {path}: {e.__class__.__name__}: {e}",
                        fix="it must be a list of {file_name, syms, boxes, polygons}; download it again") from None


def entries(path: Path) -> dict[str, dict]:
    return _entries(Path(path), Path(path).stat().st_mtime_ns)


def read(root: Path, part: str) -> list[Frame]:
    """Every image of ``part`` (train / test) listed in its annotation file; the image file must exist."""
    ann = annotation_file(root, part)
    frames = []
    for name in sorted(entries(ann)):
        img = Path(root) / part / name
        if not img.is_file():
            raise DataError(f"image {img} listed in {ann.name} is missing",
                            fix=f"unpack {part}_data.zip into {Path(root) / part}")
        frames.append(Frame(f"{part}/{Path(name).stem}", f"{part}/{Path(name).stem}", img, ann))
    if not frames:
        raise DataError(f"{ann} lists no images", fix=_HINT)
    return frames


def load(frame: Frame, classes: list[str]):
    """(RGB uint8 H×W×3, bool masks C×H×W in the order of ``classes``)."""
    import numpy as np
    from skimage.draw import polygon

    image = open_image(frame.image, "RGB", scale=True)
    e = entries(frame.label)[frame.image.name]
    masks = np.zeros((len(classes), image.height, image.width), bool)
    index = {c: i for i, c in enumerate(classes)}
    for sym, pts in zip(e.get("syms", []), e.get("polygons", []), strict=True):
        if sym.lower() not in index or len(pts) < 3:
            continue
        xy = np.asarray(pts, dtype=float)
        rr, cc = polygon(xy[:, 1], xy[:, 0], shape=masks.shape[1:])
        masks[index[sym.lower()], rr, cc] = True
    return np.asarray(image, dtype=np.uint8), masks


# -- fixture -----------------------------------------------------------------------------------------------------
_FIXTURE = {"Effusion": (60, 0.32, 0.14), "Nodule": (235, 0.08, 0.08), "Cardiomegaly": (190, 0.2, 0.26)}


def fixture(out: Path, seed: int = 0, n_train: int = 12, n_test: int = 6, size: int = 96) -> Path:
    """A miniature in the release layout: grey 96×96 PNGs of a noisy chest, 1–2 findings each among effusion (a dark
    band-like ellipse), nodule (a small bright disc) and cardiomegaly (a large mid-grey ellipse), with their polygons
    (and boxes) in ChestX_Det_{train,test}.json; one image per part has no finding."""
    import numpy as np
    from PIL import Image
    from skimage.draw import polygon

    rng = np.random.default_rng(seed)
    root = Path(out) / "chestxdet"
    for part, n in (("train", n_train), ("test", n_test)):
        (root / part).mkdir(parents=True)
        doc = []
        for i in range(n):
            img = np.clip(110 + rng.normal(0, 14, (size, size)), 0, 255)
            k = 0 if i == n - 1 else int(rng.integers(1, 3))
            syms, polys, boxes = [], [], []
            chosen = rng.choice(list(_FIXTURE), size=k, replace=False)
            for sym in sorted(chosen, key=lambda s: -_FIXTURE[s][1] * _FIXTURE[s][2]):  # large ones first
                grey, ry, rx = _FIXTURE[sym]
                cy, cx = rng.uniform(0.3, 0.7, 2) * size
                t = np.linspace(0, 2 * np.pi, 24, endpoint=False)
                pts = np.stack([cx + rx * size * np.cos(t), cy + ry * size * np.sin(t)], 1).round(1)
                rr, cc = polygon(pts[:, 1], pts[:, 0], shape=img.shape)
                img[rr, cc] = grey + rng.normal(0, 6, rr.size)
                syms.append(str(sym))
                polys.append(pts.tolist())
                boxes.append([float(pts[:, 0].min()), float(pts[:, 1].min()), float(pts[:, 0].max()),
                              float(pts[:, 1].max())])
            name = f"{1000 * (part == 'test') + i + 1}.png"
            Image.fromarray(np.clip(img, 0, 255).astype(np.uint8)).save(root / part / name)
            doc.append({"file_name": name, "syms": syms, "boxes": boxes, "polygons": polys})
        (root / f"ChestX_Det_{part}.json").write_text(json.dumps(doc))
    return root
