"""ad-progression: ADxPro, cross-modal AD progression prediction with missing visits and modalities
(card: docs/papers/ad-progression.md).

The manifest lives in ``config.py``, the method in ``pipeline.py``, the cohort arrays in ``data.py``, ``impute`` and
``prepare`` in ``impute.py``, the paper's tables in ``paper.yaml``.
"""

from medrun.pipelines import PipelineSpec

SPEC = PipelineSpec(
    slug="ad-progression",
    title="ADxPro",
    paper="Adaptive Cross-Modal Representation Learning for Heterogeneous Data Types in Alzheimer Disease Progression "
          "Prediction with Missing Time Point and Modalities (ICPR 2024)",
    card="ad-progression",
    datasets=("adnimerge",),
    stages=("prepare", "train", "eval", "predict", "impute", "cv"),
    manifest="medrun.pipelines.ad_progression.config:AdProgressionManifest",
    impl="medrun.pipelines.ad_progression.pipeline:AdProgression",
    parents={"eval": "train", "predict": "train", "impute": "train"},
    stage_help={
        "prepare": "Select the cohort and check the table and volumes: counts, cohort.csv and a cohort figure.",
        "impute": "Fill a train run's missing visits: decoded volumes as NIfTI, imputed biomarkers as CSV.",
        "cv": "k-fold CV (train.folds): one train run per fold, reused when complete; mean ± sd (cv.baseline: t-test).",
    },
    examples={
        "prepare": "medrun prepare ad-progression --dataset adnimerge --fixture",
        "impute": "medrun impute ad-progression --dataset adnimerge --fixture",
        "cv": "medrun cv ad-progression --dataset adnimerge --fixture",
    },
    no_export="a subject's input is a sequence of visits with MRI, PET and tabular data, not one image",
)
