"""PanNuke (nuclei instance segmentation and classification, 19 tissues), in its public layout.

Layout after unzipping the three fold archives (``fold_1.zip`` …) into one folder::

    <root>/Fold 1/images/fold1/images.npy   (N, 256, 256, 3) float64, values 0–255
    <root>/Fold 1/images/fold1/types.npy    (N,) tissue names, e.g. 'Breast', 'Colon'
    <root>/Fold 1/masks/fold1/masks.npy     (N, 256, 256, 6) float64: channels 0–4 are instance-id maps of
                                            neoplastic, inflammatory, connective/soft tissue, dead and epithelial
                                            nuclei; channel 5 is background
    <root>/Fold 2/…/fold2/…, <root>/Fold 3/…/fold3/…

The reader memory-maps the arrays (a real fold is several GB of float64) and turns each patch into an RGB uint8
image, one instance map (ids relabelled 1…n over the five channels, since ids may repeat across channels) and a
type map (0 background, 1 neoplastic, 2 inflammatory, 3 connective, 4 dead, 5 epithelial). A masks.npy or
types.npy whose count differs from images.npy, or arrays of the wrong shape, is a DataError naming the file.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from medrun.errors import DataError

from . import DatasetInfo

DATASETS = [
    DatasetInfo(
        "pannuke",
        "PanNuke nuclei instance segmentation and classification (3 folds, 19 tissues)",
        "Fold {1,2,3}/images/fold{k}/{images,types}.npy + Fold {k}/masks/fold{k}/masks.npy",
        "PanNuke (Gamper et al., warwick.ac.uk TIA centre, CC BY-NC-SA); unzip the three fold archives into one "
        "folder and point at it",
        "medrun.datasets.pannuke:fixture",
        ("segmentation", "instance", "histology"),
    ),
]

CLASSES = ("background", "neoplastic", "inflammatory", "connective", "dead", "epithelial")
TISSUES = ("Adrenal_gland", "Bile-duct", "Bladder", "Breast", "Cervix", "Colon", "Esophagus", "HeadNeck", "Kidney",
           "Liver", "Lung", "Ovarian", "Pancreatic", "Prostate", "Skin", "Stomach", "Testis", "Thyroid", "Uterus")
_HINT = "point at the folder holding 'Fold 1', 'Fold 2', 'Fold 3' as unzipped, or try --fixture"


@dataclass
class Fold:
    """One fold in memory: ids, file references ``<images.npy>#<index>`` (for data.lock.json), images (N,H,W,3)
    uint8, instance maps
    (N,H,W) int32, type maps (N,H,W) uint8 and tissue names."""

    ids: list[str]
    files: list[str]
    images: object
    inst: object
    types: object
    tissue: list[str]

    def __len__(self):
        return len(self.ids)


def fold_files(root: Path, k: int) -> dict[str, Path]:
    base = Path(root) / f"Fold {k}"
    return {"images": base / "images" / f"fold{k}" / "images.npy",
            "types": base / "images" / f"fold{k}" / "types.npy",
            "masks": base / "masks" / f"fold{k}" / "masks.npy"}


def check_layout(root: Path, folds=(1, 2, 3)) -> None:
    """Cheap: the fold folders and their three files exist (a DataError naming what is missing)."""
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"PanNuke folder not found: {root}", fix=_HINT)
    for k in folds:
        if not (root / f"Fold {k}").is_dir():
            inner = [p for p in sorted(root.iterdir()) if p.is_dir() and (p / f"Fold {k}").is_dir()]
            if inner:
                raise DataError(f"{root} is one level above the PanNuke folder", fix=f"use {inner[0]} instead")
            if root.name == f"Fold {k}" or root.name.startswith("Fold "):
                raise DataError(f"{root} is one fold, not the PanNuke folder", fix=f"use {root.parent} instead")
            found = ", ".join(sorted(p.name for p in root.iterdir())[:5]) or "nothing"
            raise DataError(f"{root} has no 'Fold {k}' folder (found: {found})", fix=_HINT)
        for what, path in fold_files(root, k).items():
            if not path.is_file():
                raise DataError(f"PanNuke fold {k} lacks {what}.npy: {path}",
                                fix=f"unzip fold_{k}.zip completely into {root}")


def _load(path: Path):
    import numpy as np

    try:
        return np.load(path, mmap_mode="r", allow_pickle=False)
    except ValueError as e:
        if "allow_pickle" in str(e):  # an object array (types.npy saved from a list of Python strings)
            try:
                return np.load(path, allow_pickle=False, mmap_mode=None)
            except ValueError:
                pass
        raise DataError(f"cannot read {path}: {e}", fix="re-extract the file from the PanNuke archive") from None
    except OSError as e:
        raise DataError(f"cannot read {path}: {e}", fix="re-extract the file from the PanNuke archive") from None


def split_masks(masks):
    """(N,H,W,6) PanNuke masks → instance maps (N,H,W) int32 relabelled 1…n and type maps (N,H,W) uint8."""
    import numpy as np

    masks = np.asarray(masks)
    n, h, w = masks.shape[:3]
    inst = np.zeros((n, h, w), np.int32)
    types = np.zeros((n, h, w), np.uint8)
    for i in range(n):
        nxt = 1
        for c in range(5):
            ch = masks[i, ..., c].astype(np.int64)
            for v in np.unique(ch):
                if v <= 0:
                    continue
                sel = ch == v
                inst[i][sel] = nxt
                types[i][sel] = c + 1
                nxt += 1
    return inst, types


def read_fold(root: Path, k: int, limit: int | None = None) -> Fold:
    """Fold ``k`` (1, 2 or 3) of the public layout; ``limit`` keeps its first patches."""
    import numpy as np

    check_layout(root, (k,))
    files = fold_files(root, k)
    images, types, masks = _load(files["images"]), _load(files["types"]), _load(files["masks"])
    if images.ndim != 4 or images.shape[-1] != 3:
        raise DataError(f"{files['images']} has shape {images.shape}, expected (N, H, W, 3)",
                        fix="re-extract images.npy from the PanNuke fold archive")
    if masks.ndim != 4 or masks.shape[-1] != 6 or masks.shape[1:3] != images.shape[1:3]:
        raise DataError(f"{files['masks']} has shape {masks.shape}, expected {(len(masks), *images.shape[1:3], 6)}",
                        fix="re-extract masks.npy from the same fold archive as images.npy")
    if len(masks) != len(images):
        raise DataError(f"{files['masks']} holds {len(masks)} masks but {files['images'].name} holds {len(images)} "
                        "images", fix=f"both must come from the same fold {k} archive; re-extract fold_{k}.zip")
    if len(types) != len(images):
        raise DataError(f"{files['types']} holds {len(types)} tissue names but images.npy holds {len(images)} "
                        "images", fix=f"re-extract fold_{k}.zip")
    n = len(images) if limit is None else min(limit, len(images))
    img = np.asarray(images[:n])
    if not np.isfinite(img).all() or img.min() < 0 or img.max() > 255:
        raise DataError(f"{files['images']} has values outside 0–255", fix="re-extract images.npy")
    inst, tmap = split_masks(masks[:n])
    ref = str(files["images"].resolve())  # one "file" per patch: images.npy#index
    return Fold([f"fold{k}_{i:04d}" for i in range(n)], [f"{ref}#{i}" for i in range(n)],
                np.round(img).astype(np.uint8), inst, tmap, [str(t) for t in np.asarray(types[:n])])


# -- fixture ---------------------------------------------------------------------------------------------------
# class → (semi-axes in px at 64², elongation, hematoxylin colour); drawn as ellipses with jittered edges
_NUCLEI = {
    1: ((5.0, 6.5), 1.3, (105, 45, 125)),   # neoplastic: large, irregular, purple
    2: ((2.4, 3.0), 1.0, (45, 20, 80)),     # inflammatory: small, round, very dark
    3: ((4.5, 5.5), 3.0, (120, 70, 150)),   # connective: elongated spindles
    4: ((2.0, 3.0), 1.2, (150, 90, 140)),   # dead: small pale fragments
    5: ((5.0, 6.0), 1.0, (140, 95, 175)),   # epithelial: large, round, lighter
}
# tissue → class proportions (neoplastic, inflammatory, connective, dead, epithelial): the metadata carries signal
_MIX = {"Breast": (0.5, 0.15, 0.15, 0.05, 0.15), "Colon": (0.1, 0.35, 0.1, 0.05, 0.4),
        "Skin": (0.1, 0.2, 0.5, 0.1, 0.1)}


def draw_patch(rng, size: int = 64, tissue: str = "Breast", hue: float = 0.0, density: float = 1.0):
    """A synthetic H&E patch: pink eosin background and nuclei of the five classes with class-specific size,
    shape and colour; neighbouring nuclei often touch. Returns (image (S,S,3) uint8, PanNuke mask (S,S,6)
    float64). ``hue`` shifts the stain (the CoNSeP copy's domain gap)."""
    import numpy as np
    from scipy import ndimage

    scale = size / 64
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    mix = np.asarray(_MIX.get(tissue, (0.2,) * 5))
    target = int(rng.integers(9, 14) * density * scale * scale)
    inst = np.zeros((size, size), np.int32)
    cls = np.zeros((size, size), np.uint8)
    centres: list[tuple[float, float, float]] = []
    colour = np.zeros((size, size, 3), np.float32)
    n = 0
    for _ in range(target * 6):
        if n >= target:
            break
        c = int(rng.choice(5, p=mix / mix.sum())) + 1
        (lo, hi), elong, rgb = _NUCLEI[c]
        r = rng.uniform(lo, hi) * scale
        a, b = r * np.sqrt(elong), r / np.sqrt(elong)
        cy, cx = rng.uniform(a * 0.6, size - a * 0.6, 2)
        # touching is allowed, deep overlap is not: centres at least 0.8 of the summed radii apart
        if any(np.hypot(cy - y, cx - x) < 0.8 * (ra + min(a, b * 1.5)) for y, x, ra in centres):
            continue
        th = rng.uniform(0, np.pi)
        u = ((xx - cx) * np.cos(th) + (yy - cy) * np.sin(th)) / a
        v = (-(xx - cx) * np.sin(th) + (yy - cy) * np.cos(th)) / b
        ang = np.arctan2(v, u)
        wobble = 1 + (0.15 if c == 1 else 0.05) * np.cos(3 * ang + rng.uniform(0, 6.3))
        shape = np.hypot(u, v) <= wobble
        if c == 4:  # dead: fragmented
            shape &= rng.random(shape.shape) > 0.25
        shape &= inst == 0
        if shape.sum() < max(6, 4 * scale):
            continue
        n += 1
        inst[shape], cls[shape] = n, c
        colour[shape] = np.asarray(rgb, np.float32) * rng.uniform(0.9, 1.1)
        centres.append((cy, cx, max(a, b)))
    background = np.array([235, 180, 210], np.float32) * rng.uniform(0.95, 1.03)
    img = np.where(inst[..., None] > 0, colour, background)
    img = ndimage.gaussian_filter(img, sigma=(0.7, 0.7, 0)) + rng.normal(0, 8, img.shape)
    if hue:
        img = img[..., [0, 1, 2]] * (1 - hue) + img[..., [2, 0, 1]] * hue
    mask = np.zeros((size, size, 6), np.float64)
    for i in range(1, n + 1):
        sel = inst == i
        mask[..., int(cls[sel][0]) - 1][sel] = i
    mask[..., 5] = (inst == 0).astype(np.float64)
    return np.clip(img, 0, 255).astype(np.uint8), mask


def fixture(out: Path, seed: int = 0, n: int = 12, size: int = 64) -> Path:
    """Three folds of ``n`` patches of ``size``² in the public layout: float64 images.npy (0–255), types.npy of
    three tissue names, masks.npy (N,S,S,6) with per-class instance ids and the background channel (float32 here,
    float64 in the real archive; the reader takes either)."""
    import numpy as np

    rng = np.random.default_rng(seed)
    root = Path(out) / "PanNuke"
    names = list(_MIX)
    for k in (1, 2, 3):
        files = fold_files(root, k)
        for p in files.values():
            p.parent.mkdir(parents=True, exist_ok=True)
        tissues = [names[i % len(names)] for i in range(n)]
        pairs = [draw_patch(rng, size, t) for t in tissues]
        np.save(files["images"], np.stack([p[0] for p in pairs]).astype(np.float64))
        np.save(files["types"], np.array(tissues))
        np.save(files["masks"], np.stack([p[1] for p in pairs]).astype(np.float32))  # real: float64 (2× the MB)
    return root
