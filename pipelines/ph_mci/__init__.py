"""ph-mci: persistent homology of rs-fMRI ROI time series for MCI diagnosis (card: shared/papers/ph-mci.md).

The manifest lives in ``config.py``; the topology (embedding, Rips persistence, Wasserstein distances, cache) in
``topo.py``; the method in ``pipeline.py``.
"""

from medrun.pipelines import PipelineSpec

SPEC = PipelineSpec(
    slug="ph-mci",
    title="PH-MCI (persistent homology + two-branch CNN)",
    paper="Leveraging Persistent Homology for Differential Diagnosis of Mild Cognitive Impairment (ICPR 2024)",
    card="ph-mci",
    datasets=("adni-rsfmri",),
    stages=("topo", "analyze", "train", "eval", "predict", "cv", "repeat", "grid", "baseline"),
    manifest="medrun.pipelines.ph_mci.config:PhMciManifest",
    impl="medrun.pipelines.ph_mci.pipeline:PhMci",
    parents={"eval": "train", "predict": "train", "analyze": "topo"},
)
