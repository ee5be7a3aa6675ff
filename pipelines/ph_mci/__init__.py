"""ph-mci: persistent homology of rs-fMRI ROI time series for MCI diagnosis (card: docs/papers/ph-mci.md).

The manifest lives in ``config.py``; the topology (embedding, Rips persistence, Wasserstein distances, cache) in
``topo.py``; the method in ``pipeline.py``; ``topo`` and ``analyze`` in ``analyze.py``; the sweeps (``cv``,
``repeat``, ``grid``, ``baseline``) in ``sweeps.py``; the paper's tables in ``paper.yaml``.
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
    stage_help={
        "topo": "Each subject's persistence diagrams and Wasserstein PR matrices (cached; resumes where it stopped).",
        "analyze": "Group statistics and figures of a finished topo run's features (persistence diagrams, distances).",
        "cv": "Stratified k-fold CV (train.folds): one train run per fold, reused when complete; mean ± sd.",
        "repeat": "One train run per seed of repeat.seeds (split and model seed; the smoke run); mean ± sd.",
        "grid": "Table 1: one train run per comparison × network × homology dimension of grid; one table.",
        "baseline": "Table 2: a random forest here, DenseNet-121 and the proposed network as train runs; one table.",
    },
    examples={
        "topo": "medrun topo ph-mci --dataset adni-rsfmri --fixture",
        "analyze": "medrun analyze ph-mci --dataset adni-rsfmri --fixture",
        "cv": "medrun cv ph-mci --dataset adni-rsfmri --fixture",
        "repeat": "medrun repeat ph-mci --dataset adni-rsfmri --fixture",
        "grid": "medrun grid ph-mci --dataset adni-rsfmri --fixture",
        "baseline": "medrun baseline ph-mci --dataset adni-rsfmri --fixture",
    },
    no_export="the input is a PR matrix computed by persistent homology from a subject's ROI time series, not an image",
)
