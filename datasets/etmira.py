"""Etruscan mirrors (ETMIRA, fusing-forces): photometric-stereo depth maps of engraved bronze mirrors with line-drawing
ground truth, in the layout of the authors' repositories (``etmira-segmentation`` / ``etmira-interaction``)::

    <DIR_ROOT>/
        <ID>/PS/<ID>_<side>_<map>.tif      photometric-stereo maps per side (V = front, R = back): the depth map
                                           (suffix undocumented: ``dataset.depth_suffix``, default ``depth``),
                                           albedo ``RHO``, normals ``N`` (not read)
        GT_REL/<ID>_<side>_drawings.png    the line drawing: alpha channel if present, else channel 0; > 0 = line
        MASKS_REL/<ID>_<side>_mask.png     the mirror mask (precomputed with SAM); > 0 = mirror

A *side* is ``<ID>_<side>`` (e.g. ``ANSA-VI-1700_R``, the repository's test ids). Only sides with a drawing in
``GT_REL`` are annotated and read. A side without a mask falls back to the largest connected component of
albedo > Otsu (``RHO``), flagged ``mask_source = "otsu"``; without albedo either, it is a DataError. Non-finite
depth values are treated as outside the mirror.

The data is announced for ARCHE (ÖAW); nothing is downloaded here.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from medrun.errors import DataError

from . import DatasetInfo

DATASETS = [
    DatasetInfo(
        "etmira",
        "Etruscan bronze mirrors: photometric-stereo depth maps + line-drawing ground truth (fusing-forces)",
        "<ID>/PS/<ID>_<side>_<depth-suffix>.tif + GT_REL/<ID>_<side>_drawings.png (RGBA) + "
        "MASKS_REL/<ID>_<side>_mask.png",
        "ETMIRA scans (TU Wien / KHM Wien; announced for the ARCHE repository of the ÖAW); point at DIR_ROOT, the "
        "folder holding GT_REL/, MASKS_REL/ and one folder per mirror id",
        "medrun.datasets.etmira:fixture",
        ("segmentation", "interactive", "cultural-heritage"),
    ),
]

_HINT = "point at DIR_ROOT, the folder holding GT_REL/, MASKS_REL/ and <ID>/PS/ folders; or try --fixture"


@dataclass(frozen=True)
class Side:
    key: str  # <ID>_<side>, e.g. ANSA-VI-1700_R
    depth: Path
    gt: Path
    mask: Path | None  # None: fall back to albedo Otsu
    albedo: Path | None


def check_layout(root: Path) -> None:
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"ETMIRA folder not found: {root}", fix=_HINT)
    if not (root / "GT_REL").is_dir():
        inner = [p for p in sorted(root.iterdir()) if (p / "GT_REL").is_dir()]
        if inner:
            raise DataError(f"{root} is one level above the ETMIRA folder", fix=f"use {inner[0]} instead")
        raise DataError(f"{root} has no GT_REL/ folder (the line drawings <ID>_<side>_drawings.png)", fix=_HINT)


def sides(root: Path, depth_suffix: str = "depth") -> list[Side]:
    """Every annotated side (a drawing in GT_REL), sorted by key; its depth map must exist."""
    root = Path(root)
    check_layout(root)
    out = []
    for gt in sorted((root / "GT_REL").glob("*_drawings.png")):
        if gt.name.startswith("."):
            continue
        key = gt.name[: -len("_drawings.png")]
        mirror, _, side = key.rpartition("_")
        if not mirror or not side:
            raise DataError(f"{gt}: name is not <ID>_<side>_drawings.png",
                            fix="rename it, e.g. ANSA-VI-1700_R_drawings.png")
        depth = root / mirror / "PS" / f"{key}_{depth_suffix}.tif"
        if not depth.is_file():
            ps = root / mirror / "PS"
            near = sorted(p.name for p in ps.glob(f"{key}_*.tif")) if ps.is_dir() else []
            raise DataError(f"depth map missing for {gt.name}: {depth}"
                            + (f" (found {', '.join(near[:4])})" if near else ""),
                            fix="set -o dataset.depth_suffix=<the suffix of the depth TIFFs> or restore the file")
        mask = root / "MASKS_REL" / f"{key}_mask.png"
        albedo = root / mirror / "PS" / f"{key}_RHO.tif"
        out.append(Side(key, depth, gt, mask if mask.is_file() else None, albedo if albedo.is_file() else None))
    if not out:
        raise DataError(f"no drawings (*_drawings.png) in {root / 'GT_REL'}", fix=_HINT)
    return out


def _read_tif(path: Path):
    import numpy as np
    import tifffile

    try:
        arr = tifffile.imread(path)
    except Exception as e:  # noqa: BLE001 (tifffile raises many kinds)
        raise DataError(f"cannot read {path}: {e.__class__.__name__}: {str(e)[:120]}",
                        fix="replace the file with the TIFF exported by the photometric-stereo pipeline") from None
    arr = np.asarray(arr)
    if arr.ndim == 3 and arr.shape[-1] in (1, 3, 4):
        arr = arr[..., 0]
    if arr.ndim != 2:
        raise DataError(f"{path} is not a single-channel map (shape {arr.shape})",
                        fix="pass the depth map, not the normals")
    return arr.astype(np.float32)


def _read_png(path: Path, what: str):
    import numpy as np
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            if im.mode in ("RGBA", "LA") or (im.mode == "P" and "transparency" in im.info):
                return np.asarray(im.convert("RGBA"))[..., 3] > 0
            arr = np.asarray(im)
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
        raise DataError(f"cannot read {what} {path}: {e.__class__.__name__}: {e}", fix="replace the PNG") from None
    return (arr[..., 0] if arr.ndim == 3 else arr) > 0


def otsu_mask(albedo):
    """The largest connected component of albedo > Otsu's threshold (the fallback for a missing SAM mask)."""
    import numpy as np
    from scipy import ndimage
    from skimage.filters import threshold_otsu

    a = np.nan_to_num(albedo, nan=0.0)
    fg = a > threshold_otsu(a)
    lab, n = ndimage.label(fg)
    if n == 0:
        return fg
    sizes = ndimage.sum_labels(fg, lab, range(1, n + 1))
    return ndimage.binary_fill_holes(lab == 1 + int(np.argmax(sizes)))


def load(side: Side):
    """(depth float32 H×W, lines bool H×W, mirror mask bool H×W, mask source 'sam' | 'otsu')."""
    import numpy as np

    depth = _read_tif(side.depth)
    gt = _read_png(side.gt, "drawing")
    if gt.shape != depth.shape:
        raise DataError(f"drawing {side.gt} is {gt.shape[1]}×{gt.shape[0]} but its depth map is "
                        f"{depth.shape[1]}×{depth.shape[0]}", fix="the drawing must have the depth map's size")
    if side.mask is not None:
        mask, source = _read_png(side.mask, "mirror mask"), "sam"
    elif side.albedo is not None:
        mask, source = otsu_mask(_read_tif(side.albedo)), "otsu"
    else:
        raise DataError(f"no mirror mask for {side.key}: MASKS_REL/{side.key}_mask.png is missing and so is the "
                        f"albedo {side.depth.parent / (side.key + '_RHO.tif')}", fix="add the SAM mask PNG")
    if mask.shape != depth.shape:
        raise DataError(f"mirror mask {side.mask or side.albedo} is {mask.shape[1]}×{mask.shape[0]} but the depth map "
                        f"is {depth.shape[1]}×{depth.shape[0]}", fix="the mask must have the depth map's size")
    finite = np.isfinite(depth)
    mask = mask & finite
    if not mask.any():
        raise DataError(f"mirror mask of {side.key} is empty", fix="check MASKS_REL/" + f"{side.key}_mask.png")
    return np.where(finite, depth, 0).astype(np.float32), gt, mask, source


# -- fixture ----------------------------------------------------------------------------------------------------
FIXTURE_SIDES = (("KHM-0001", "V"), ("KHM-0001", "R"), ("KHM-0002", "R"), ("ANSA-VI-1700", "R"))
FIXTURE_HALF_WIDTH = (3.0, 0.5)  # groove half-width in px: mean, sd (GT = centreline distance ≤ half-width)


def _bezier(rng, h, w, n=400):
    import numpy as np

    c = np.array([w / 2, h / 2]) + rng.uniform(-0.3, 0.3, (4, 2)) * np.array([w, h])
    t = np.linspace(0, 1, n)[:, None]
    pts = ((1 - t) ** 3) * c[0] + 3 * ((1 - t) ** 2) * t * c[1] + 3 * (1 - t) * t ** 2 * c[2] + t ** 3 * c[3]
    return pts


def _distance_to(points, h, w):
    """Distance of every pixel to a densely sampled polyline."""
    import numpy as np
    from scipy import ndimage

    canvas = np.ones((h, w), bool)
    xy = np.round(points).astype(int)
    ok = (xy[:, 0] >= 0) & (xy[:, 0] < w) & (xy[:, 1] >= 0) & (xy[:, 1] < h)
    canvas[xy[ok, 1], xy[ok, 0]] = False
    return ndimage.distance_transform_edt(canvas)


def synthetic_side(rng, h: int = 336, w: int = 448, curves: int = 7, scratches: int = 10):
    """(depth float32, lines bool, mirror bool, albedo float32): a dome plus tilt, engraved grooves along Bézier
    curves (Gaussian profile, GT = within the groove's half-width), shallower-looking narrow straight scratches that
    are not in the GT, low-frequency corrosion and noise."""
    import numpy as np
    from scipy import ndimage

    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    cy, cx, r = h / 2, w / 2, 0.47 * min(h, w)
    rr = np.hypot(yy - cy, xx - cx) / r
    mirror = rr <= 1
    depth = 2.0 * (1 - np.clip(rr, 0, 1.2) ** 2) + rng.uniform(-1, 1) * xx / w + rng.uniform(-1, 1) * yy / h
    lines = np.zeros((h, w), bool)
    hw_mean, hw_sd = FIXTURE_HALF_WIDTH
    for _ in range(curves):
        d = _distance_to(_bezier(rng, h, w), h, w)
        hw = float(np.clip(rng.normal(hw_mean, hw_sd), 1.5, 5))
        depth -= rng.uniform(0.08, 0.14) * np.exp(-(d ** 2) / (2 * (hw / 1.6) ** 2))
        lines |= d <= hw
    for _ in range(scratches):  # straight, narrow, not annotated
        p0 = np.array([cx, cy]) + rng.uniform(-0.8, 0.8, 2) * r
        ang = rng.uniform(0, np.pi)
        t = np.linspace(-0.35, 0.35, 300)[:, None] * r
        d = _distance_to(p0 + t * np.array([np.cos(ang), np.sin(ang)]), h, w)
        depth -= rng.uniform(0.1, 0.16) * np.exp(-(d ** 2) / (2 * 0.9 ** 2))
    depth += 0.03 * ndimage.gaussian_filter(rng.normal(0, 1, (h, w)), 3) / 0.1
    depth += rng.normal(0, 0.01, (h, w))
    lines &= mirror
    albedo = np.where(mirror, 0.6, 0.08) + rng.normal(0, 0.03, (h, w))
    return depth.astype(np.float32), lines, mirror, albedo.astype(np.float32)


def fixture(out: Path, seed: int = 0, h: int = 336, w: int = 448) -> Path:
    """Four annotated sides (1/20 of the real 8,964 × 6,716): KHM-0001_V, KHM-0001_R and KHM-0002_R to train on and
    ANSA-VI-1700_R (a repository test id) to test on. Depth and albedo as float32 TIFFs (zlib), the drawing as an
    RGBA PNG with the lines in alpha (RGB black), the mirror masks as 0/255 PNGs. KHM-0002_R has no mask, so the
    reader's albedo-Otsu fallback is exercised."""
    import numpy as np
    import tifffile
    from PIL import Image

    rng = np.random.default_rng(seed)
    root = Path(out) / "ETMIRA"
    (root / "GT_REL").mkdir(parents=True, exist_ok=True)
    (root / "MASKS_REL").mkdir(parents=True, exist_ok=True)
    for mirror_id, side in FIXTURE_SIDES:
        key = f"{mirror_id}_{side}"
        depth, lines, mirror, albedo = synthetic_side(rng, h, w)
        ps = root / mirror_id / "PS"
        ps.mkdir(parents=True, exist_ok=True)
        tifffile.imwrite(ps / f"{key}_depth.tif", depth, compression="zlib")
        tifffile.imwrite(ps / f"{key}_RHO.tif", albedo.astype(np.float16).astype(np.float32), compression="zlib")
        rgba = np.zeros((h, w, 4), np.uint8)
        rgba[..., 3] = lines * 255
        Image.fromarray(rgba, "RGBA").save(root / "GT_REL" / f"{key}_drawings.png")
        if key != "KHM-0002_R":
            Image.fromarray(mirror.astype(np.uint8) * 255).save(root / "MASKS_REL" / f"{key}_mask.png")
    return root
