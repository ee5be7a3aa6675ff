"""covid-severity's typed manifest (pydantic only) and the data folders it reads."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator, model_validator

from medrun.manifests.schema import BatchSize, Count, DatasetSection, EvalSection, Manifest, NonNegInt, Section

CLINICAL = "MIDRC-RICORD-1a-Clinical-Data-Jan-13-2021.xlsx"
ANNOTATIONS = "MIDRC-RICORD-1a_annotations_labelgroup_all_2020-Dec-8.json"
INFECTION_LABELS = ["Infectious opacity", "Infectious TIB/micronodules", "Infectious cavity"]
# the two settings the card keeps: the paper's text, and the authors' code where they differ
PRESETS = {
    "paper": {"hu_min": -595.0, "hu_max": -1.0, "hole_px": 30, "min_component_px": 0, "drop_isolated_slices": False,
              "motion_area_rule": False},
    "code": {"hu_min": -700.0, "hu_max": 30.0, "hole_px": 100, "min_component_px": 46, "drop_isolated_slices": True,
             "motion_area_rule": True},
}


class Data(DatasetSection):
    name: Literal["ricord-1a"]
    dicom_dir: str = Field("MIDRC-RICORD-1A", description="the DICOM folder under root (one folder per PatientID)")
    grades: str | None = Field("COVID_grade.xlsx", description="radiologist grades (.xlsx or .csv), relative to root "
                                                               "or absolute; null: no grades (segment and grade only)")
    clinical: str | None = Field(CLINICAL, description="TCIA clinical sheet (age, sex); null: the DICOM headers' "
                                                       "PatientAge/PatientSex")
    annotations: str | None = Field(ANNOTATIONS, description="MD.ai annotation export (the comparator); null: none")
    annotation_labels: list[str] = Field(default_factory=lambda: list(INFECTION_LABELS),
                                         description="MD.ai label names rasterised as infection")
    cases: Literal["graded", "all"] = Field("graded", description="graded: the cases with a numeric grade (the paper's "
                                                                  "subset); all: every patient folder")
    series: dict[str, str] = Field(default_factory=dict, description="case → SeriesInstanceUID or series folder name, "
                                                                     "where the automatic choice is wrong")
    only: list[str] | None = Field(None, description="restrict to these cases (PatientIDs)")


class Lobes(Section):
    dir: str | None = Field(None, description="folder of <PatientID>.nii.gz lobe label maps (0–5), relative to root "
                                              "or absolute")
    lungmask_checkpoint: str | None = Field(None, description="LTRCLobes weights (a state dict, e.g. "
                                                              "unet_ltrclobes-3a07043d.pth) for the lungmask package")
    lungmask_fill_checkpoint: str | None = Field(None, description="R231 weights: fuse as LTRCLobes_R231 (the paper)")
    batch_size: BatchSize = 20


class Method(Section):
    """Card steps 2–7. Pixel sizes are the authors' values on the 512 grid, scaled to ``size``."""

    preset: Literal["paper", "code"] = Field("paper", description="HU window, hole filling and the code-only rules")
    size: int = Field(512, ge=32, le=2048, description="working in-plane size (slices resized to size², cubic)")
    pleura_px: NonNegInt = 3
    organ_p: tuple[float, float] = (57.0, 79.0)
    organ_min_px: NonNegInt = 20
    organ_px: NonNegInt = 4
    up_mm: float = Field(4.0, ge=0)
    down_mm: float = Field(12.0, ge=0)
    down_first_px: NonNegInt = 20
    edge_up_cut: float = Field(0.6, ge=0, le=1)
    edge_down_cut: float = Field(0.55, ge=0, le=1)
    edge_last_cut: float = Field(0.6, ge=0, le=1)
    edge_px: NonNegInt = 1
    trim_until_p: float = 87.0
    no_organ_p: float = 68.0
    base_top_px: NonNegInt = 7
    vessel_sigmas: list[float] = Field(default_factory=lambda: [1.0, 2.0, 3.0], min_length=1)
    vessel_beta: float = Field(1.0, gt=0)
    vessel_gamma: float | None = Field(None, gt=0)
    vessel_threshold: float = Field(10.0, ge=0, le=255)
    vessel_floor_hu: float | None = -300.0
    vessel_px: NonNegInt = 1
    big_vessel_px: NonNegInt = 460
    hu_min: float | None = None
    hu_max: float | None = None
    min_object_px: NonNegInt = 30
    hole_px: NonNegInt | None = None
    min_component_px: NonNegInt | None = None
    drop_isolated_slices: bool | None = None
    motion: bool = True
    motion_px: NonNegInt = 5
    motion_apex_px: NonNegInt = 3
    motion_apex_p: float = 15.0
    motion_whole_p: float = 7.0
    motion_cut: float = Field(0.33, ge=0, le=1)
    motion_area_rule: bool | None = None

    @field_validator("vessel_sigmas")
    @classmethod
    def _positive(cls, v):
        if any(s <= 0 for s in v):
            raise ValueError("vesselness scales must be > 0")
        return v

    @model_validator(mode="after")
    def _window(self):
        lo, hi = self.resolved()["hu_min"], self.resolved()["hu_max"]
        if lo >= hi:
            raise ValueError(f"hu_min {lo} must be below hu_max {hi}")
        return self

    def resolved(self) -> dict:
        """Every setting, the preset's values filling those left null."""
        out = self.model_dump()
        for k, v in PRESETS[self.preset].items():
            if out.get(k) is None:
                out[k] = v
        out.pop("preset")
        return out


class Segment(Section):
    overlays: NonNegInt | None = Field(None, description="cases with a per-lobe overlay figure (null: all)")
    masks: bool = Field(True, description="write each case's infection mask as NIfTI (masks/<case>.nii.gz)")


class Grade(Section):
    mask_source: Literal["pred", "annotations"] = Field("pred", description="grade the predicted infection mask, or "
                                                                            "the rasterised dataset annotations")


class Eval(EvalSection):
    split: str = "graded"
    metrics: list[str] = Field(default_factory=lambda: ["qwk_severity", "qwk_ctss", "coverage_a0", "coverage_a1",
                                                        "coverage_a2", "coverage_a3", "coverage_a4", "coverage_a5"])
    age_bands: list[int] = Field(default_factory=lambda: [40, 50, 60, 70], min_length=1,
                                 description="upper bounds of the age bands (≤40, 41–50, … , >70)")
    alphas: Count = Field(6, le=26, description="coverage for α = 0 … alphas − 1")


class CovidSeverityManifest(Manifest):
    pipeline: Literal["covid-severity"] = "covid-severity"
    dataset: Data
    lobes: Lobes = Field(default_factory=Lobes)
    method: Method = Field(default_factory=Method)
    segment: Segment = Field(default_factory=Segment)
    grade: Grade = Field(default_factory=Grade)
    eval: Eval = Field(default_factory=Eval)


def _resolve(root: Path, value: str | None) -> Path | None:
    if not value:
        return None
    p = Path(value).expanduser()
    return p if p.is_absolute() else root / p


def data_paths(m: CovidSeverityManifest) -> dict[str, Path]:
    """The folders to fingerprint: the download, and the folders of sheets, annotations and lobes that lie outside
    it. Checks the layout cheaply, and that a lobe source is configured (exit 4 naming both options otherwise)."""
    from medrun.datasets import ricord
    from medrun.errors import EnvError

    root = Path(m.dataset.root)
    paths = {"data": root}
    if not root.exists():
        return paths  # the runner says the folder is missing
    ricord.check_layout(root, m.dataset.dicom_dir)
    d = m.dataset
    for name, value in (("grades", d.grades), ("clinical", d.clinical), ("annotations", d.annotations)):
        p = _resolve(root, value)
        if p is not None and p.exists() and not p.resolve().is_relative_to(root.resolve()):
            paths[name] = p.parent
    lobes = _resolve(root, m.lobes.dir)
    if lobes is not None:
        if not lobes.is_dir():
            from medrun.errors import DataError

            raise DataError(f"lobe folder not found: {lobes} (lobes.dir)",
                            fix="a folder of <PatientID>.nii.gz lobe label maps (0–5), or set "
                                "lobes.lungmask_checkpoint")
        if not lobes.resolve().is_relative_to(root.resolve()):
            paths["lobes"] = lobes
    elif m.lobes.lungmask_checkpoint:
        import importlib.util

        ck = Path(m.lobes.lungmask_checkpoint).expanduser()
        if not ck.is_file():
            raise EnvError(f"lungmask checkpoint not found: {ck} (lobes.lungmask_checkpoint)",
                           fix="give the LTRCLobes weights file you have (unet_ltrclobes-3a07043d.pth); medrun "
                               "downloads nothing — or set lobes.dir to precomputed lobe NIfTIs")
        if importlib.util.find_spec("lungmask") is None:
            raise EnvError("lobes.lungmask_checkpoint needs the lungmask package, which is not installed",
                           fix="pip install lungmask, or set lobes.dir to a folder of lobe NIfTIs")
    else:
        raise EnvError("no lobe masks: covid-severity needs the five lung lobes of every scan and never invents them",
                       fix="set lobes.dir to a folder of <PatientID>.nii.gz lobe label maps (0–5), or "
                           "lobes.lungmask_checkpoint to LTRCLobes weights you have (with the lungmask package)")
    return paths
