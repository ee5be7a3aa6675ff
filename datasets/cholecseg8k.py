"""CholecSeg8k: 8,080 laparoscopic cholecystectomy frames (854×480) from 17 Cholec80 videos, 12 classes + background.

Layout (Kaggle ``newslab/cholecseg8k``, unpacked)::

    <root>/video01/video01_00080/frame_80_endo.png                   RGB frame
                                 frame_80_endo_color_mask.png        colour-coded classes (not read)
                                 frame_80_endo_mask.png              annotation-tool mask (not read)
                                 frame_80_endo_watershed_mask.png    class ids as grey values (RGB, R = G = B)

Class ids are the watershed mask's grey values (dataset docs, lorasam card): 50 background, 11 abdominal wall,
21 liver, 13 gastrointestinal tract, 12 fat, 31 grasper, 23 connective tissue, 24 blood, 25 cystic duct,
32 L-hook electrocautery, 22 gallbladder, 33 hepatic vein, 5 liver ligament. Every mask is checked at load: a
grey value outside this table is an error naming the file (the card asks to verify the table with a histogram).
A frame whose three mask files are not all present is an error naming the missing file.
"""

from __future__ import annotations

from pathlib import Path

from medrun.errors import DataError

from . import DatasetInfo
from .surgical import Frame, check_mask_size, open_image

DATASETS = [
    DatasetInfo("cholecseg8k", "CholecSeg8k laparoscopic frames with 12-class masks (Cholec80 subset)",
                "videoXX/videoXX_<start>/frame_<n>_endo{,_color_mask,_mask,_watershed_mask}.png",
                "Kaggle newslab/cholecseg8k; point at the folder holding video01/ … video55/",
                "medrun.datasets.cholecseg8k:fixture", ("segmentation", "endoscopy", "video")),
]

# watershed grey value → class name (the text prompt); 50 is background and not scored
GREY = {11: "abdominal wall", 21: "liver", 13: "gastrointestinal tract", 12: "fat", 31: "grasper",
        23: "connective tissue", 24: "blood", 25: "cystic duct", 32: "l-hook electrocautery", 22: "gallbladder",
        33: "hepatic vein", 5: "liver ligament"}
BACKGROUND = 50
CLASSES = list(GREY.values())
_BY_NAME = {v: k for k, v in GREY.items()}
# colour mask codes (dataset docs), written by the fixture
COLOURS = {50: (127, 127, 127), 11: (210, 140, 140), 21: (255, 114, 114), 13: (231, 70, 156), 12: (186, 183, 75),
           31: (170, 255, 0), 23: (255, 85, 0), 24: (255, 0, 0), 25: (255, 255, 0), 32: (169, 255, 184),
           22: (255, 160, 165), 33: (0, 50, 128), 5: (111, 74, 0)}
MASK_SUFFIXES = ("_endo_color_mask.png", "_endo_mask.png", "_endo_watershed_mask.png")
_HINT = "point at the CholecSeg8k folder that holds video01/, video09/ …, or try --fixture"


def check_layout(root: Path) -> list[Path]:
    """The video folders, after checking the root is the right level."""
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"CholecSeg8k not found at {root}", fix=_HINT)
    videos = sorted(p for p in root.iterdir() if p.is_dir() and p.name.startswith("video"))
    if not videos:
        inner = [
            p
            for p in root.iterdir()
            if p.is_dir() and any(q.name.startswith("video") for q in p.iterdir() if q.is_dir())
        ]
        raise DataError(f"{root} does not have the CholecSeg8k layout: no video*/ folders",
                        fix=f"use {inner[0]} instead" if inner else _HINT)
    return videos


def read(root: Path, videos: list[str] | None = None) -> list[Frame]:
    """Every frame of the named videos (default: all), each with its three mask files present."""
    frames = []
    for vdir in check_layout(root):
        if videos is not None and vdir.name not in videos:
            continue
        for img in sorted(vdir.glob("*/frame_*_endo.png"), key=lambda p: (p.parent.name, _frame_no(p))):
            for suffix in MASK_SUFFIXES:
                m = img.with_name(img.name.removesuffix("_endo.png") + suffix)
                if not m.is_file():
                    raise DataError(
                        f"mask file missing for {img}: {m}",
                        fix="re-extract the clip from the Kaggle archive, or delete the frame and its masks",
                    )
            label = img.with_name(img.name.removesuffix("_endo.png") + "_endo_watershed_mask.png")
            frames.append(
                Frame(f"{vdir.name}/{img.parent.name}/{img.name.removesuffix('_endo.png')}", vdir.name, img, label)
            )
    if videos is not None:
        found = {f.video for f in frames}
        missing = [v for v in videos if v not in found]
        if missing:
            raise DataError(f"{root}: no frames for video(s) {', '.join(missing)} named in the split",
                            fix="fix dataset.split in the manifest (video folder names such as video01)")
    if not frames:
        raise DataError(f"no frame_*_endo.png files under {root}", fix=_HINT)
    return frames


def _frame_no(p: Path) -> int:
    try:
        return int(p.name.split("_")[1])
    except (IndexError, ValueError):
        return 0


def load(frame: Frame, classes: list[str]):
    """(RGB uint8 H×W×3, bool masks C×H×W in the order of ``classes``)."""
    import numpy as np

    image = open_image(frame.image, "RGB", scale=True)
    lab = open_image(frame.label, "RGB")
    check_mask_size(frame.label, lab.size, frame.image, image.size)
    grey = np.asarray(lab)[..., 0]
    values = set(np.unique(grey).tolist())
    unknown = sorted(values - set(GREY) - {BACKGROUND})
    if unknown:
        raise DataError(f"{frame.label} has grey values {unknown[:6]} that are no CholecSeg8k class",
                        fix="the watershed mask is damaged or not from CholecSeg8k; re-extract it")
    masks = np.stack([grey == _BY_NAME[c] for c in classes]) if classes else np.zeros((0, *grey.shape), bool)
    return np.asarray(image, dtype=np.uint8), masks


# -- fixture -----------------------------------------------------------------------------------------------------
def paint_scene(rng, w: int, h: int, present: dict[str, bool]):
    """A noisy tissue background with a pink textured liver blob, a grey grasper bar and a green gallbladder
    ellipse at random positions (the lorasam card's fixture). Returns (RGB uint8, label map of grey values)."""
    import numpy as np

    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    img = np.empty((h, w, 3), np.float32)
    img[:] = (120, 45, 40)
    img += rng.normal(0, 18, (h, w, 3))
    lab = np.full((h, w), BACKGROUND, np.uint8)
    if present.get("liver"):
        cy, cx = rng.uniform(0.25, 0.75) * h, rng.uniform(0.2, 0.8) * w
        r = min(h, w) * rng.uniform(0.22, 0.32)
        ang = np.arctan2(yy - cy, xx - cx)
        rad = r * (1 + 0.18 * np.sin(3 * ang + rng.uniform(0, 6.28)))
        m = (yy - cy) ** 2 + (xx - cx) ** 2 <= rad**2
        texture = 25 * np.sin(xx / 2.5) * np.sin(yy / 2.5)
        img[m] = np.array([225, 120, 140]) + texture[m, None] + rng.normal(0, 8, (m.sum(), 3))
        lab[m] = 21
    if present.get("gallbladder"):
        cy, cx = rng.uniform(0.25, 0.75) * h, rng.uniform(0.2, 0.8) * w
        ry, rx = h * rng.uniform(0.12, 0.2), w * rng.uniform(0.12, 0.2)
        m = ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1
        img[m] = np.array([70, 170, 60]) + rng.normal(0, 8, (m.sum(), 3))
        lab[m] = 22
    if present.get("grasper"):
        cy, cx = rng.uniform(0.3, 0.7) * h, rng.uniform(0.3, 0.7) * w
        theta = rng.uniform(0, np.pi)
        along = (xx - cx) * np.cos(theta) + (yy - cy) * np.sin(theta)
        across = -(xx - cx) * np.sin(theta) + (yy - cy) * np.cos(theta)
        m = (np.abs(along) <= w * rng.uniform(0.25, 0.4)) & (np.abs(across) <= h * 0.07)
        img[m] = np.array([175, 175, 180]) + rng.normal(0, 6, (m.sum(), 3))
        lab[m] = 31
    return np.clip(img, 0, 255).astype(np.uint8), lab


FIXTURE_VIDEOS = ("video01", "video09", "video12")


def fixture(out: Path, seed: int = 0, frames_per_video: int = 8, w: int = 96, h: int = 64) -> Path:
    """3 videos × 8 frames of 96×64 in the Kaggle layout (frame, colour, plain and watershed masks). Three classes
    (liver, grasper, gallbladder), each present in a frame with probability 0.75."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(seed)
    root = Path(out) / "cholecseg8k"
    for v, video in enumerate(FIXTURE_VIDEOS):
        start = 80 * (v + 1)
        clip = root / video / f"{video}_{start:05d}"
        clip.mkdir(parents=True, exist_ok=True)
        for i in range(frames_per_video):
            present = {c: bool(rng.random() < 0.75) for c in ("liver", "grasper", "gallbladder")}
            if not any(present.values()):
                present["liver"] = True
            img, lab = paint_scene(rng, w, h, present)
            stem = f"frame_{start + i}"
            Image.fromarray(img).save(clip / f"{stem}_endo.png")
            colour = np.zeros((h, w, 3), np.uint8)
            for g, c in COLOURS.items():
                colour[lab == g] = c
            Image.fromarray(colour).save(clip / f"{stem}_endo_color_mask.png")
            Image.fromarray(lab).save(clip / f"{stem}_endo_mask.png")
            Image.fromarray(np.repeat(lab[..., None], 3, axis=2)).save(clip / f"{stem}_endo_watershed_mask.png")
    return root
