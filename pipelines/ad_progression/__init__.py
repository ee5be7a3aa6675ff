"""ad-progression: ADxPro, cross-modal AD progression prediction with missing visits and modalities
(card: shared/papers/ad-progression.md).

The manifest lives in ``config.py``, the method in ``pipeline.py``.
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
        "prepare": "Read and check the raw records (tables, volumes) and write the prepared dataset the other stages use.",
        "impute": "Fill a finished train run's missing visits: reconstructed volumes as NIfTI, imputed biomarkers as CSV.",
        "cv": "Cross-validate (k folds, as the pipeline's card says); writes per-fold metrics and mean ± sd.",
    },
    examples={
        "prepare": "medrun prepare ad-progression --dataset adnimerge --fixture",
        "impute": "medrun impute ad-progression --dataset adnimerge --fixture",
        "cv": "medrun cv ad-progression --dataset adnimerge --fixture",
    },
)
