"""CoNSeP (colorectal nuclear segmentation and phenotypes, 41 H&E images of 1000×1000 at 40×), public layout::

    <root>/Train/Images/train_1.png …  (27, RGBA PNG)      <root>/Train/Labels/train_1.mat …
    <root>/Test/Images/test_1.png …    (14)                 <root>/Test/Labels/test_1.mat …

Each ``.mat`` holds ``inst_map`` (H×W instance ids), ``type_map`` (H×W, 0 background and 1–7: other,
inflammatory, healthy epithelial, dysplastic/malignant epithelial, fibroblast, muscle, endothelial) and
``inst_type`` (n×1, the type of each instance). Types are mapped to PanNuke's (hybrid-seg card): 3 → epithelial,
4 → neoplastic, 2 → inflammatory, 5/6/7 → connective, 1 ("other") → 0 (no type; the nucleus stays an instance for
the binary metrics). A label map whose size differs from its image, or a .mat without ``inst_map``/``type_map``,
is a DataError naming the file.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from medrun.errors import DataError

from . import DatasetInfo

DATASETS = [
    DatasetInfo(
        "consep",
        "CoNSeP colorectal nuclei (41 H&E images, instance + type maps)",
        "{Train,Test}/Images/*.png + {Train,Test}/Labels/*.mat (inst_map, type_map, inst_type)",
        "CoNSeP (Graham et al., HoVer-Net paper; warwick.ac.uk TIA centre data page); unzip and point at the folder "
        "holding Train/ and Test/",
        "medrun.datasets.consep:fixture",
        ("segmentation", "instance", "histology"),
    ),
]

PARTS = ("Train", "Test")
# CoNSeP type → PanNuke type (0 background, 1 neoplastic, 2 inflammatory, 3 connective, 4 dead, 5 epithelial)
TO_PANNUKE = {0: 0, 1: 0, 2: 2, 3: 5, 4: 1, 5: 3, 6: 3, 7: 3}
_HINT = "point at the CoNSeP folder that holds Train/ and Test/ (each with Images/ and Labels/), or try --fixture"


@dataclass(frozen=True)
class Case:
    id: str
    image: Path
    label: Path


def check_layout(root: Path, parts=PARTS) -> None:
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"CoNSeP folder not found: {root}", fix=_HINT)
    for part in parts:
        for sub in ("Images", "Labels"):
            if not (root / part / sub).is_dir():
                inner = [p for p in sorted(root.iterdir()) if p.is_dir() and (p / part / sub).is_dir()]
                if inner:
                    raise DataError(f"{root} is one level above the CoNSeP folder", fix=f"use {inner[0]} instead")
                raise DataError(f"{root} has no {part}/{sub}/ folder", fix=_HINT)


def read(root: Path, part: str = "Train") -> list[Case]:
    root = Path(root)
    check_layout(root, (part,))
    cases = []
    for img in sorted(p for p in (root / part / "Images").iterdir() if p.suffix.lower() == ".png"
                      and not p.name.startswith(".")):
        lab = root / part / "Labels" / f"{img.stem}.mat"
        if not lab.is_file():
            raise DataError(f"label missing for {img}: {lab}", fix="restore the .mat file or remove the image")
        cases.append(Case(img.stem, img, lab))
    if not cases:
        raise DataError(f"no PNG images in {root / part / 'Images'}", fix=_HINT)
    return cases


def load(case: Case):
    """(image (H,W,3) uint8, instance map (H,W) int32, PanNuke type map (H,W) uint8)."""
    import numpy as np
    from PIL import Image, UnidentifiedImageError
    from scipy.io import loadmat

    try:
        with Image.open(case.image) as im:
            image = np.asarray(im.convert("RGB"), dtype=np.uint8)
    except (UnidentifiedImageError, OSError, ValueError) as e:
        raise DataError(f"cannot read {case.image}: {e}", fix="replace or delete the file") from None
    try:
        mat = loadmat(case.label)
    except Exception as e:  # noqa: BLE001 (scipy raises several types for a damaged file)
        raise DataError(f"cannot read {case.label}: {type(e).__name__}: {e}", fix="re-extract the .mat file") from None
    missing = [k for k in ("inst_map", "type_map") if k not in mat]
    if missing:
        raise DataError(f"{case.label} has no '{missing[0]}'",
                        fix="CoNSeP labels hold inst_map, type_map and inst_type; re-extract the archive")
    inst, tmap = np.asarray(mat["inst_map"]), np.asarray(mat["type_map"])
    if inst.shape != image.shape[:2] or tmap.shape != image.shape[:2]:
        raise DataError(f"{case.label}: inst_map {inst.shape} / type_map {tmap.shape} do not match the image "
                        f"{image.shape[:2]} of {case.image.name}", fix="the label must belong to its image")
    bad = sorted(set(np.unique(tmap).astype(int).tolist()) - set(TO_PANNUKE))
    if bad:
        raise DataError(f"{case.label}: type_map has values {bad[:5]} outside CoNSeP's 0–7",
                        fix="re-extract the archive")
    lut = np.zeros(8, np.uint8)
    for k, v in TO_PANNUKE.items():
        lut[k] = v
    return image, inst.astype(np.int32), lut[tmap.astype(np.int64)]


def fixture(out: Path, seed: int = 0, n_train: int = 4, n_test: int = 2, size: int = 128) -> Path:
    """CoNSeP layout with ``size``² RGBA PNGs drawn like the PanNuke fixture but with a shifted stain hue (the
    domain gap), and .mat labels (inst_map, type_map with CoNSeP's 1–7 codes, inst_type, inst_centroid)."""
    import numpy as np
    from PIL import Image
    from scipy.io import savemat

    from .pannuke import draw_patch

    rng = np.random.default_rng(seed + 101)
    root = Path(out) / "CoNSeP"
    back = {1: [4], 2: [2], 3: [5, 6, 7], 4: [1], 5: [3]}  # PanNuke type → CoNSeP codes (dead → "other")
    for part, n in (("Train", n_train), ("Test", n_test)):
        (root / part / "Images").mkdir(parents=True, exist_ok=True)
        (root / part / "Labels").mkdir(parents=True, exist_ok=True)
        for i in range(1, n + 1):
            img, mask = draw_patch(rng, size, "Colon", hue=0.25)
            inst = mask[..., :5].max(-1).astype(np.int32)
            tmap = np.zeros(inst.shape, np.int32)
            types, centroids = [], []
            for j in range(1, int(inst.max()) + 1):
                sel = inst == j
                if not sel.any():
                    continue
                c = int(np.argmax(mask[sel][:, :5].max(0) > 0)) + 1
                code = int(rng.choice(back[c]))
                tmap[sel] = code
                types.append([code])
                ys, xs = np.nonzero(sel)
                centroids.append([xs.mean(), ys.mean()])
            rgba = np.concatenate([img, np.full((size, size, 1), 255, np.uint8)], -1)
            name = f"{part.lower()}_{i}"
            Image.fromarray(rgba, "RGBA").save(root / part / "Images" / f"{name}.png")
            savemat(root / part / "Labels" / f"{name}.mat",
                    {"inst_map": inst.astype(np.float64), "type_map": tmap, "inst_type": np.array(types, np.float64),
                     "inst_centroid": np.array(centroids, np.float64)})
    return root
