"""MICCAI EndoVis 2017 (Robotic Instrument Segmentation) and EndoVis 2018 (Robotic Scene Segmentation).

EndoVis17 layout (registration download; train and test archives unpacked side by side)::

    <root>/train/instrument_dataset_1/left_frames/frame000.png            1920×1080 RGB (active area 1280×1024)
    <root>/train/instrument_dataset_1/ground_truth/Left_Prograsp_Forceps_labels/frame000.png   one grey mask per tool
    ...                                             (instrument_dataset_1 … 8, 225 frames each)
    <root>/test/instrument_dataset_1/…                                    (1 … 10: 8×75 + 2×300 frames)

Tool folders map to the six Table-1 classes by substring (lorasam card): Prograsp_Forceps → prograsp forceps,
Bipolar_Forceps → bipolar forceps, Large_Needle_Driver → large needle driver, Grasping_Retractor → grasping
retractor, Vessel_Sealer → vessel sealer, Monopolar_Curved_Scissors → monopolar curved scissors; ``Other_labels``
is ignored; any other ``*_labels`` folder is an error. Left and right copies of one tool are OR-ed. Any non-zero
mask value is foreground (part-label masks use several grey levels).

EndoVis18 layout::

    <root>/train/seq_1/left_frames/frame000.png     1280×1024 RGB
    <root>/train/seq_1/labels/frame000.png          RGB colour codes
    <root>/train/seq_1/labels.json                  [{"name", "color": [r, g, b], "classid"}, …]
    <root>/test/seq_1/…

``labels.json`` is read from the sequence folder, else from its parent (``train/``/``test/``), else the root.
instrument-shaft, -clasper and -wrist merge into "robotic instrument", giving the ten Table-2 classes. A pixel
colour not listed in ``labels.json`` is an error naming the file.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from medrun.errors import DataError

from . import DatasetInfo
from .surgical import Frame, check_mask_size, open_image

DATASETS = [
    DatasetInfo("endovis17", "MICCAI EndoVis 2017 robotic instrument segmentation (6 instrument types)",
                "{train,test}/instrument_dataset_N/{left_frames,ground_truth/<Tool>_labels}/frameNNN.png",
                "endovissub2017-roboticinstrumentsegmentation.grand-challenge.org (registration); "
                "point at the folder holding train/ and test/", "medrun.datasets.endovis:fixture17",
                ("segmentation", "endoscopy", "video")),
    DatasetInfo("endovis18", "MICCAI EndoVis 2018 robotic scene segmentation (10 classes)",
                "{train,test}/seq_N/{left_frames,labels}/frameNNN.png + labels.json",
                "endovissub2018-roboticscenesegmentation.grand-challenge.org (registration); "
                "point at the folder holding train/ and test/", "medrun.datasets.endovis:fixture18",
                ("segmentation", "endoscopy", "video")),
]

# -- EndoVis17 ---------------------------------------------------------------------------------------------------
TOOLS17 = {"Prograsp_Forceps": "prograsp forceps", "Bipolar_Forceps": "bipolar forceps",
           "Large_Needle_Driver": "large needle driver", "Grasping_Retractor": "grasping retractor",
           "Vessel_Sealer": "vessel sealer", "Monopolar_Curved_Scissors": "monopolar curved scissors"}
CLASSES17 = list(TOOLS17.values())
_HINT17 = "point at the EndoVis17 folder that holds train/instrument_dataset_N (and test/), or try --fixture"


def _split_dirs(root: Path, what: str, pattern: str, hint: str) -> dict[str, list[Path]]:
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"{what} not found at {root}", fix=hint)
    out = {}
    for part in ("train", "test"):
        d = root / part
        if d.is_dir():
            out[part] = sorted((p for p in d.iterdir() if p.is_dir() and re.fullmatch(pattern, p.name)),
                               key=lambda p: int(re.findall(r"\d+", p.name)[-1]))
    if not out.get("train") and not out.get("test"):
        direct = [p for p in root.iterdir() if p.is_dir() and re.fullmatch(pattern, p.name)]
        fix = f"put the sequences under {root / 'train'} (and the test ones under {root / 'test'})" if direct else hint
        raise DataError(
            f"{root} does not have the {what} layout: no train/ or test/ folder with {pattern} inside", fix=fix
        )
    return out


def check_layout17(root: Path) -> dict[str, list[Path]]:
    return _split_dirs(root, "EndoVis17", r"instrument_dataset_\d+", _HINT17)


def read17(root: Path, part: str, videos: list[int] | None = None) -> list[Frame]:
    """Frames of ``part`` (train/test), optionally only the numbered ``instrument_dataset_N`` sequences."""
    dirs = check_layout17(root).get(part, [])
    frames = []
    for seq in dirs:
        n = int(seq.name.rsplit("_", 1)[1])
        if videos is not None and n not in videos:
            continue
        gt = seq / "ground_truth"
        if not (seq / "left_frames").is_dir() or not gt.is_dir():
            raise DataError(
                f"{seq} lacks left_frames/ or ground_truth/", fix="re-extract the sequence from its archive"
            )
        tools = []
        for d in sorted(p for p in gt.iterdir() if p.is_dir()):
            name = next((c for key, c in TOOLS17.items() if key in d.name), None)
            if name is None:
                if d.name.startswith("Other"):
                    continue
                raise DataError(
                    f"unknown tool folder {d}", fix=f"tool folders must contain one of {', '.join(TOOLS17)}"
                )
            tools.append((name, d))
        for img in sorted((seq / "left_frames").glob("frame*.png")):
            parts = []
            for name, d in tools:
                m = d / img.name
                if not m.is_file():
                    raise DataError(f"mask file missing for {img}: {m}", fix="re-extract the sequence's ground truth")
                parts.append((name, m))
            frames.append(Frame(f"{part}/{seq.name}/{img.stem}", f"{part}/{seq.name}", img, None, tuple(parts)))
    if videos is not None:
        found = {int(f.video.rsplit("_", 1)[1]) for f in frames}
        missing = [v for v in videos if v not in found]
        if missing:
            raise DataError(f"{Path(root) / part}: no frames for instrument_dataset_{missing[0]} named in the split",
                            fix="fix dataset.split in the manifest (sequence numbers)")
    return frames


def load17(frame: Frame, classes: list[str]):
    import numpy as np

    image = open_image(frame.image, "RGB", scale=True)
    masks = np.zeros((len(classes), image.height, image.width), bool)
    index = {c: i for i, c in enumerate(classes)}
    for name, path in frame.parts:
        if name not in index:
            continue
        m = open_image(path, "L")
        check_mask_size(path, m.size, frame.image, image.size)
        masks[index[name]] |= np.asarray(m) > 0
    return np.asarray(image, dtype=np.uint8), masks


# -- EndoVis18 ---------------------------------------------------------------------------------------------------
NAMES18 = {"background-tissue": "background tissue", "instrument-shaft": "robotic instrument",
           "instrument-clasper": "robotic instrument", "instrument-wrist": "robotic instrument",
           "kidney-parenchyma": "kidney parenchyma", "covered-kidney": "covered kidney", "thread": "thread",
           "clamps": "clamps", "suturing-needle": "suturing needle", "suction-instrument": "suction instrument",
           "small-intestine": "small intestine", "intestine": "small intestine", "ultrasound-probe": "ultrasound probe"}
CLASSES18 = ["background tissue", "robotic instrument", "kidney parenchyma", "covered kidney", "small intestine",
             "thread", "suturing needle", "clamps", "suction instrument", "ultrasound probe"]
_HINT18 = "point at the EndoVis18 folder that holds train/seq_N (and test/), or try --fixture"


def check_layout18(root: Path) -> dict[str, list[Path]]:
    return _split_dirs(root, "EndoVis18", r"seq_\d+", _HINT18)


def labels_json(seq: Path, root: Path) -> Path:
    for p in (seq / "labels.json", seq.parent / "labels.json", Path(root) / "labels.json"):
        if p.is_file():
            return p
    raise DataError(f"labels.json not found for {seq}", fix="copy the release's labels.json into the sequence folder")


def colour_map(path: Path) -> dict[tuple[int, int, int], str]:
    """labels.json → {(r, g, b): merged class name}."""
    try:
        entries = json.loads(Path(path).read_text())
        out = {}
        for e in entries:
            key = e["name"].strip().lower().replace(" ", "-")
            if key not in NAMES18:
                raise DataError(f"{path}: unknown class '{e['name']}'", fix=f"known names: {', '.join(NAMES18)}")
            out[tuple(int(c) for c in e["color"])] = NAMES18[key]
        return out
    except (ValueError, KeyError, TypeError) as e:
        raise DataError(f"cannot read {path}: {e.__class__.__name__}: {e}",
                        fix="labels.json must be a list of {name, color: [r, g, b], classid}") from None


def read18(root: Path, part: str, videos: list[int] | None = None) -> list[Frame]:
    dirs = check_layout18(root).get(part, [])
    frames = []
    for seq in dirs:
        n = int(seq.name.rsplit("_", 1)[1])
        if videos is not None and n not in videos:
            continue
        lj = labels_json(seq, root)
        colour_map(lj)  # fail early on a bad file
        for img in sorted((seq / "left_frames").glob("frame*.png")):
            lab = seq / "labels" / img.name
            if not lab.is_file():
                raise DataError(f"label file missing for {img}: {lab}", fix="re-extract the sequence's labels")
            frames.append(
                Frame(f"{part}/{seq.name}/{img.stem}", f"{part}/{seq.name}", img, lab, (("labels.json", lj),))
            )
    if videos is not None:
        found = {int(f.video.rsplit("_", 1)[1]) for f in frames}
        missing = [v for v in videos if v not in found]
        if missing:
            raise DataError(f"{Path(root) / part}: no frames for seq_{missing[0]} named in the split",
                            fix="fix dataset.split in the manifest (sequence numbers)")
    return frames


def load18(frame: Frame, classes: list[str]):
    import numpy as np

    image = open_image(frame.image, "RGB", scale=True)
    lab = open_image(frame.label, "RGB")
    check_mask_size(frame.label, lab.size, frame.image, image.size)
    cmap = colour_map(frame.parts[0][1])
    arr = np.asarray(lab).astype(np.int32)
    code = (arr[..., 0] << 16) | (arr[..., 1] << 8) | arr[..., 2]
    known = {(r << 16) | (g << 8) | b: name for (r, g, b), name in cmap.items()}
    unknown = sorted(set(np.unique(code).tolist()) - set(known))
    if unknown:
        c = unknown[0]
        raise DataError(f"{frame.label} has colour {(c >> 16, (c >> 8) & 255, c & 255)} not in {frame.parts[0][1]}",
                        fix="the label file is damaged or belongs to another release; re-extract it")
    masks = np.zeros((len(classes), *code.shape), bool)
    for i, c in enumerate(classes):
        for value, name in known.items():
            if name == c:
                masks[i] |= code == value
    return np.asarray(image, dtype=np.uint8), masks


# -- fixtures ----------------------------------------------------------------------------------------------------
_SHAPE_COLOURS = [(200, 200, 210), (90, 90, 220), (230, 200, 60), (60, 200, 200), (220, 90, 220), (240, 240, 240),
                  (150, 80, 40), (255, 140, 0), (30, 160, 60), (120, 120, 60)]


def _scene(rng, w: int, h: int, k: int, n_kinds: int):
    """Noisy tissue plus ``k`` distinct shapes (bars, ellipses); returns RGB and a map of shape kind (−1 none)."""
    import numpy as np

    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    img = np.empty((h, w, 3), np.float32)
    img[:] = (140, 50, 50)
    img += rng.normal(0, 15, (h, w, 3))
    kinds = np.full((h, w), -1, np.int16)
    for kind in rng.choice(n_kinds, size=k, replace=False):
        cy, cx = rng.uniform(0.25, 0.75) * h, rng.uniform(0.25, 0.75) * w
        if kind % 2 == 0:
            theta = rng.uniform(0, np.pi)
            along = (xx - cx) * np.cos(theta) + (yy - cy) * np.sin(theta)
            across = -(xx - cx) * np.sin(theta) + (yy - cy) * np.cos(theta)
            m = (np.abs(along) <= w * 0.3) & (np.abs(across) <= h * (0.05 + 0.02 * (kind % 3)))
        else:
            m = ((yy - cy) / (h * 0.15)) ** 2 + ((xx - cx) / (w * (0.1 + 0.03 * (kind % 3)))) ** 2 <= 1
        img[m] = np.array(_SHAPE_COLOURS[kind % len(_SHAPE_COLOURS)]) + rng.normal(0, 6, (m.sum(), 3))
        kinds[m] = kind
    return np.clip(img, 0, 255).astype(np.uint8), kinds


_FOLDERS17 = ["Left_Prograsp_Forceps_labels", "Maryland_Bipolar_Forceps_labels", "Right_Large_Needle_Driver_labels",
              "Grasping_Retractor_labels", "Vessel_Sealer_labels", "Monopolar_Curved_Scissors_labels"]


def fixture17(out: Path, seed: int = 0, frames: int = 4, w: int = 96, h: int = 64) -> Path:
    """train/instrument_dataset_1..6 and test/instrument_dataset_1..2, ``frames`` frames each, 2–4 of the 6 tools
    a frame (each tool in about half the frames, so a short run sees every tool often enough to learn it: with
    3 training sequences of 1–2 tools a frame it did not), plus an ``Other_labels`` folder (ignored by the
    reader)."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(seed)
    root = Path(out) / "endovis17"
    for part, n_seq in (("train", 6), ("test", 2)):
        for s in range(1, n_seq + 1):
            seq = root / part / f"instrument_dataset_{s}"
            (seq / "left_frames").mkdir(parents=True)
            for folder in [*_FOLDERS17, "Other_labels"]:
                (seq / "ground_truth" / folder).mkdir(parents=True)
            for i in range(frames):
                img, kinds = _scene(rng, w, h, int(rng.integers(2, 5)), 6)
                name = f"frame{i:03d}.png"
                Image.fromarray(img).save(seq / "left_frames" / name)
                for k, folder in enumerate(_FOLDERS17):
                    Image.fromarray(((kinds == k) * 255).astype(np.uint8)).save(seq / "ground_truth" / folder / name)
                Image.fromarray(np.zeros((h, w), np.uint8)).save(seq / "ground_truth" / "Other_labels" / name)
    return root


_LABELS18 = [
    ("background-tissue", (0, 0, 0), 0),
    ("instrument-shaft", (0, 255, 0), 1),
    ("instrument-clasper", (0, 255, 255), 2),
    ("instrument-wrist", (125, 255, 12), 3),
    ("kidney-parenchyma", (255, 55, 0), 4),
    ("covered-kidney", (24, 55, 125), 5),
    ("thread", (187, 155, 25), 6),
    ("clamps", (0, 255, 125), 7),
    ("suturing-needle", (255, 255, 125), 8),
    ("suction-instrument", (123, 15, 175), 9),
    ("intestine", (124, 155, 5), 10),
    ("ultrasound-probe", (12, 255, 141), 11),
]


def fixture18(out: Path, seed: int = 0, frames: int = 4, w: int = 96, h: int = 64) -> Path:
    """train/seq_1..3 and test/seq_1..2 with labels.json (the release's 12 names and colours), ``frames`` each."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(seed)
    root = Path(out) / "endovis18"
    doc = [{"name": n, "color": list(c), "classid": i} for n, c, i in _LABELS18]
    for part, n_seq in (("train", 3), ("test", 2)):
        for s in range(1, n_seq + 1):
            seq = root / part / f"seq_{s}"
            (seq / "left_frames").mkdir(parents=True)
            (seq / "labels").mkdir()
            (seq / "labels.json").write_text(json.dumps(doc, indent=1))
            for i in range(frames):
                img, kinds = _scene(rng, w, h, int(rng.integers(2, 4)), len(_LABELS18) - 1)
                lab = np.zeros((h, w, 3), np.uint8)
                for k in range(len(_LABELS18) - 1):
                    lab[kinds == k] = _LABELS18[k + 1][1]
                name = f"frame{i:03d}.png"
                Image.fromarray(img).save(seq / "left_frames" / name)
                Image.fromarray(lab).save(seq / "labels" / name)
    return root
