"""ad-progression: ADxPro, cross-modal AD progression prediction with missing visits and modalities
(card: docs/papers/ad-progression.md).

The manifest lives in ``config.py``, the method in ``pipeline.py``, the cohort arrays in ``data.py``, ``impute`` and
``prepare`` in ``impute.py``, Table 1's baselines and Fig. 5's unimodal rows in ``baselines.py``, the paper's tables
in ``paper.yaml``.
"""

from medrun.pipelines import PipelineSpec

SPEC = PipelineSpec(
    slug="ad-progression",
    title="ADxPro",
    paper="Adaptive Cross-Modal Representation Learning for Heterogeneous Data Types in Alzheimer Disease Progression "
          "Prediction with Missing Time Point and Modalities (ICPR 2024)",
    card="ad-progression",
    datasets=("adnimerge",),
    stages=("prepare", "train", "eval", "predict", "impute", "cv", "baselines"),
    manifest="medrun.pipelines.ad_progression.config:AdProgressionManifest",
    impl="medrun.pipelines.ad_progression.pipeline:AdProgression",
    parents={"eval": "train", "predict": "train", "impute": "train"},
    stage_help={
        "prepare": "Select the cohort and check the table and volumes: counts, cohort.csv and a cohort figure.",
        "impute": "Fill a train run's missing visits: decoded volumes as NIfTI, imputed biomarkers as CSV.",
        "cv": "k-fold CV (train.folds): one train run per fold, reused when complete; mean ± sd (cv.baseline: t-test).",
        "baselines": "Table 1/2 and Fig. 5 on the cv folds: ADxPro, biomarker-only, MRI-only, PET-only, GRU-D, "
                     "MinimalRNN (baselines.models), one train run per fold each; paired t-tests against ADxPro.",
    },
    examples={
        "prepare": "medrun prepare ad-progression --dataset adnimerge --fixture",
        "impute": "medrun impute ad-progression --dataset adnimerge --fixture",
        "cv": "medrun cv ad-progression --dataset adnimerge --fixture",
        "baselines": "medrun baselines ad-progression --dataset adnimerge --fixture\n\n"
                     "  medrun train ad-progression --dataset adnimerge --data-dir ~/ADNI -o model.arch=grud\n"
                     "  medrun train ad-progression --dataset adnimerge --data-dir ~/ADNI -o 'model.modalities=[PET]'",
    },
    no_export="a subject's input is a sequence of visits with MRI, PET and tabular data, not one image",
)
