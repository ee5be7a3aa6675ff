"""covid-severity: unsupervised COVID-19 CT severity score from lung CT (card: docs/papers/covid-severity.md).

Training-free: no ``train`` stage. The manifest lives in ``config.py``; the classical steps in ``method.py``; lobe
sources in ``lobes.py``; the stages in ``pipeline.py`` (``segment``), ``grade.py`` and ``evaluate.py``; the
paper's tables in ``paper.yaml``.
"""

from medrun.pipelines import PipelineSpec

SPEC = PipelineSpec(
    slug="covid-severity",
    title="Unsupervised COVID-19 CT severity score, CTSS (training-free: no train stage)",
    paper="A Fast Domain-Inspired Unsupervised Method to Compute COVID-19 Severity Scores from Lung CT (Dey et al.)",
    card="covid-severity",
    datasets=("ricord-1a",),
    stages=("segment", "grade", "eval"),
    manifest="medrun.pipelines.covid_severity.config:CovidSeverityManifest",
    impl="medrun.pipelines.covid_severity.pipeline:CovidSeverity",
    parents={"grade": "segment", "eval": "segment"},
    stage_help={
        "segment": "Infection masks per scan (no training: pleura, organ-rim, vessel and motion-artefact removal, "
                   "HU window), per-lobe involvement, severity overlays per lobe.",
        "grade": "CT severity score (0–25) and severity class per scan from a segment run; grade.mask_source "
                 "pred|annotations.",
        "eval": "Agreement with the radiologist grades on a segment run: QWK (score, severity), coverage α = 0–5, "
                "fairness by sex and age (Tables 1–2), for the predicted and the annotation masks.",
    },
    examples={
        "segment": "medrun segment covid-severity --dataset ricord-1a --fixture\n\n"
                   "  medrun segment covid-severity --dataset ricord-1a --data-dir ~/tcia/manifest-1608266677008 "
                   "-o lobes.dir=~/lobes",
        "grade": "medrun grade covid-severity --dataset ricord-1a --fixture -o grade.mask_source=annotations",
        "eval": "medrun eval covid-severity --dataset ricord-1a --fixture",
    },
    no_export="training-free: the method is classical image processing on lobe masks the user supplies, with no "
              "trained network to bundle",
)
