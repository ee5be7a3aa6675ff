"""MRBrainS13 (adult brain MRI, 3 T; CSF / GM / WM), its five labelled training subjects.

Layout (the challenge's training archive, unpacked)::

    <root>/TrainingData/{1..5}/T1.nii, T1_IR.nii, T2_FLAIR.nii      registered to one grid (0.958×0.958×3.0 mm)
                               LabelsForTesting.nii                  0 bg, 1 CSF, 2 GM, 3 WM
                               LabelsForTraining.nii                 8 structures (not read)

``root`` is the folder holding ``TrainingData/`` (``TrainingData`` itself is accepted too). The 15 test subjects'
labels are hidden by the challenge, so the pipeline validates leave-one-out over these five. Modalities: ``t1`` =
``T1.nii``, ``t2`` = ``T2_FLAIR.nii`` (the paper's second teacher is trained on T2-FLAIR). Every file of a subject
must share the T1's grid (checked as in ``iseg2017``).

The fixture writes five subjects of 48×48×16 voxels (0.958×0.958×3.0 mm) as uncompressed NIfTI with the same names,
using ``iseg2017``'s phantom: T1 separates GM/WM, FLAIR separates CSF (dark) from tissue.
"""

from __future__ import annotations

from pathlib import Path

from medrun.errors import DataError

from . import DatasetInfo
from .iseg2017 import Subject

DATASETS = [
    DatasetInfo(
        "mrbrains13",
        "MRBrainS13 adult brain MRI (T1, T1-IR, T2-FLAIR; CSF/GM/WM labels), 5 training subjects",
        "TrainingData/{1..5}/{T1,T1_IR,T2_FLAIR,LabelsForTesting,LabelsForTraining}.nii",
        "MRBrainS13 challenge (mrbrains13.isi.uu.nl, registration required); point at the folder holding "
        "TrainingData/",
        "medrun.datasets.mrbrains13:fixture",
        ("segmentation", "mri", "3d"),
    ),
]

FILES = {"t1": "T1.nii", "t2": "T2_FLAIR.nii"}
LABEL_FILE = "LabelsForTesting.nii"
LABEL_VALUES = (0, 1, 2, 3)
SPACING = (0.958, 0.958, 3.0)
_HINT = ("point at the folder that holds TrainingData/{1..5}/ (T1.nii, T2_FLAIR.nii, LabelsForTesting.nii), "
         "or try --fixture")


def training_dir(root: Path) -> Path:
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"MRBrainS13 folder not found: {root}", fix=_HINT)
    if (root / "TrainingData").is_dir():
        return root / "TrainingData"
    if any((p / "T1.nii").is_file() for p in root.iterdir() if p.is_dir()):
        return root
    found = ", ".join(sorted(p.name for p in root.iterdir())[:5]) or "nothing"
    raise DataError(f"{root} does not have the MRBrainS13 layout: no TrainingData/ (found: {found})", fix=_HINT)


def subjects_in(folder: Path, labelled: bool = True) -> list[Subject]:
    """The numbered subject folders of ``folder`` (T1.nii and T2_FLAIR.nii, and LabelsForTesting.nii when
    ``labelled``), sorted by number; a missing file is a DataError naming it."""
    subs = []
    for d in sorted((p for p in folder.iterdir() if p.is_dir() and p.name.isdigit()), key=lambda p: int(p.name)):
        files = {m: d / f for m, f in FILES.items()}
        for f in [*files.values(), *([d / LABEL_FILE] if labelled else [])]:
            if not f.is_file():
                raise DataError(f"subject {d.name} is incomplete: {f} is missing",
                                fix="each subject folder needs T1.nii, T2_FLAIR.nii and LabelsForTesting.nii")
        subs.append(Subject(d.name, int(d.name), files, d / LABEL_FILE if labelled else None))
    return subs


def read(root: Path) -> list[Subject]:
    """The numbered subject folders of ``TrainingData`` (each with T1, T2-FLAIR and its CSF/GM/WM labels)."""
    folder = training_dir(root)
    subs = subjects_in(folder)
    if not subs:
        raise DataError(f"no numbered subject folders in {folder}", fix=_HINT)
    return subs


def fixture(out: Path, seed: int = 0, n: int = 5, shape=(48, 48, 16)) -> Path:
    import nibabel as nib
    import numpy as np

    from .iseg2017 import phantom, render

    rng = np.random.default_rng(seed)
    root = Path(out) / "MRBrainS13"
    contrast = {"T1.nii": (0.0, 0.45, 0.60, 0.90), "T1_IR.nii": (0.0, 0.20, 0.55, 0.85),
                "T2_FLAIR.nii": (0.0, 0.15, 0.75, 0.62)}
    affine = np.diag([*SPACING, 1.0])
    for i in range(1, n + 1):
        d = root / "TrainingData" / str(i)
        d.mkdir(parents=True, exist_ok=True)
        tissue, bias = phantom(rng, shape)
        for name, c in contrast.items():
            nib.save(nib.Nifti1Image(render(rng, tissue, bias, c), affine), str(d / name))
        nib.save(nib.Nifti1Image(tissue.astype(np.uint8), affine), str(d / LABEL_FILE))
        training = np.array([0, 5, 1, 3], np.uint8)[tissue]  # CSF 5, cortical GM 1, WM 3 of the 8-structure map
        nib.save(nib.Nifti1Image(training, affine), str(d / "LabelsForTraining.nii"))
    return root
