"""specular's typed manifest (pydantic only) and the data folders it reads."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field

from medrun.manifests.schema import (
    Count,
    DatasetSection,
    EvalSection,
    Fraction,
    Manifest,
    NonNegInt,
    PositiveFloat,
    Section,
    Seed,
)

Variant = Literal["fused", "mmser", "is", "is_en"]
Method = Literal["fused", "mmser", "is", "is_en", "shen", "arnold"]
Detector = Literal["covariant", "sift", "orb", "harris"]


class Data(DatasetSection):
    name: Literal["cvc-clinicspec", "hyper-kvasir"]
    images: str = Field("images", description="cvc-clinicspec: frame folder (relative to the root, or absolute)")
    masks: str = Field("masks", description="cvc-clinicspec: GT mask folder, mask > 0 = specular")
    videos: str = Field("labeled-videos/lower-gi-tract/quality-of-mucosal-views/BBPS-2-3",
                        description="hyper-kvasir: video folder (relative to the root, or absolute)")
    limit: int | None = Field(None, ge=1, description="use the first N frames / videos (sorted by name)")


class Detection(Section):
    """The detector (card steps 1–6)."""

    delta: Count = Field(5, description="MMSER Δt (unstated in the paper)")
    a_max: Fraction = Field(0.001, description="MMSER A_max as a fraction of the image area (0.1 % ≈ 110 px)")
    min_area: Count = Field(1, description="MMSER minimum region area, px")
    floor: bool = Field(True, description="MMSER keeps regions with I ≥ ½·max(I) only")
    stability: Literal["paper", "normalised"] = Field("paper", description="paper: |A(t−Δ) − A(t)| (Eq. 3); "
                                                                          "normalised: divided by A(t) (MSER)")
    mser_impl: Literal["tree", "opencv"] = Field("tree", description="tree: scipy component tree; opencv: cv2.MSER "
                                                                     "(normalised stability, flagged in metrics)")
    t_h: PositiveFloat = Field(20.0, description="false-region area threshold at 384×288 (scaled with H·W)")
    sat: Literal["paper", "hsv"] = Field("paper", description="paper: Eq. 5 as written; hsv: HSV saturation")


class Detect(Section):
    input: str | None = Field(None, description="frames to process: a file, folder or glob (default: the dataset)")
    variants: list[Variant] = Field(default_factory=lambda: ["fused", "mmser", "is"],
                                    description="masks written per frame (the ablation)")
    figures: NonNegInt = Field(4, description="overlay figures of the first N frames")


class Eval(EvalSection):
    split: str = "all"
    metrics: list[str] = Field(default_factory=lambda: ["accuracy", "precision", "recall", "f1", "jaccard"])
    methods: list[Method] = Field(default_factory=lambda: ["fused", "mmser", "is", "is_en", "shen", "arnold"],
                                  description="detectors scored (ours, its ablations, weight-free baselines)")
    figures: NonNegInt = Field(4, description="TP/FP/FN overlays of the first N frames")


class Inpaint(Section):
    input: str | None = Field(None, description="frames to filter (default: the dataset)")
    method: Literal["ns", "telea", "arnold"] = Field("ns", description="ns: Navier–Stokes (Sec. 2.4); telea; "
                                                                       "arnold: NS + smoothed ring (two-level)")
    radius: Count = Field(3, description="cv2.inpaint radius")
    figures: NonNegInt = Field(4, description="before/after figures of the first N frames")


class Match(Section):
    gap: Count = Field(25, description="pairs are frames (f, f + gap): 1 s at 25 fps")
    stride: Count = Field(10, description="every stride-th frame starts a pair (the paper's '10 % of frames')")
    max_pairs: int | None = Field(None, ge=1, description="at most N pairs per video")
    detectors: list[Detector] = Field(default_factory=lambda: ["covariant", "sift", "orb", "harris"])
    inputs: list[Literal["raw", "filtered"]] = Field(default_factory=lambda: ["raw", "filtered"],
                                                     description="frames as read, and after highlight inpainting")
    num_features: Count = Field(8000, description="covariant detector: at most N frames per image")
    response: Literal["dog", "hessian"] = Field("dog", description="covariant detector response")
    ratio: Fraction = Field(0.91, description="ratio test d1/d2 < ratio")
    ransac_threshold: PositiveFloat = Field(2.0, description="GC-RANSAC threshold, px (F-matrix)")
    confidence: Fraction = Field(0.999, description="GC-RANSAC confidence")
    truth_px: PositiveFloat = Field(3.0, description="an inlier is correct within this transfer error of the true "
                                                     "homography (fixture sidecars only)")
    figures: NonNegInt = Field(2, description="match figures of the first N pairs")


class Tune(Section):
    fraction: Fraction = Field(0.2, description="frames held out for tuning (the rest reports)")
    deltas: list[Count] = Field(default_factory=lambda: [2, 3, 5, 8])
    a_max: list[Fraction] = Field(default_factory=lambda: [0.0005, 0.001, 0.002])
    seed: Seed = 0


class SpecularManifest(Manifest):
    pipeline: Literal["specular"] = "specular"
    dataset: Data
    detection: Detection = Field(default_factory=Detection)
    detect: Detect = Field(default_factory=Detect)
    eval: Eval = Field(default_factory=Eval)
    inpaint: Inpaint = Field(default_factory=Inpaint)
    match: Match = Field(default_factory=Match)
    tune: Tune = Field(default_factory=Tune)


def _under(root: Path, sub: str) -> Path:
    p = Path(sub).expanduser()
    return p if p.is_absolute() else root / p


def folders(m: SpecularManifest) -> dict[str, Path]:
    root = Path(m.dataset.root)
    if m.dataset.name == "hyper-kvasir":
        return {"videos": _under(root, m.dataset.videos)}
    return {"images": _under(root, m.dataset.images), "masks": _under(root, m.dataset.masks)}


def data_paths(m: SpecularManifest) -> dict[str, Path]:
    """The folders to fingerprint, after a cheap layout check (no file opened)."""
    root = Path(m.dataset.root)
    f = folders(m)
    if root.exists():
        from medrun.datasets import specular

        if m.dataset.name == "hyper-kvasir":
            specular.read_videos(f["videos"])
        else:
            specular.read_frames(f["images"], f["masks"])
    if m.dataset.name == "hyper-kvasir":  # only the BBPS-2-3 videos, not the whole archive
        return {m.dataset.name: f["videos"]}
    return {m.dataset.name: root} if all(p.is_relative_to(root) for p in f.values()) else \
        {f"{m.dataset.name}-{k}": p for k, p in f.items()}
