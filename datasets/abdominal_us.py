"""Abdominal ultrasound (Vitale et al. 2019, Kaggle ``ignaciorlando/ussimandsegm``): real (RUS) and CT-simulated
(AUS) abdominal scans with colour-coded masks of 8 organs.

Layout (the Kaggle archive unpacked; the root may be the outer or the inner ``abdominal_US`` folder)::

    <root>/abdominal_US/AUS/images/train/<name>.png          simulated scans
    <root>/abdominal_US/AUS/annotations/train/<name>.png     colour-coded mask of the same name
    <root>/abdominal_US/AUS/{images,annotations}/test/…
    <root>/abdominal_US/RUS/images/{train,test}/…            real scans; annotations only for a subset (test)
    <root>/abdominal_US/RUS/annotations/test/…

Only images with an annotation of the same stem are used. Colours (dataset docs, as read by torch-em): liver
(100, 0, 100), kidney (255, 255, 0), pancreas (0, 0, 255), vessels (255, 0, 0), adrenals (0, 255, 255), gallbladder
(0, 255, 0), bones (255, 255, 255), spleen (255, 0, 255); black and (10, 10, 10) are background, and any other
colour (anti-aliased edges in some masks) counts as no organ. The paper (lorasam card) trains on the synthetic
training scans only and tests on real and synthetic test scans: the split names the sources (``AUS``, ``RUS``).
"""

from __future__ import annotations

from pathlib import Path

from medrun.errors import DataError

from . import DatasetInfo
from .surgical import Frame, check_mask_size, open_image

DATASETS = [
    DatasetInfo("abdominal-us", "Abdominal ultrasound, real and simulated, with 8 organ masks (Vitale et al.)",
                "abdominal_US/{AUS,RUS}/{images,annotations}/{train,test}/<name>.png",
                "Kaggle ignaciorlando/ussimandsegm; point at the unpacked abdominal_US folder",
                "medrun.datasets.abdominal_us:fixture", ("segmentation", "ultrasound")),
]

COLOURS = {"liver": (100, 0, 100), "kidney": (255, 255, 0), "pancreas": (0, 0, 255), "vessels": (255, 0, 0),
           "adrenals": (0, 255, 255), "gallbladder": (0, 255, 0), "bones": (255, 255, 255), "spleen": (255, 0, 255)}
CLASSES = list(COLOURS)
SOURCES = ("AUS", "RUS")
_HINT = "point at the unpacked abdominal_US folder (the one holding AUS/ and RUS/), or try --fixture"


def check_layout(root: Path) -> Path:
    """The folder holding AUS/ and RUS/ (the given root or its inner abdominal_US/)."""
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"abdominal ultrasound data not found at {root}", fix=_HINT)
    for cand in (root, root / "abdominal_US", root / "abdominal_US" / "abdominal_US"):
        if any((cand / s / "images").is_dir() for s in SOURCES):
            return cand
    raise DataError(f"{root} does not have the abdominal ultrasound layout: no AUS/images or RUS/images", fix=_HINT)


def read(root: Path, part: str, sources: list[str]) -> list[Frame]:
    """Annotated images of ``part`` (train / test) from the named sources (AUS, RUS)."""
    base, frames = check_layout(root), []
    for src in sources:
        if src not in SOURCES:
            raise DataError(f"unknown source '{src}'", fix="sources are AUS (simulated) and RUS (real)")
        images, masks = base / src / "images" / part, base / src / "annotations" / part
        if not images.is_dir() or not masks.is_dir():
            raise DataError(f"{src} has no annotated {part} scans: {images} or {masks} is missing",
                            fix="the real (RUS) scans are annotated only in test; train on AUS")
        by_stem = {p.stem: p for p in masks.iterdir() if p.suffix.lower() in (".png", ".jpg", ".bmp")}
        for img in sorted(p for p in images.iterdir() if p.stem in by_stem):
            frames.append(Frame(f"{src}/{part}/{img.stem}", f"{src}/{part}", img, by_stem[img.stem]))
    if not frames:
        raise DataError(f"no annotated {part} scans for {', '.join(sources)} under {base}", fix=_HINT)
    return frames


def load(frame: Frame, classes: list[str]):
    """(RGB uint8 H×W×3, bool masks C×H×W in the order of ``classes``)."""
    import numpy as np

    image = open_image(frame.image, "RGB", scale=True)
    lab = open_image(frame.label, "RGB")  # drops the constant alpha channel some masks carry
    check_mask_size(frame.label, lab.size, frame.image, image.size)
    arr = np.asarray(lab)
    masks = np.stack([(arr == COLOURS[c]).all(-1) for c in classes]) if classes else np.zeros((0, *arr.shape[:2]), bool)
    return np.asarray(image, dtype=np.uint8), masks


# -- fixture -----------------------------------------------------------------------------------------------------
_ORGANS = {"liver": (150, 0.3, 0.28), "kidney": (80, 0.14, 0.1), "gallbladder": (20, 0.1, 0.12)}  # grey, ry, rx


def fixture(out: Path, seed: int = 0, n_train: int = 12, n_test: int = 4, size: int = 96) -> Path:
    """The Kaggle layout in miniature: speckled grey scans of 96×96 with 1–3 of liver (bright, large), kidney
    (mid-grey) and gallbladder (dark) as ellipses, colour masks in the release's colours (background (10, 10, 10)
    in the simulated masks, black in the real ones). AUS: train and test; RUS: unannotated train scans and
    annotated test scans, slightly noisier."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(seed)
    root = Path(out) / "abdominal_US"
    base = root / "abdominal_US"
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    plan = [("AUS", "train", n_train, True), ("AUS", "test", n_test, True), ("RUS", "train", 3, False),
            ("RUS", "test", n_test, True)]
    for src, part, n, annotated in plan:
        (base / src / "images" / part).mkdir(parents=True)
        if annotated:
            (base / src / "annotations" / part).mkdir(parents=True)
        for i in range(n):
            img = 50 + rng.gamma(2.0, 12.0 if src == "AUS" else 16.0, (size, size))
            lab = np.zeros((size, size, 3), np.uint8)
            lab[:] = (10, 10, 10) if src == "AUS" else (0, 0, 0)
            k = int(rng.integers(1, 4))
            for organ in [o for o in _ORGANS if o in set(rng.choice(list(_ORGANS), size=k, replace=False))]:
                grey, ry, rx = _ORGANS[organ]
                cy, cx = rng.uniform(0.3, 0.7, 2) * size
                m = ((yy - cy) / (ry * size)) ** 2 + ((xx - cx) / (rx * size)) ** 2 <= 1
                img[m] = grey + rng.gamma(2.0, 6.0, int(m.sum()))
                lab[m] = COLOURS[organ]
            name = f"{src.lower()}{part}{i:03d}.png"
            Image.fromarray(np.clip(img, 0, 255).astype(np.uint8)).save(base / src / "images" / part / name)
            if annotated:
                Image.fromarray(lab).save(base / src / "annotations" / part / name)
    return root
