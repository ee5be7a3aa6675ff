"""Medical Segmentation Decathlon (MSD): ten 3D segmentation tasks in NIfTI, one folder per task.

Layout (as unpacked from the ``TaskXX_Name.tar`` files of medicaldecathlon.com)::

    <root>/                                  the folder holding the task folders (or one task folder itself)
        Task01_BrainTumour/
            dataset.json                     "modality" {"0": "FLAIR", ...}, "labels" {"0": "background", ...},
                                             "numTraining", "training": [{"image", "label"}], "test": [...]
            imagesTr/BRATS_001.nii.gz        4D (X, Y, Z, C) for multimodal tasks (01, 05), else 3D
            labelsTr/BRATS_001.nii.gz        3D integer label map on the image's grid
            imagesTs/BRATS_485.nii.gz        test images (no labels are published)
            ._BRATS_001.nii.gz ...           macOS resource forks inside the tarballs: skipped
        Task02_Heart/ ...

``dataset.json`` is read with MONAI's ``load_decathlon_datalist`` (paths relative to the task folder). Nothing is
ever downloaded (no ``DecathlonDataset(download=True)``).

Checks (each a ``DataError`` naming the file and the fix): a missing task folder, ``dataset.json`` or listed
file; an image with fewer (or more) channels than ``dataset.json``'s ``modality`` declares; a label map whose
shape differs from its image's; a label map holding values that are not keys of ``labels``.

The fixture (``fixture``) writes two miniature tasks in exactly this layout (card sm-safe.md, "Tiny fixture"):
``Task90_SynthMulti`` (T2 + ADC as 4D 32³×2 float32, labels blob/cube; the sphere is bright only in channel 0 and
the cube only in channel 1, Gaussian noise σ 0.5, so a model needs both modalities) and ``Task91_SynthCT`` (one CT
channel in HU stored as int16, one organ label), 8 training and 2 test cases each.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path

from medrun.errors import DataError

from . import DatasetInfo

DATASETS = [
    DatasetInfo("msd", "Medical Segmentation Decathlon (10 tasks, 3D NIfTI, multi-modal MRI and CT)",
                "TaskXX_Name/{dataset.json,imagesTr,labelsTr,imagesTs}/*.nii.gz",
                "medicaldecathlon.com (Task01_BrainTumour.tar … Task10_Colon.tar, CC-BY-SA 4.0); point at the folder "
                "holding the unpacked TaskXX_* folders",
                "medrun.datasets.msd:fixture", ("segmentation", "3d", "mri", "ct")),
]

_HINT = "point dataset.root (--data-dir) at the folder holding the unpacked TaskXX_* folders, or try --fixture"
_TASK_RE = re.compile(r"^Task(\d\d)_(\w+)$")


@dataclass(frozen=True)
class Case:
    id: str  # file name without .nii.gz, e.g. BRATS_001
    image: Path
    label: Path | None  # None for imagesTs


@dataclass(frozen=True)
class Task:
    name: str  # folder name, e.g. Task01_BrainTumour
    root: Path
    modalities: dict[int, str]
    labels: dict[int, str]
    training: list[Case] = field(default_factory=list)
    test: list[Case] = field(default_factory=list)

    @property
    def num_classes(self) -> int:
        return max(self.labels) + 1

    @property
    def is_ct(self) -> bool:
        return any(m.strip().upper() == "CT" for m in self.modalities.values())

    @property
    def dataset_json(self) -> Path:
        return self.root / "dataset.json"


def _stem(p: Path) -> str:
    name = Path(p).name
    for ext in (".nii.gz", ".nii"):
        if name.endswith(ext):
            return name[: -len(ext)]
    return name


def task_dirs(root: Path) -> list[Path]:
    """The ``TaskXX_*`` folders with a dataset.json under ``root`` (or ``[root]`` if root is a task folder)."""
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"MSD folder not found: {root}", fix=_HINT)
    if (root / "dataset.json").is_file():
        return [root]
    return sorted(p for p in root.iterdir() if p.is_dir() and _TASK_RE.match(p.name) and (p / "dataset.json").is_file())


def resolve_tasks(root: Path, tasks) -> list[Path]:
    """Task folders for ``tasks``: "all", or names such as ``Task01_BrainTumour``, ``Task01``, ``01``,
    ``BrainTumour``."""
    root = Path(root)
    found = task_dirs(root)
    if not found:
        raise DataError(f"{root} holds no TaskXX_*/dataset.json folder (MSD layout)", fix=_HINT)
    if tasks == "all":
        return found
    out = []
    for want in tasks:
        w = str(want).lower()
        hits = [p for p in found if w in (p.name.lower(), p.name.lower().split("_")[0], p.name.lower()[4:6],
                                          "_".join(p.name.lower().split("_")[1:]))]
        if len(hits) != 1:
            raise DataError(f"task '{want}' not found in {root} (found: {', '.join(p.name for p in found)})",
                            fix="set dataset.tasks to task folder names, or 'all'")
        out.append(hits[0])
    return out


def read_task(task_dir: Path) -> Task:
    """dataset.json of one task → ``Task`` (training cases with labels, test images), every listed file checked."""
    from monai.data import load_decathlon_datalist

    task_dir = Path(task_dir)
    js = task_dir / "dataset.json"
    if not js.is_file():
        raise DataError(f"{js} not found", fix=_HINT)
    try:
        meta = json.loads(js.read_text())
        modalities = {int(k): str(v) for k, v in meta["modality"].items()}
        labels = {int(k): str(v) for k, v in meta["labels"].items()}
        training = load_decathlon_datalist(js, True, "training", task_dir)
        test = load_decathlon_datalist(js, False, "test", task_dir) if meta.get("test") else []
    except (json.JSONDecodeError, KeyError, ValueError, TypeError, AttributeError) as e:
        raise DataError(f"{js} is not an MSD dataset.json ({e.__class__.__name__}: {e})",
                        fix="restore dataset.json from the task's tarball") from None
    if sorted(modalities) != list(range(len(modalities))) or 0 not in labels:
        raise DataError(f"{js}: 'modality' must be keyed 0..M-1 and 'labels' must include 0 (background)",
                        fix="restore dataset.json from the task's tarball")

    def case(item: dict, with_label: bool) -> Case | None:
        image = Path(item["image"])
        if image.name.startswith("._"):  # macOS resource forks
            return None
        label = Path(item["label"]) if with_label else None
        for p in (image, label):
            if p is not None and not p.is_file():
                raise DataError(f"{p} is listed in {js} but missing", fix="re-extract the task's tarball")
        return Case(_stem(image), image, label)

    tr = [c for c in (case(i, True) for i in training) if c is not None]
    ts = [c for c in (case(i, False) for i in test) if c is not None]
    return Task(task_dir.name, task_dir, modalities, labels, tr, ts)


def check_headers(task: Task, case: Case) -> tuple[int, ...]:
    """Cheap header checks (no voxel data read): channel count against dataset.json, label grid against the
    image's. Returns the image's spatial shape."""
    import nibabel as nib

    def header(p: Path):
        try:
            return nib.load(str(p))
        except Exception as e:  # noqa: BLE001 - any reader failure is a data problem
            raise DataError(f"cannot read NIfTI {p}: {e.__class__.__name__}: {str(e)[:160]}",
                            fix="re-extract the file from the task's tarball") from None

    img = header(case.image)
    shape = tuple(int(s) for s in img.shape)
    if len(shape) not in (3, 4):
        raise DataError(f"{case.image} has shape {shape}; MSD images are 3D or 4D (X, Y, Z, C)",
                        fix="re-extract the file from the task's tarball")
    channels = shape[3] if len(shape) == 4 else 1
    m = len(task.modalities)
    if channels != m:
        declared = ", ".join(task.modalities[i] for i in sorted(task.modalities))
        raise DataError(f"{case.image} has {channels} modality channel(s) (shape {shape}) but {task.dataset_json} "
                        f"declares {m} ({declared})",
                        fix=f"use a {m}-channel 4D NIfTI (X, Y, Z, {m}) or correct 'modality' in dataset.json")
    if case.label is not None:
        lab_shape = tuple(int(s) for s in header(case.label).shape)
        if lab_shape != shape[:3]:
            raise DataError(f"{case.label} has shape {lab_shape} but its image {case.image.name} has {shape[:3]}",
                            fix="a label map must lie on its image's voxel grid; re-extract or fix the label file")
    return shape[:3]


def check_label_values(task: Task, label_path: Path, values) -> None:
    """Refuse label maps with values outside dataset.json's ``labels`` keys."""
    bad = sorted(set(int(v) for v in values) - set(task.labels))
    if bad:
        raise DataError(f"{label_path} has label value(s) {bad[:5]} not in {task.dataset_json} labels "
                        f"{sorted(task.labels)}", fix="labels must be integers listed in dataset.json's 'labels'")


# -- fixture -------------------------------------------------------------------------------------------------------
def _write_task(root: Path, name: str, modality: dict, labels: dict, train: list, test: list, affine) -> None:
    import nibabel as nib

    task = root / name
    for sub in ("imagesTr", "labelsTr", "imagesTs"):
        (task / sub).mkdir(parents=True, exist_ok=True)
    entries = []
    for cid, image, label in train:
        nib.save(nib.Nifti1Image(image, affine), task / "imagesTr" / f"{cid}.nii.gz")
        nib.save(nib.Nifti1Image(label, affine), task / "labelsTr" / f"{cid}.nii.gz")
        entries.append({"image": f"./imagesTr/{cid}.nii.gz", "label": f"./labelsTr/{cid}.nii.gz"})
        (task / "imagesTr" / f"._{cid}.nii.gz").write_bytes(b"\x00\x05\x16\x07 macOS resource fork")
    tests = []
    for cid, image, _ in test:
        nib.save(nib.Nifti1Image(image, affine), task / "imagesTs" / f"{cid}.nii.gz")
        tests.append(f"./imagesTs/{cid}.nii.gz")
    meta = {"name": name.split("_", 1)[1], "description": "medrun synthetic miniature (not real data)",
            "reference": "medrun fixture", "licence": "CC-BY-SA 4.0", "release": "1.0",
            "tensorImageSize": "4D" if len(modality) > 1 else "3D",
            "modality": {str(k): v for k, v in modality.items()}, "labels": {str(k): v for k, v in labels.items()},
            "numTraining": len(entries), "numTest": len(tests), "training": entries, "test": tests}
    (task / "dataset.json").write_text(json.dumps(meta, indent=4))


def synthetic_multi(rng, size: int = 32):
    """(image (S, S, S, 2) float32, label (S, S, S) uint8): a sphere (1) bright in channel 0, a cube (2) bright in
    channel 1, each in its own half of the volume, Gaussian noise σ 0.5 on both channels."""
    import numpy as np

    zz, yy, xx = np.mgrid[0:size, 0:size, 0:size].astype(np.float32)
    label = np.zeros((size,) * 3, np.uint8)
    half = size // 2
    sphere_left = rng.random() < 0.5
    r = rng.uniform(0.14, 0.2) * size
    cx = rng.uniform(r + 1, half - r - 1) + (0 if sphere_left else half)
    cy, cz = (rng.uniform(r + 1, size - r - 1) for _ in range(2))
    label[(xx - cx) ** 2 + (yy - cy) ** 2 + (zz - cz) ** 2 <= r * r] = 1
    side = int(rng.integers(int(0.25 * size), int(0.34 * size)))
    x0 = int(rng.integers(1, half - side)) + (half if sphere_left else 0)
    y0, z0 = (int(rng.integers(1, size - side - 1)) for _ in range(2))
    label[z0:z0 + side, y0:y0 + side, x0:x0 + side] = 2
    image = rng.normal(0.0, 0.5, (size, size, size, 2)).astype(np.float32)
    image[..., 0] += 2.0 * (label == 1) + 1.0
    image[..., 1] += 2.0 * (label == 2) + 1.0
    return image, label


def synthetic_ct(rng, size: int = 32):
    """(image (S, S, S) int16 in HU, label uint8): soft tissue ~40 HU (σ 20) filling the volume with an enhancing
    ellipsoidal organ (label 1, ~130 HU)."""
    import numpy as np

    zz, yy, xx = np.mgrid[0:size, 0:size, 0:size].astype(np.float32)
    c = rng.uniform(0.35, 0.65, 3) * size
    rad = rng.uniform(0.15, 0.25, 3) * size
    organ = ((zz - c[0]) / rad[0]) ** 2 + ((yy - c[1]) / rad[1]) ** 2 + ((xx - c[2]) / rad[2]) ** 2 <= 1
    hu = 40.0 + 90.0 * organ + rng.normal(0, 20, (size,) * 3)
    return np.round(hu).astype(np.int16), organ.astype(np.uint8)


def fixture(out: Path, seed: int = 0, n_train: int = 8, n_test: int = 2, size: int = 32) -> Path:
    """Two tasks in the MSD layout under ``out/MSD`` (Task90_SynthMulti, Task91_SynthCT); returns that folder."""
    import numpy as np

    rng = np.random.default_rng(seed)
    root = Path(out) / "MSD"
    affine = np.diag([-1.0, -1.0, 1.0, 1.0])  # LPS-like storage as in the MSD files; Orientationd makes it RAS
    cases = [(f"syn_{i:03d}", *synthetic_multi(rng, size)) for i in range(n_train + n_test)]
    _write_task(root, "Task90_SynthMulti", {0: "T2", 1: "ADC"}, {0: "background", 1: "blob", 2: "cube"},
                cases[:n_train], cases[n_train:], affine)
    cases = [(f"synct_{i:03d}", *synthetic_ct(rng, size)) for i in range(n_train + n_test)]
    _write_task(root, "Task91_SynthCT", {0: "CT"}, {0: "background", 1: "organ"}, cases[:n_train], cases[n_train:],
                affine)
    return root
