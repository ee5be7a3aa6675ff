"""Hamlyn rectified in-vivo stereo endoscopy, in the Endo-Depth-and-Motion release layout (endo-depth).

Layout (one folder per rectified video, as unpacked)::

    <root>/
        rectified01/
            image01/0000000001.jpg ...     left frames (RGB, JPEG)
            image02/0000000001.jpg ...     right frames, same names (rectified: horizontal disparity only)
            depth01/0000000001.png ...     16-bit depth of the left frame in mm, 0 = no depth
        rectified02/ ...

Videos are named by their number ``NN`` of ``rectifiedNN``. A left frame without its right frame or depth PNG, a
depth PNG that is not 16-bit, or a depth PNG of another size than its image is a ``DataError`` naming the file.

``stereo_scene`` / ``fixture`` write the card's miniature: a smooth tissue surface (a sum of Gaussians, 40–120 mm)
textured with band-limited noise and lit from the camera (brightness ∝ 1/depth², the monocular cue an endoscope
gives), the right view warped by disparity f·B/depth (f = 100 px, B = 5 mm), and the depth as 16-bit PNG in mm with
a few zero holes. ``scared.py`` writes its fixture from the same scenes.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from medrun.errors import DataError

from . import DatasetInfo

DATASETS = [
    DatasetInfo(
        "hamlyn",
        "Hamlyn rectified stereo endoscopy videos with depth (Endo-Depth-and-Motion release)",
        "rectifiedNN/{image01,image02}/*.jpg (left, right) + rectifiedNN/depth01/*.png (16-bit depth, mm, 0 = none)",
        "Hamlyn Centre laparoscopic / endoscopic video datasets, rectified release of Endo-Depth-and-Motion "
        "(Recasens et al. 2021); point at the folder holding the rectifiedNN/ folders",
        "medrun.datasets.hamlyn:fixture",
        ("depth", "stereo", "endoscopy"),
    ),
]

_HINT = "point at the folder that holds rectified01/, rectified02/ … (each with image01/, image02/, depth01/)"
_VIDEO = re.compile(r"^rectified(\d+)$")
_IMAGES = (".jpg", ".jpeg", ".png")


@dataclass(frozen=True)
class Frame:
    video: str  # "01"; for SCARED "d1k2" (dataset 1, keyframe 2)
    id: str  # file stem
    left: Path
    right: Path
    depth: Path
    subject: int = 0  # SCARED dataset number (the subject); 0 for Hamlyn

    @property
    def path(self) -> Path:  # what ctx.record_splits records
        return self.left


def videos(root: Path) -> dict[str, Path]:
    """``{NN: rectifiedNN folder}``, sorted; a DataError naming the folder when there is none."""
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"Hamlyn folder not found: {root}", fix=_HINT)
    found = {m.group(1): p for p in sorted(root.iterdir()) if p.is_dir() and (m := _VIDEO.match(p.name))}
    if not found:
        inner = [p for p in sorted(root.iterdir()) if p.is_dir() and any(_VIDEO.match(q.name) for q in p.iterdir()
                                                                         if q.is_dir())]
        if inner:
            raise DataError(f"{root} is one level above the Hamlyn folder", fix=f"use {inner[0]} instead")
        shown = ", ".join(sorted(p.name for p in root.iterdir())[:5]) or "nothing"
        raise DataError(f"{root} has no rectifiedNN/ folders (found: {shown})", fix=_HINT)
    return found


def check_layout(root: Path) -> dict[str, Path]:
    """Cheap check before fingerprinting: every video has image01/, image02/ and depth01/."""
    vids = videos(root)
    for v in vids.values():
        for sub in ("image01", "image02", "depth01"):
            if not (v / sub).is_dir():
                raise DataError(f"{v} has no {sub}/ folder", fix=f"every rectifiedNN needs image01/, image02/ and "
                                                                 f"depth01/; restore {v / sub}")
    return vids


def read(root: Path, only: list[str] | None = None) -> list[Frame]:
    """Every frame of the videos ``only`` (``["01", "07"]``; default all), sorted by video and name."""
    vids = check_layout(root)
    want = [_nn(v) for v in only] if only is not None else list(vids)
    missing = [v for v in want if v not in vids]
    if missing:
        raise DataError(f"{root} has no rectified{missing[0]}/ (videos there: {', '.join(vids)})",
                        fix="fix dataset.test_videos / dataset.val_videos to name videos that exist")
    frames = []
    for nn in want:
        v = vids[nn]
        lefts = sorted(p for p in (v / "image01").iterdir() if p.suffix.lower() in _IMAGES and not p.name[0] == ".")
        if not lefts:
            raise DataError(f"no frames in {v / 'image01'}", fix="restore the left frames (*.jpg)")
        for left in lefts:
            right = _sibling(v / "image02", left)
            depth = v / "depth01" / f"{left.stem}.png"
            if right is None:
                raise DataError(f"right frame missing for {left}: {v / 'image02' / left.name}",
                                fix="restore the right frame or remove the left one")
            if not depth.is_file():
                raise DataError(f"depth missing for {left}: {depth}", fix="restore the depth PNG or remove the frame")
            frames.append(Frame(nn, left.stem, left, right, depth))
    return frames


def _nn(v) -> str:
    return f"{int(v):02d}" if str(v).isdigit() else str(v)


def _sibling(folder: Path, left: Path) -> Path | None:
    for suffix in (left.suffix, *_IMAGES):
        p = folder / f"{left.stem}{suffix}"
        if p.is_file():
            return p
    return None


# -- headers (cheap: no pixel is decoded) ---------------------------------------------------------------------
DEPTH_MODES = ("I;16", "I;16L", "I;16B", "I;16N", "I")


def check_header(frame: Frame) -> None:
    """The depth file of a frame, from headers only: a 16-bit PNG (or a SCARED points TIFF) of its left frame's
    size; a DataError naming the file otherwise."""
    from PIL import Image

    try:
        with Image.open(frame.left) as im:
            w, h = im.size
    except OSError as e:
        raise DataError(f"cannot read {frame.left}: {e}", fix="replace or delete the file") from None
    if frame.depth.suffix.lower() in (".tif", ".tiff"):
        from .scared import check_points_header

        check_points_header(frame.depth, (h, w))
        return
    try:
        with Image.open(frame.depth) as im:
            mode, size = im.mode, im.size
    except OSError as e:
        raise DataError(f"cannot read {frame.depth}: {e}", fix="replace or delete the file") from None
    if mode not in DEPTH_MODES:
        raise DataError(f"depth {frame.depth} is {mode} (8-bit), not a 16-bit depth PNG in mm",
                        fix="use the 16-bit depth01/*.png of the release; an 8-bit export has lost the depth values")
    if size != (w, h):
        raise DataError(f"depth {frame.depth} is {size[0]}×{size[1]} but its image {frame.left.name} is {w}×{h}",
                        fix="a depth map must have its left frame's size; re-export it")


# -- loading one frame ----------------------------------------------------------------------------------------------
def read_rgb(path: Path):
    import numpy as np
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            return np.asarray(im.convert("RGB"), dtype=np.uint8)
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
        raise DataError(f"cannot read {path}: {e.__class__.__name__}: {e}", fix="replace or delete the file") from None


def read_depth_png(path: Path, shape: tuple[int, int]):
    """A 16-bit depth PNG (mm, 0 = no depth) as float32 mm; 8-bit or another size than ``shape`` is a DataError."""
    import numpy as np
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            mode, size = im.mode, im.size
            arr = np.asarray(im)
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
        raise DataError(f"cannot read {path}: {e.__class__.__name__}: {e}", fix="replace or delete the file") from None
    if mode not in DEPTH_MODES or arr.dtype == np.uint8:
        raise DataError(f"depth {path} is {mode} (8-bit), not a 16-bit depth PNG in mm",
                        fix="use the 16-bit depth01/*.png of the release; an 8-bit export has lost the depth values")
    if (size[1], size[0]) != tuple(shape):
        raise DataError(f"depth {path} is {size[0]}×{size[1]} but its image is {shape[1]}×{shape[0]}",
                        fix="a depth map must have its left frame's size; re-export it")
    return arr.astype(np.float32)


def load(frame: Frame):
    """(left uint8 H×W×3, right uint8 H×W×3, depth float32 H×W in mm, 0 = none), sizes checked."""
    left = read_rgb(frame.left)
    right = read_rgb(frame.right)
    if right.shape != left.shape:
        raise DataError(f"right frame {frame.right} is {right.shape[1]}×{right.shape[0]} but the left one is "
                        f"{left.shape[1]}×{left.shape[0]}", fix="left and right frames must be rectified to one size")
    if frame.depth.suffix.lower() in (".tif", ".tiff"):
        from .scared import read_scene_points

        depth = read_scene_points(frame.depth, left.shape[:2])
    else:
        depth = read_depth_png(frame.depth, left.shape[:2])
    return left, right, depth


# -- fixture ----------------------------------------------------------------------------------------------------
def stereo_scene(rng, h: int = 96, w: int = 128, f: float = 100.0, baseline: float = 5.0):
    """One synthetic stereo frame: (left uint8, right uint8, depth float32 mm). Depth is a smooth surface of
    Gaussians in 40–120 mm; colour = tissue tint × band-limited texture × camera light 1/depth²; the right view
    shows the surface point of left column u at u − disp(u), disp = f·B/depth (so I_l(u) = I_r(u − disp(u)))."""
    import numpy as np
    from scipy import ndimage

    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    z = np.zeros((h, w))
    for _ in range(int(rng.integers(3, 6))):
        cy, cx = rng.uniform(0, h), rng.uniform(0, w)
        s = rng.uniform(0.15, 0.4) * w
        z += rng.uniform(-1, 1) * np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * s * s))
    z += rng.uniform(-0.8, 0.8) * (xx / w - 0.5) + rng.uniform(-0.8, 0.8) * (yy / h - 0.5)  # a tilted plane
    z = (z - z.min()) / max(z.max() - z.min(), 1e-6)
    depth = 40.0 + z * rng.uniform(50, 80)  # 40 … 90–120 mm
    disp = f * baseline / depth  # pixels

    pad = 24
    noise = sum(ndimage.gaussian_filter(rng.standard_normal((h + 2 * pad, w + 2 * pad)), s) * s
                for s in (1.0, 2.0, 4.0))
    noise = (noise - noise.mean()) / (noise.std() + 1e-6)
    tint = np.array([0.85, 0.45, 0.40]) + rng.uniform(-0.05, 0.05, 3)

    def render(xs):  # the surface point seen at left column xs (float), its texture lit by the camera
        tex = ndimage.map_coordinates(noise, [yy + pad, xs + pad], order=1, mode="nearest")
        z = ndimage.map_coordinates(depth, [yy, np.clip(xs, 0, w - 1)], order=1, mode="nearest")
        light = (40.0 / z) ** 2  # camera light: 1 at 40 mm, ~0.16 at 100 mm
        rgb = 1.2 * tint[None, None] * (0.7 + 0.25 * tex)[..., None] * light[..., None]
        return np.clip(rgb * 255, 0, 255).astype(np.uint8)

    # the right view sees the point of left column u at u − disp(u); invert that map row by row (kept monotonic:
    # where the surface folds away, the nearer point wins as far as a monotonic map allows)
    seen = np.empty_like(xx)
    for r in range(h):
        xr = np.maximum.accumulate(xx[r] - disp[r])
        seen[r] = np.interp(xx[r], xr, xx[r], left=xx[r, 0] - (xr[0] - xx[r, 0]), right=xx[r, -1])
    return render(xx), render(seen), depth.astype(np.float32)


def holes(rng, depth, n: int = 3):
    """Zero (invalid) a few small discs, as specular highlights leave in real depth maps."""
    import numpy as np

    h, w = depth.shape
    yy, xx = np.mgrid[0:h, 0:w]
    for _ in range(n):
        cy, cx, r = rng.uniform(0, h), rng.uniform(0, w), rng.uniform(2, 5)
        depth[(yy - cy) ** 2 + (xx - cx) ** 2 < r * r] = 0
    return depth


def fixture(out: Path, seed: int = 0, n_videos: int = 4, frames: int = 10, h: int = 96, w: int = 128) -> Path:
    """``rectified01..04`` × 10 frames at 96×128 (card: 3 × 6; one more video for a validation split and more frames
    so a 64×64 run has enough steps): left/right JPEG (quality 95), depth 16-bit PNG in mm with zero holes."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(seed)
    out = Path(out)
    for v in range(1, n_videos + 1):
        base = out / f"rectified{v:02d}"
        for sub in ("image01", "image02", "depth01"):
            (base / sub).mkdir(parents=True, exist_ok=True)
        for i in range(1, frames + 1):
            left, right, depth = stereo_scene(rng, h, w)
            name = f"{i:010d}"
            Image.fromarray(left).save(base / "image01" / f"{name}.jpg", quality=95)
            Image.fromarray(right).save(base / "image02" / f"{name}.jpg", quality=95)
            d = np.round(holes(rng, depth)).astype(np.uint16)
            Image.fromarray(d).save(base / "depth01" / f"{name}.png")
    return out
