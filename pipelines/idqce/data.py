"""idqce's datasets: which reader each ``dataset.name`` uses, its label set, and its splits as lists of
``datasets.nih.Entry`` (name, path, labels, patient).

- ``nih``: ``datasets/nih.py``; official train_val_list / test_list.
- ``mimic``: ``datasets/mimic.py``; frontal (PA/AP) images, official split (train / validate / test).
- ``vindr``: ``datasets/vindr.py``; PhysioNet train/ and test/ with annotations/image_labels_{train,test}.csv.
- ``mured``, ``odir``, ``eyepacs``: ``datasets/fundus.py`` (MuReD train_data.csv / val_data.csv; ODIR and EyePACS
  seeded patient-disjoint splits, none being given).

Each gives ``train_val`` and ``test`` (and ``val`` where the release has one, MIMIC's validate split); without
``val`` the pipeline holds out ``dataset.val_fraction`` of train_val's patients to pick the probe's best epoch.
"""

from __future__ import annotations

from pathlib import Path

NAMES = ("nih", "mimic", "vindr", "mured", "odir", "eyepacs")


def labels(name: str) -> tuple[str, ...]:
    """The dataset's full label set (the linear probe's default ``dataset.labels``)."""
    if name == "nih":
        from medrun.datasets.nih import FINDINGS

        return FINDINGS
    if name == "mimic":
        from medrun.datasets.mimic import LABELS

        return LABELS
    if name == "vindr":
        from medrun.datasets.vindr import LABELS

        return LABELS
    from medrun.datasets.fundus import LABELS

    return LABELS[name]


def read_split(d) -> dict:
    """``{"train_val": [Entry], "test": [Entry], ["val": [Entry]]}`` of the manifest's dataset section ``d``."""
    root = Path(d.root)
    if d.name == "nih":
        from medrun.datasets import nih

        entries = nih.read_entries(root, d.labels_csv)
        return {"train_val": nih.read_list(root, "train_val", entries), "test": nih.read_list(root, "test", entries)}
    if d.name == "mimic":
        from medrun.datasets import mimic

        return mimic.read_split(root)
    if d.name == "vindr":
        from medrun.datasets import vindr

        return vindr.read_split(root, d.split_seed)
    from medrun.datasets import fundus

    return fundus.read_split(d.name, root, d.split_seed)


def check(d) -> None:
    """Read the dataset fully (labels, every image named), so that bad data fails before a run opens."""
    read_split(d)


def image_array(name: str, paths, size: int, cache=None, log=None):
    """(N, size, size) uint8 grey images; DICOM (VinDr) through its own decoder, everything else through
    ``nih.image_array`` (colour averaged to grey)."""
    if name == "vindr":
        from medrun.datasets import vindr

        return vindr.image_array(paths, size, cache, log)
    from medrun.datasets import nih

    return nih.image_array(paths, size, cache, 0, log)


def load_gray(path: Path, size: int):
    if str(path).lower().endswith((".dicom", ".dcm")):
        from medrun.datasets import vindr

        return vindr.load_gray(path, size)
    from medrun.datasets import nih

    return nih.load_gray(path, size)
