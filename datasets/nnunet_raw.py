"""Microscopy segmentation sets in the nnU-Net v2 raw layout (cmu-net card: datasets A, B, C).

Layout (what ``nnUNetv2`` reads from ``$nnUNet_raw``; the card takes it as the canonical input)::

    DatasetXXX_Name/
        dataset.json             {"channel_names": {"0": "fluorescence"}, "labels": {"background": 0, "organelle": 1},
                                  "numTraining": N, "file_ending": ".png" | ".tif"}
        imagesTr/<case>_0000.png  one channel per file, suffix _0000
        labelsTr/<case>.png       labels as integers (the values of dataset.json's "labels")
        imagesTs/<case>_0000.png  optional
        labelsTs/<case>.png       optional (nnU-Net itself never reads it; medrun uses it as the test split)

The published sets come as plain image/mask pairs; ``import_pairs`` (also ``python -m medrun.datasets.nnunet_raw
import-pairs IMAGES MASKS OUT``) writes them in this layout, mapping a 0/255 mask to 0/1.

Sets (the folder name is the user's choice; ``DatasetXXX_`` is checked, the id is not):

- ``sekh-mito`` (A): 512 fluorescence images of mitochondria in rat heart cells, OMX microscope (Sekh et al.,
  Nat. Mach. Intell. 2021). Suggested folder: ``Dataset501_SekhMito``.
- ``luo-er`` (B): 175 images of endoplasmic reticulum, Nikon Eclipse Ti-E (Luo et al. 2020): ``Dataset502_LuoER``.
- ``luo-mito`` (C): 253 images of mitochondria, Nikon Eclipse Ti-E (Luo et al. 2020): ``Dataset503_LuoMito``.

The fixture (``fixture``) writes ``Dataset001_Fixture``: 24 train + 8 test 64x64 PNGs of synthetic organelles
(dots, rods, branched networks drawn as thick polylines), blurred with a Gaussian PSF, with Poisson + Gaussian
noise; the labels are the drawn masks. Each object's class is fixed by construction (area < 100 px dot,
100-500 rod, > 500 network, the card's morphology bins) and objects never touch (8-connectivity), so the
fixture's dot/rod/network counts are known exactly; they are written to ``fixture_truth.json`` beside
``dataset.json`` (a file real sets do not have, ignored by the reader).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

from medrun.errors import DataError

from . import DatasetInfo

_SOURCES = {
    "sekh-mito": ("Mitochondria in rat heart cells, OMX fluorescence (Sekh et al. 2021), nnU-Net raw layout",
                  "the authors' data repository (Sekh et al., Nat. Mach. Intell. 2021); convert the image/mask pairs "
                  "with `python -m medrun.datasets.nnunet_raw import-pairs` and point at Dataset501_SekhMito"),
    "luo-er": ("Endoplasmic reticulum, Nikon Eclipse Ti-E (Luo et al. 2020), nnU-Net raw layout",
               "the authors' data repository (Luo et al. 2020, ER set); convert with `python -m "
               "medrun.datasets.nnunet_raw import-pairs` and point at Dataset502_LuoER"),
    "luo-mito": ("Mitochondria, Nikon Eclipse Ti-E (Luo et al. 2020), nnU-Net raw layout",
                 "the authors' data repository (Luo et al. 2020, mitochondria set); convert with `python -m "
                 "medrun.datasets.nnunet_raw import-pairs` and point at Dataset503_LuoMito"),
}
_LAYOUT = "DatasetXXX_Name/{dataset.json,imagesTr/<case>_0000.png|tif,labelsTr/<case>.png|tif[,imagesTs,labelsTs]}"

DATASETS = [DatasetInfo(name, title, _LAYOUT, source, f"medrun.datasets.nnunet_raw:fixture_{name.replace('-', '_')}",
                        ("segmentation", "microscopy"))
            for name, (title, source) in _SOURCES.items()]

SUFFIXES = (".png", ".tif", ".tiff")
MORPH_BINS = {"dot": (0, 100), "rod": (100, 500), "network": (500, None)}  # area in px: [lo, hi)
_HINT = "point at the DatasetXXX_Name folder (it holds dataset.json, imagesTr/ and labelsTr/), or try --fixture"


@dataclass(frozen=True)
class Case:
    id: str
    image: Path
    label: Path | None
    split: str  # "Tr" or "Ts"


def read_dataset_json(root: Path) -> dict:
    path = Path(root) / "dataset.json"
    if not path.is_file():
        raise DataError(f"{path} not found", fix=_HINT)
    try:
        meta = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise DataError(f"{path} is not valid JSON: {e}", fix="repair the file (nnU-Net v2 dataset.json)") from None
    labels = meta.get("labels")
    if not isinstance(labels, dict) or not labels or not all(isinstance(v, int) for v in labels.values()):
        raise DataError(f"{path} has no 'labels' mapping of names to integers",
                        fix='add "labels": {"background": 0, "organelle": 1}')
    channels = meta.get("channel_names", {"0": "?"})
    if len(channels) != 1:
        raise DataError(f"{path} lists {len(channels)} channels; these sets have one",
                        fix='"channel_names": {"0": "fluorescence"}')
    return meta


def check_layout(root: Path) -> None:
    """Cheap: the folder, dataset.json, imagesTr/ and labelsTr/ exist (no image is opened)."""
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"nnU-Net raw dataset not found at {root}", fix=_HINT)
    missing = [p for p in ("dataset.json", "imagesTr", "labelsTr") if not (root / p).exists()]
    if missing:
        inner = sorted(p for p in root.glob("Dataset*_*") if (p / "dataset.json").is_file())
        raise DataError(f"{root} does not have the nnU-Net raw layout: missing {', '.join(missing)}",
                        fix=f"use {inner[0]} instead" if inner else _HINT)
    read_dataset_json(root)


def _case_files(folder: Path, ending: str | None) -> list[Path]:
    if not folder.is_dir():
        return []
    files = [p for p in folder.iterdir() if not p.name.startswith(".") and p.suffix.lower() in SUFFIXES]
    if ending:
        files = [p for p in files if p.name.endswith(ending)]
    return sorted(files)


def read(root: Path) -> tuple[list[Case], dict]:
    """Every case of imagesTr (with its label) and imagesTs (label if labelsTs has it) plus dataset.json.

    A training image without a label file, an image of another channel (``_0001``) or a label without an
    image is an error naming the file."""
    root = Path(root)
    check_layout(root)
    meta = read_dataset_json(root)
    ending = meta.get("file_ending")
    cases = []
    for split in ("Tr", "Ts"):
        labels_dir = root / f"labels{split}"
        seen = set()
        for img in _case_files(root / f"images{split}", ending):
            m = re.fullmatch(r"(.+)_(\d{4})", img.stem)
            if not m:
                raise DataError(f"{img}: image names must end in _0000 (nnU-Net's channel suffix)",
                                fix=f"rename it to {img.stem}_0000{img.suffix}")
            if m.group(2) != "0000":
                raise DataError(f"{img}: channel {m.group(2)} but dataset.json lists one channel",
                                fix="remove extra channels or fix channel_names")
            cid = m.group(1)
            seen.add(cid)
            label = labels_dir / f"{cid}{img.suffix}"
            if not label.is_file():
                found = [p for p in _case_files(labels_dir, None) if p.stem == cid]
                label = found[0] if found else None
            if label is None and split == "Tr":
                raise DataError(f"label missing for {img}: expected {labels_dir / (cid + img.suffix)}",
                                fix="restore the label file or remove the image")
            cases.append(Case(cid, img, label, split))
        for lab in _case_files(labels_dir, ending):
            if lab.stem not in seen:
                raise DataError(f"{lab} has no image {root / f'images{split}' / (lab.stem + '_0000' + lab.suffix)}",
                                fix="restore the image or remove the label")
    if not any(c.split == "Tr" for c in cases):
        raise DataError(f"no training images in {root / 'imagesTr'}", fix=_HINT)
    return cases, meta


def _read_array(path: Path):
    """One plane as stored (``datasets.imageio``: 8/16-bit or float PNG/TIFF, a 2-D NIfTI), nnU-Net's own
    normalisation comes later; an RGB(A) save of a grey image is averaged to one channel."""
    import numpy as np

    from .imageio import read

    arr = np.squeeze(read(path).array)
    if arr.ndim == 3 and arr.shape[-1] in (3, 4):  # an RGB(A) save of a grey image
        arr = arr[..., :3].mean(-1)
    if arr.ndim != 2:
        raise DataError(
            f"{path} has shape {arr.shape}; expected a 2D single-channel image", fix="save one 2D plane per file"
        )
    return arr


def load(case: Case, labels: dict | None = None):
    """(image float32 H×W, label uint8 H×W or None). The label must have the image's shape and only the values
    of dataset.json's ``labels``; either failure names the file."""
    import numpy as np

    image = _read_array(case.image).astype(np.float32)
    if case.label is None:
        return image, None
    label = _read_array(case.label)
    if label.shape != image.shape:
        raise DataError(f"label {case.label} is {label.shape[1]}×{label.shape[0]} but its image {case.image.name} is "
                        f"{image.shape[1]}×{image.shape[0]}", fix="labels must have their image's size")
    allowed = sorted((labels or {"background": 0, "organelle": 1}).values())
    values = np.unique(label)
    bad = [v for v in values.tolist() if v not in allowed]
    if bad:
        shown = ", ".join(str(int(v)) for v in bad[:5]) + (" …" if len(bad) > 5 else "")
        fix = ("a 0/255 mask: convert it with `python -m medrun.datasets.nnunet_raw import-pairs`, which maps 255 to 1"
               if bad == [255] else f"labels may only hold dataset.json's label values {allowed}")
        raise DataError(f"label {case.label} has values {shown} outside dataset.json's labels {allowed}", fix=fix)
    return image, label.astype(np.uint8)


# -- importer ------------------------------------------------------------------------------------------------
def import_pairs(
    images: Path,
    masks: Path,
    out: Path,
    name: str = "Dataset501_Organelle",
    channel: str = "fluorescence",
    test_images: Path | None = None,
    test_masks: Path | None = None,
) -> Path:
    """Write plain ``images/`` + ``masks/`` pairs (same file stem) as ``out/<name>/`` in the nnU-Net raw layout.

    Images are written as 16-bit-safe TIFF when their source is TIFF, else PNG; masks become 0/1 (any non-zero
    value is the organelle)."""
    import numpy as np

    if not re.fullmatch(r"Dataset\d{3}_\w+", name):
        raise DataError(f"dataset name {name!r} is not DatasetXXX_Name", fix="e.g. Dataset501_SekhMito")
    root = Path(out) / name
    n = 0
    ending = None
    for src_img, src_mask, split in ((images, masks, "Tr"), (test_images, test_masks, "Ts")):
        if src_img is None:
            continue
        src_img, src_mask = Path(src_img), Path(src_mask)
        for d in (src_img, src_mask):
            if not d.is_dir():
                raise DataError(f"folder not found: {d}", fix="pass the folders of images and masks")
        pairs = []
        for img in _case_files(src_img, None):
            mask = [p for p in _case_files(src_mask, None) if p.stem == img.stem]
            if not mask:
                raise DataError(f"mask missing for {img} in {src_mask}", fix="give every image a mask of the same name")
            pairs.append((img, mask[0]))
        if not pairs:
            raise DataError(f"no images in {src_img}", fix="PNG or TIFF images expected")
        ending = ending or (".tif" if pairs[0][0].suffix.lower() in (".tif", ".tiff") else ".png")
        (root / f"images{split}").mkdir(parents=True, exist_ok=True)
        (root / f"labels{split}").mkdir(parents=True, exist_ok=True)
        for img, mask in pairs:
            arr, lab = _read_array(img), _read_array(mask)
            if arr.shape != lab.shape:
                raise DataError(f"mask {mask} is {lab.shape[1]}×{lab.shape[0]} but its image is "
                                f"{arr.shape[1]}×{arr.shape[0]}", fix="masks must have their image's size")
            _write(root / f"images{split}" / f"{img.stem}_0000{ending}", arr)
            _write(root / f"labels{split}" / f"{img.stem}{ending}", (lab > 0).astype(np.uint8))
            n += split == "Tr"
    _write_dataset_json(root, n, ending or ".png", channel)
    return root


def _write(path: Path, arr) -> None:
    import numpy as np

    if path.suffix == ".tif":
        import tifffile

        tifffile.imwrite(path, arr)
    else:
        from PIL import Image

        if arr.dtype != np.uint8 and arr.dtype != np.uint16:
            arr = np.clip(arr, 0, 65535).astype(np.uint16)
        Image.fromarray(arr).save(path)


def _write_dataset_json(root: Path, n_train: int, ending: str, channel: str = "fluorescence") -> None:
    root.mkdir(parents=True, exist_ok=True)
    (root / "dataset.json").write_text(json.dumps({
        "channel_names": {"0": channel}, "labels": {"background": 0, "organelle": 1},
        "numTraining": n_train, "file_ending": ending}, indent=2) + "\n")


# -- morphology ----------------------------------------------------------------------------------------------
def morph_class(area: int) -> str:
    for name, (lo, hi) in MORPH_BINS.items():
        if area >= lo and (hi is None or area < hi):
            return name
    raise AssertionError(area)


# -- fixture -------------------------------------------------------------------------------------------------
def _draw_object(rng, kind: str, size: int):
    """A bool mask (size×size) of one organelle of the given class, drawn as a disk (dot) or a thick polyline
    (rod: one segment, network: a branched tree of segments). Redrawn until its area falls in its class's bin
    and its single 8-connected component holds all of it."""
    import numpy as np
    from skimage.draw import disk, line
    from skimage.measure import label
    from skimage.morphology import dilation
    from skimage.morphology import disk as disk_fp

    lo, hi = MORPH_BINS[kind]
    for _ in range(200):
        m = np.zeros((size, size), bool)
        c = rng.uniform(8, size - 8, 2)
        if kind == "dot":
            rr, cc = disk(tuple(c), rng.uniform(1.8, 4.5), shape=m.shape)
            m[rr, cc] = True
        else:
            segs = [(c, rng.uniform(0, np.pi))]
            pts = []
            n = 1 if kind == "rod" else int(rng.integers(5, 9))
            length = rng.uniform(10, 22) if kind == "rod" else None
            start, ang = segs[0]
            for _k in range(n):
                seg_len = length if kind == "rod" else rng.uniform(14, 26)
                end = start + seg_len * np.array([np.sin(ang), np.cos(ang)])
                pts.append((start, end))
                # branch from a random point drawn so far, at a new angle
                start = pts[int(rng.integers(len(pts)))][int(rng.integers(2))]
                ang = rng.uniform(0, 2 * np.pi)
            for a, b in pts:
                a = np.clip(a, 0, size - 1).round().astype(int)
                b = np.clip(b, 0, size - 1).round().astype(int)
                rr, cc = line(a[0], a[1], b[0], b[1])
                m[rr, cc] = True
            m = dilation(m, disk_fp(int(rng.integers(2, 4)) if kind == "rod" else 2))
        area = int(m.sum())
        if area >= lo and (hi is None or area < hi) and label(m, connectivity=2).max() == 1:
            return m
    raise RuntimeError(f"could not draw a {kind}")


def synthetic_image(rng, size: int = 64, mix: dict | None = None):
    """(image uint8, label uint8 0/1, counts {dot, rod, network}) for one fixture image."""
    import numpy as np
    from scipy.ndimage import binary_dilation, gaussian_filter

    mix = mix or {"network": (0, 2), "rod": (1, 4), "dot": (2, 6)}
    label = np.zeros((size, size), bool)
    keep_out = np.zeros((size, size), bool)  # objects plus a 1-px ring: nothing else may touch them
    counts = {"dot": 0, "rod": 0, "network": 0}
    for kind in ("network", "rod", "dot"):
        lo, hi = mix[kind]
        for _ in range(int(rng.integers(lo, hi + 1))):
            for _try in range(30):
                obj = _draw_object(rng, kind, size)
                if not (obj & keep_out).any():
                    label |= obj
                    keep_out |= binary_dilation(obj, np.ones((3, 3), bool))
                    counts[kind] += 1
                    break
    signal = gaussian_filter(label.astype(np.float32), 1.0)  # PSF
    photons = rng.poisson(5 + 40 * signal).astype(np.float32)  # low-SNR shot noise on a dim background
    img = photons + rng.normal(0, 3, label.shape)
    img = np.clip(img * 4, 0, 255).astype(np.uint8)
    return img, label.astype(np.uint8), counts


def fixture(out: Path, seed: int = 0, name: str = "Dataset001_Fixture", n_train: int = 24, n_test: int = 8,
            size: int = 64, mix: dict | None = None) -> Path:
    """A miniature nnU-Net raw dataset (PNG, labels 0/1) plus ``fixture_truth.json`` with the drawn counts."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(seed)
    root = Path(out) / name
    truth: dict = {"bins_px": {k: list(v) for k, v in MORPH_BINS.items()}, "cases": {}}
    for split, n in (("Tr", n_train), ("Ts", n_test)):
        (root / f"images{split}").mkdir(parents=True, exist_ok=True)
        (root / f"labels{split}").mkdir(parents=True, exist_ok=True)
        for i in range(n):
            cid = f"fixture_{split.lower()}_{i:03d}"
            img, lab, counts = synthetic_image(rng, size, mix)
            Image.fromarray(img).save(root / f"images{split}" / f"{cid}_0000.png")
            Image.fromarray(lab).save(root / f"labels{split}" / f"{cid}.png")
            truth["cases"][cid] = counts
    for split in ("Tr", "Ts"):
        truth[f"total{split}"] = {k: sum(truth["cases"][c][k] for c in truth["cases"] if f"_{split.lower()}_" in c)
                                  for k in MORPH_BINS}
    _write_dataset_json(root, n_train, ".png")
    (root / "fixture_truth.json").write_text(json.dumps(truth, indent=1) + "\n")
    return root


_ER_MIX = {"network": (1, 2), "rod": (1, 3), "dot": (1, 4)}  # the ER is mostly tubular network


def fixture_sekh_mito(out: Path, seed: int = 0) -> Path:
    return fixture(out, seed)


def fixture_luo_er(out: Path, seed: int = 0) -> Path:
    return fixture(out, seed + 1, mix=_ER_MIX)


def fixture_luo_mito(out: Path, seed: int = 0) -> Path:
    return fixture(out, seed + 2)


def _main(argv: list[str] | None = None) -> int:
    import argparse

    p = argparse.ArgumentParser(prog="python -m medrun.datasets.nnunet_raw",
                                description="Write image/mask pairs in the nnU-Net v2 raw layout.")
    sub = p.add_subparsers(dest="cmd", required=True)
    ip = sub.add_parser("import-pairs", help="images/ + masks/ (same stems) → OUT/DatasetXXX_Name/")
    ip.add_argument("images", type=Path)
    ip.add_argument("masks", type=Path)
    ip.add_argument("out", type=Path)
    ip.add_argument("--name", default="Dataset501_Organelle")
    ip.add_argument("--test-images", type=Path)
    ip.add_argument("--test-masks", type=Path)
    a = p.parse_args(argv)
    try:
        root = import_pairs(a.images, a.masks, a.out, a.name, test_images=a.test_images, test_masks=a.test_masks)
    except DataError as e:
        import sys

        print(f"error: {e}", file=sys.stderr)
        return 3
    print(root)
    return 0


if __name__ == "__main__":
    raise SystemExit(_main())
