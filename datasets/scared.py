"""SCARED (MICCAI EndoVis 2019 depth challenge, porcine stereo endoscopy), frames extracted (endo-depth).

Layout: the challenge's ``dataset_k/keyframe_j`` folders with the frames extracted as AF-SfMLearner does, and the
per-frame ground truth the release ships as ``scene_points`` TIFFs::

    <root>/
        dataset_1/
            keyframe_1/
                image_02/data/0000000000.png ...      left frames (RGB)
                image_03/data/0000000000.png ...      right frames, same names
                data/scene_points/scene_points000000.tiff ...   per-frame 3-D points (float32, x y z in mm),
                                                                 H×W×3 for the left view, or 2H×W×3 with the left
                                                                 view on top (the release's stacked form); z = depth,
                                                                 0 or NaN where there is none
            keyframe_2/ ...
        dataset_2/ ...

Frame ``image_02/data/<n>.png`` pairs with ``scene_points<n:06d>.tiff``. A dataset is one subject (pig), so splits
are by dataset number: the card's 1–7 train, 8–9 test. A frame without its right view or points file, or a points
file of another size than its frame, is a ``DataError`` naming the file.

The fixture: datasets 1–3, one keyframe each with 6 of the hamlyn fixture's synthetic stereo scenes at 96×128 (points
H×W×3 for the left view, x and y from the pinhole model, rounded to 0.01 mm and zlib-compressed to keep it small).
"""

from __future__ import annotations

import re
from pathlib import Path

from medrun.errors import DataError

from . import DatasetInfo
from .hamlyn import Frame

DATASETS = [
    DatasetInfo(
        "scared",
        "SCARED (EndoVis 2019) stereo endoscopy, frames extracted, scene_points ground truth",
        "dataset_k/keyframe_j/image_02/data/*.png (left), image_03/data/*.png (right), "
        "data/scene_points/scene_points*.tiff (x y z in mm)",
        "MICCAI EndoVis 2019 SCARED challenge (request access from the organisers); extract rgb.mp4 into "
        "image_02/data and image_03/data as AF-SfMLearner does, unpack data/scene_points.tar.gz; point at the "
        "folder holding dataset_1/ … dataset_9/",
        "medrun.datasets.scared:fixture",
        ("depth", "stereo", "endoscopy"),
    ),
]

_HINT = ("point at the folder that holds dataset_1/ … (each keyframe_j/ with image_02/data/, image_03/data/ and "
         "data/scene_points/)")
_DATASET = re.compile(r"^dataset_?(\d+)$")
_KEYFRAME = re.compile(r"^keyframe_?(\d+)$")


def subjects(root: Path) -> dict[int, Path]:
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"SCARED folder not found: {root}", fix=_HINT)
    found = {int(m.group(1)): p for p in sorted(root.iterdir()) if p.is_dir() and (m := _DATASET.match(p.name))}
    if not found:
        shown = ", ".join(sorted(p.name for p in root.iterdir())[:5]) or "nothing"
        raise DataError(f"{root} has no dataset_k/ folders (found: {shown})", fix=_HINT)
    return dict(sorted(found.items()))


def keyframes(root: Path) -> list[tuple[int, int, Path]]:
    """(dataset k, keyframe j, folder) of every keyframe, each checked for its three sub-folders."""
    out = []
    for k, d in subjects(root).items():
        for p in sorted(d.iterdir()):
            m = _KEYFRAME.match(p.name)
            if not (p.is_dir() and m):
                continue
            for sub in ("image_02/data", "image_03/data", "data/scene_points"):
                if not (p / sub).is_dir():
                    raise DataError(f"{p} has no {sub}/ folder",
                                    fix="extract the frames into image_02/data and image_03/data and unpack "
                                        "data/scene_points.tar.gz there")
            out.append((k, int(m.group(1)), p))
    if not out:
        raise DataError(f"no keyframe_j/ folders under the dataset_k/ folders of {root}", fix=_HINT)
    return out


def check_layout(root: Path) -> None:
    keyframes(root)


def read(root: Path, subjects_wanted: list[int] | None = None) -> list[Frame]:
    """Every frame of the datasets (subjects) ``subjects_wanted`` (default all)."""
    frames = []
    kfs = keyframes(root)
    have = sorted({k for k, _, _ in kfs})
    missing = [s for s in (subjects_wanted or []) if s not in have]
    if missing:
        raise DataError(f"{root} has no dataset_{missing[0]}/ (datasets there: {', '.join(map(str, have))})",
                        fix="fix dataset.train_subjects / test_subjects / val_subjects")
    for k, j, p in kfs:
        if subjects_wanted is not None and k not in subjects_wanted:
            continue
        lefts = sorted(q for q in (p / "image_02" / "data").iterdir() if q.suffix.lower() in (".png", ".jpg")
                       and not q.name.startswith("."))
        for left in lefts:
            right = p / "image_03" / "data" / left.name
            if not right.is_file():
                raise DataError(f"right frame missing for {left}: {right}", fix="extract the right video's frames")
            try:
                n = int(left.stem)
            except ValueError:
                raise DataError(f"frame {left} is not named by its number", fix="name frames 0000000000.png …") \
                    from None
            points = p / "data" / "scene_points" / f"scene_points{n:06d}.tiff"
            if not points.is_file():
                raise DataError(f"ground truth missing for {left}: {points}",
                                fix="unpack data/scene_points.tar.gz of this keyframe, or remove the frame")
            frames.append(Frame(f"d{k}k{j}", left.stem, left, right, points, subject=k))
    if not frames:
        raise DataError(f"no frames of datasets {subjects_wanted} in {root}", fix=_HINT)
    return frames


def check_points_header(path: Path, shape: tuple[int, int]) -> None:
    """A scene_points TIFF's shape from its header: H×W×3 or 2H×W×3 for an H×W frame."""
    import tifffile

    h, w = shape
    try:
        with tifffile.TiffFile(path) as t:
            got = t.series[0].shape
    except Exception as e:  # noqa: BLE001 (tifffile raises many types for a broken file)
        raise DataError(f"cannot read {path}: {e.__class__.__name__}: {e}", fix="replace or delete the file") from None
    if len(got) != 3 or got[-1] != 3 or got[1] != w or got[0] not in (h, 2 * h):
        raise DataError(f"scene points {path} have shape {tuple(got)}, not {h}×{w}×3 (or {2 * h}×{w}×3) for its "
                        f"{w}×{h} frame", fix="the points must be the frame's size (x y z per pixel)")


def read_scene_points(path: Path, shape: tuple[int, int]):
    """The left view's depth (z, mm; 0 where missing) of a scene_points TIFF of H×W×3 or 2H×W×3."""
    import numpy as np
    import tifffile

    try:
        pts = np.asarray(tifffile.imread(path), dtype=np.float32)
    except Exception as e:  # noqa: BLE001 (tifffile raises many types for a broken file)
        raise DataError(f"cannot read {path}: {e.__class__.__name__}: {e}", fix="replace or delete the file") from None
    h, w = shape
    if pts.ndim != 3 or pts.shape[-1] != 3 or pts.shape[1] != w or pts.shape[0] not in (h, 2 * h):
        raise DataError(f"scene points {path} have shape {pts.shape}, not {h}×{w}×3 (or {2 * h}×{w}×3) for its "
                        f"{w}×{h} frame", fix="the points must be the frame's size (x y z per pixel)")
    z = pts[:h, :, 2]
    return np.where(np.isfinite(z) & (z > 0), z, 0).astype(np.float32)


def fixture(out: Path, seed: int = 0, n_subjects: int = 3, frames: int = 6, h: int = 96, w: int = 128) -> Path:
    """dataset_1..3/keyframe_1 with 6 synthetic stereo frames each (PNG) and H×W×3 scene_points TIFFs."""
    import numpy as np
    import tifffile
    from PIL import Image

    from .hamlyn import holes, stereo_scene

    rng = np.random.default_rng(seed + 1000)
    out = Path(out)
    f = 100.0
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    for k in range(1, n_subjects + 1):
        kf = out / f"dataset_{k}" / "keyframe_1"
        for sub in ("image_02/data", "image_03/data", "data/scene_points"):
            (kf / sub).mkdir(parents=True, exist_ok=True)
        for i in range(frames):
            left, right, depth = stereo_scene(rng, h, w, f=f)
            depth = holes(rng, depth)
            Image.fromarray(left).save(kf / "image_02" / "data" / f"{i:010d}.png")
            Image.fromarray(right).save(kf / "image_03" / "data" / f"{i:010d}.png")
            pts = np.stack([(xx - w / 2) * depth / f, (yy - h / 2) * depth / f, depth], -1).astype(np.float32)
            tifffile.imwrite(kf / "data" / "scene_points" / f"scene_points{i:06d}.tiff", np.round(pts, 2),
                             compression="zlib")
    return out
