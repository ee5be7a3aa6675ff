"""covid-severity, the method (card: docs/papers/covid-severity.md). Training-free: stages ``segment`` (here),
``grade`` (``grade.py``) and ``eval`` (``evaluate.py``), the last two on a finished segment run.

Data (``datasets.ricord``): every ``*.dcm`` under ``MIDRC-RICORD-1A/`` is found recursively and grouped by series;
one series per case (the one the annotation export references, else the axial CT series with the most slices, or
``dataset.series``). Before any scan is processed every chosen series is checked (one orientation and size, no
repeated position, no gap) so a bad series stops the run at once with its folder named. A series is read as HU with
each slice's RescaleSlope/RescaleIntercept, apex first; slice thickness is the median spacing of the positions along
the slice normal (the authors: the first two slices' z difference, the same on a regular series). Cases: those the
grades sheet scores with a number (``-`` and its comment exclude a case; the paper's 100 of 110, here 101: the sheet
has 101 numeric rows and the paper does not list which one it dropped), or ``dataset.cases: all``.

Lobes (card step 1, ``lobes.py``): ``lobes.dir`` (one label map per case, checked against its series' grid and
voxel size) or lungmask with the user's weights; never invented (exit 4 naming both options).

Steps 2–7 (``method.py``): slices resized to ``method.size``² (cubic; lobes nearest), as the authors' code (512);
pixel sizes scaled from the 512 grid; every step runs inside the lungs' in-plane bounding box plus a margin (the same
masks as on the whole slice, checked on phantoms, at about two thirds of the cost at 512²). Choices where the card or
paper leave room, all in the manifest:
- HU window and hole filling: ``method.preset: paper`` (−595…−1 HU, holes ≤ 30 px, no 46-px rule, no isolated-
  slice rule, a component in the motion band is always removed) by default; ``code`` gives the authors' code
  (−700…+30 HU, 100 px, the 46-px rule, isolated slices dropped, the band rule only below half the band's size).
- Organ onset: the first slice with 57 < p < 79 whose (pleura-eroded) lung mask encloses a non-lung blob of
  ≥ ``organ_min_px``; the largest such blob is the organ. Going up ``up_mm``: remove the organ (eroded by
  2·floor(thickness) px per slice) and the anterior edge band, AND with the slice below; going down ``down_mm``: the
  organ dilated by 20 px, then 2·(ceil(thickness) + 1) px more per slice, and the band; AND with the next slice until
  p = 87, then base trimming (band, the top 7 rows, AND) to the last slice. No organ: base trimming from p = 68.
  Dilations of iterated 5×5 ellipses are discs of the same reach.
- Vessels: scikit-image's Frangi filter for bright ridges (the code's dark-object setting is wrong for CT) with
  beta 1 (ITK's), at sigmas 1, 2, 3 px, on the lung-only image (outside filled with the lung's median HU). Opacity
  below ``vessel_floor_hu`` (−300) is raised to it first: on the fixture the plateau edges of ground glass otherwise
  score as ridges and vessel removal erased 70 % of the opacity; with the floor the vessels-only control scores 0
  and the planted scores are recovered. Per-slice rescale to 0–255, > 10 is vessel; dilated 2×2, components > 460 px
  once more (3×3).
- Motion band: each lung's Canny edge without its lowest third, dilated 10×10 (7×7 for p ≤ 15; the whole edge for
  p < 7), from the pleura-eroded mask as the code.
Step 8 (``method.grade``): involvement = infected ∩ lobe / lobe volume from step 1 (the full lobe, not the cleaned
one); half-open bins 0 | (0, 5) | [5, 25] | (25, 50) | [50, 75] | > 75; CTSS = sum; severity mild < 8, moderate
8–15, severe > 15 (and the code's 4-class variant with "none" for CTSS 0).

Annotations (the comparator): MD.ai polygons of ``dataset.annotation_labels`` rasterised on their series' grid,
resized like the lobes, graded the same way; a case whose series has no polygon counts as no involvement.

Outputs of ``segment``: ``per_case.csv`` (lobe volumes and infected voxels for both mask sources, scores, truth,
age, sex, seconds), ``masks/<case>.nii.gz`` (the infection mask in the series' RAS space at the working size),
``lobes/<case>.nii.gz`` when lungmask made them, ``figures/overlays/<case>.png`` (per-lobe severity, with the
annotations beside ours) and ``figures/steps/<case>.png`` (the removal steps). A killed segment run resumes: each
finished case is kept (``cases/<case>.json``) and skipped when the same command runs again.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from medrun.datasets import ricord
from medrun.errors import DataError, UsageError

from ..base import Pipeline
from ..report import markdown_table, paper_md, paper_note, paper_table
from . import figures, lobes, method
from .evaluate import evaluate
from .grade import grade_stage

LOBE_KEYS = [1, 2, 3, 4, 5]


@dataclass
class Case:
    id: str
    series: ricord.Series
    truth: int | None
    age: float | None
    sex: str | None
    annotated: bool | None  # None: no annotation export


def resize(vol: np.ndarray, size: int, order: int) -> np.ndarray:
    """Each slice to size×size (cubic spline for HU, nearest for labels), as the authors' 512² resize."""
    if vol.shape[1:] == (size, size):
        return vol
    from scipy.ndimage import zoom

    out = zoom(vol.astype(np.float32) if order else vol, (1, size / vol.shape[1], size / vol.shape[2]), order=order,
               grid_mode=True, mode="grid-constant" if order == 0 else "nearest")
    return out if order else out.astype(vol.dtype)


class CovidSeverity(Pipeline):
    def build_model(self):
        """The lungmask U-Nets when lobes come from lungmask, else an empty module (the method trains nothing)."""
        import torch

        nets = lobes.networks(self.m) if self.m.lobes.lungmask_checkpoint and not self.m.lobes.dir else {}
        return torch.nn.ModuleDict({k: v for k, v in nets.items() if v is not None})

    # -- data -------------------------------------------------------------------------------------------------------
    @property
    def root(self) -> Path:
        return Path(self.ctx.data_roots["data"]) if self.ctx else Path(self.m.dataset.root)

    def _file(self, value: str | None, what: str, null_fix: str) -> Path | None:
        p = ricord.resolve(self.root, value)
        if p is not None and not p.is_file():
            raise DataError(f"{what} not found: {p}", fix=null_fix)
        return p

    def annotations(self) -> ricord.Annotations | None:
        d = self.m.dataset
        path = self._file(d.annotations, "annotation export (dataset.annotations)",
                          "put the MD.ai JSON there, or -o dataset.annotations=null to skip the annotation comparator")
        return ricord.read_annotations(path, d.annotation_labels) if path else None

    def cohort(self) -> list[Case]:
        """The cases to process, each with its checked series, grade, age and sex."""
        d, log = self.m.dataset, self.ctx.log
        found = ricord.scan(ricord.check_layout(self.root, d.dicom_dir))
        ann = self.ann = self.annotations()
        grades_path = self._file(d.grades, "grades sheet (dataset.grades)",
                                 "put COVID_grade.xlsx there, or -o dataset.grades=null -o dataset.cases=all")
        matched = {}
        if grades_path:
            matched, unmatched = ricord.match_grades(ricord.read_grades(grades_path), found, grades_path)
            if unmatched:
                log(f"grades sheet: {len(unmatched)} row(s) name no case of this download "
                    f"(e.g. row {unmatched[0].row})")
        if d.cases == "graded":
            if not grades_path:
                raise UsageError("dataset.cases=graded needs a grades sheet", fix="-o dataset.cases=all")
            ids = [c for c, g in matched.items() if g.score is not None]
            excluded = {c: g.comment for c, g in matched.items() if g.score is None}
            log(f"{len(ids)} graded case(s); {len(excluded)} excluded by the sheet ('-'): "
                + "; ".join(f"{c} ({t or 'no comment'})" for c, t in list(excluded.items())[:3]))
        else:
            ids = list(found)
        if d.only:
            unknown = [c for c in d.only if c not in ids]
            if unknown:
                raise UsageError(f"dataset.only names {unknown[0]}, which is not among the {len(ids)} cases",
                                 fix=f"e.g. {', '.join(ids[:3])}")
            ids = [c for c in ids if c in d.only]
        if not ids:
            raise DataError(f"no case to process under {self.root}", fix="check dataset.grades and dataset.cases")
        clinical = ricord.read_clinical(self._file(d.clinical, "clinical sheet (dataset.clinical)",
                                                   "put the TCIA clinical xlsx there, or -o dataset.clinical=null "
                                                   "(age and sex from the DICOM headers)")) if d.clinical else []
        prefer = ann.series() if ann else set()
        cases = []
        for cid in sorted(ids):
            series = ricord.choose_series(cid, found[cid], prefer, d.series.get(cid))
            ricord.ordered(series)  # every series checked before the first is processed
            info = ricord.match_clinical(clinical, series)
            grade = matched.get(cid)
            cases.append(Case(cid, series, grade.score if grade else None, info["age"], info["sex"],
                              None if ann is None else series.uid in ann.polygons))
        return cases

    # -- segment ------------------------------------------------------------------------------------------------
    def settings(self) -> method.Settings:
        return method.Settings.from_dict(self.m.method.resolved())

    def segment(self) -> dict:
        t0 = time.perf_counter()
        cases = self.cohort()
        root = self.root
        self.ctx.record_splits({"cases": [c.series.folder for c in cases]})
        s, seg = self.settings(), self.m.segment
        nets = lobes.networks(self.m)
        pred = self.ctx.predictor() if nets else None
        lobe_dir = lobes.root_path(root, self.m.lobes.dir)
        rows = []
        for i, case in enumerate(cases):
            done = self.ctx.path / "cases" / f"{case.id}.json"
            if done.is_file():  # finished before an interruption: same run id, same inputs
                rows.append(json.loads(done.read_text()))
                continue
            row = self.segment_case(case, s, nets, pred, lobe_dir, overlay=seg.overlays is None or i < seg.overlays,
                                    steps=i < 3)
            self.ctx.write_json(f"cases/{case.id}.json", row)
            rows.append(row)
            self.ctx.log(f"[{i + 1}/{len(cases)}] {case.id}: CTSS {row['pred_ctss']} ({row['pred_severity']})"
                         + (f", radiologist {case.truth}" if case.truth is not None else "")
                         + f"  {row['seconds']:.1f} s")
        self.ctx.write_csv("per_case.csv", rows)
        secs = [r["seconds"] for r in rows]
        metrics = {"n_cases": len(rows), "secs_per_scan": float(np.mean(secs)),
                   "wall_seconds": time.perf_counter() - t0,
                   "mean_ctss": float(np.mean([r["pred_ctss"] for r in rows])),
                   **{f"n_{k}": sum(r["pred_severity"] == k for r in rows) for k in method.SEVERITY},
                   "n_annotated": sum(bool(r.get("annotated")) for r in rows)}
        self.ctx.write_text("paper.md", self.segment_page(rows, metrics))
        return metrics

    def segment_case(self, case: Case, s: method.Settings, nets: dict, pred, lobe_dir: Path | None, *,
                     overlay: bool, steps: bool) -> dict:
        t0 = time.perf_counter()
        vol = ricord.read_volume(case.series)
        if nets:
            lob = lobes.lungmask_lobes(vol.hu, nets, pred, self.m.lobes.batch_size)
            self.ctx.write_nifti(f"lobes/{case.id}.nii.gz", ricord.canonical(lob), vol.affine())
        else:
            lob = ricord.read_lobes(lobes.lobe_file(lobe_dir, case.id), vol)
        if not lob.any():
            raise DataError(f"the lobe mask of {case.id} is empty", fix="check the lobe label map of this case")
        hu, lb = resize(vol.hu, s.size, 3), resize(lob, s.size, 0)
        res = method.segment(hu, lb, vol.spacing[0], s, keep_stages=steps)
        voxels, infected = method.involvement(res.infection, lb)
        g = method.grade(voxels, infected)
        row = {"case": case.id, "series": _rel(case.series.folder, self.root), "series_uid": case.series.uid,
               "slices": int(vol.hu.shape[0]), "thickness_mm": vol.spacing[0], "pixel_mm": vol.spacing[1],
               "size": s.size, "organ_slice": res.organ["organ_slice"], "organ_p": res.organ["organ_p"],
               **{f"lobe{k}_voxels": v for k, v in zip(LOBE_KEYS, voxels, strict=True)},
               **{f"pred_lobe{k}_infected": v for k, v in zip(LOBE_KEYS, infected, strict=True)},
               **{f"pred_lobe{k}_pct": v for k, v in zip(LOBE_KEYS, g["involvement"], strict=True)},
               "pred_ctss": g["ctss"], "pred_severity": g["severity"]}
        ann_mask, ga = None, None
        if case.annotated is not None:
            polys = self.ann.polygons.get(case.series.uid, {})
            ann_mask = resize(ricord.rasterise(polys, vol.sops, vol.hu.shape[1:]), s.size, 0)
            ann_inf = method.involvement(ann_mask, lb)[1]
            ga = method.grade(voxels, ann_inf)
            row.update({"annotated": bool(polys),
                        **{f"ann_lobe{k}_infected": v for k, v in zip(LOBE_KEYS, ann_inf, strict=True)},
                        "ann_ctss": ga["ctss"], "ann_severity": ga["severity"]})
        row.update({"truth_ctss": case.truth, "sex": case.sex, "age": case.age})
        if self.m.segment.masks:
            self.ctx.write_nifti(f"masks/{case.id}.nii.gz", ricord.canonical(res.infection.astype(np.uint8)),
                                 vol.affine(res.infection.shape))
        if overlay:
            figures.overlay(self.ctx, f"overlays/{case.id}", case.id, hu, lb, res.infection, g, ann_mask, ga)
        if steps:
            figures.steps(self.ctx, f"steps/{case.id}", case.id, hu, res.stages, res.infection, res.organ)
        row["seconds"] = time.perf_counter() - t0
        return row

    def segment_page(self, rows: list[dict], metrics: dict) -> str:
        table = markdown_table(["case", "slices", "LUL %", "LLL %", "RUL %", "RML %", "RLL %", "CTSS", "severity",
                                "radiologist"],
                               [[r["case"], r["slices"], *[r[f"pred_lobe{k}_pct"] for k in LOBE_KEYS], r["pred_ctss"],
                                 r["pred_severity"], r["truth_ctss"]] for r in rows[:200]])
        return paper_md(self.ctx.spec, self.m, metrics, self.ctx, keys=["n_cases", "mean_ctss", "secs_per_scan"],
                        expect={}, title="CTSS per scan (segment)",
                        sections=["## Scans\n\nInvolvement per lobe (% of the lobe's volume), the CT severity score "
                                  "and the severity class; agreement with the radiologist is `medrun eval` on this "
                                  "run.\n\n" + table,
                                  paper_table(self.ctx.spec, "table1"), paper_note(self.ctx.spec, "comparison")])

    # -- the stages on a segment run ----------------------------------------------------------------------------
    def parent_rows(self) -> list[dict]:
        """The segment run's ``per_case.csv`` (checked against its MANIFEST.sha256), numbers parsed."""
        import csv

        if self.ctx.parent is None:
            raise UsageError(f"stage '{self.ctx.stage}' runs on a segment run, not on weights",
                             fix="pass --run ID of a segment run (or run `medrun segment` first)")
        with open(self.ctx.parent_file("per_case.csv"), newline="") as f:
            return [{k: _num(v) for k, v in r.items()} for r in csv.DictReader(f)]

    def grade(self) -> dict:
        return grade_stage(self)

    def eval(self) -> dict:
        return evaluate(self)


def _rel(path: Path, root: Path) -> str:
    try:
        return Path(path).resolve().relative_to(Path(root).resolve()).as_posix()
    except ValueError:
        return str(path)


def _num(v: str):
    if v is None or v == "":
        return None
    if v in ("True", "False"):
        return v == "True"
    try:
        return int(v)
    except ValueError:
        try:
            return float(v)
        except ValueError:
            return v
