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
    stage_help={
        "topo": "Compute each subject's persistence diagrams and Wasserstein features once (cached; resumes where it stopped).",
        "analyze": "Group statistics and figures of a finished topo run's features (persistence diagrams, distances).",
        "cv": "Cross-validate (k folds, as the pipeline's card says); writes per-fold metrics and mean ± sd.",
        "repeat": "Train once per split seed the card's protocol names; mean ± variance over the repeats.",
        "grid": "Train every combination of the settings the manifest's grid lists; one summary table.",
        "baseline": "Train the paper's baseline models on the same split; one table beside the paper's.",
    },
    examples={
        "topo": "medrun topo ph-mci --dataset adni-rsfmri --fixture",
        "analyze": "medrun analyze ph-mci --dataset adni-rsfmri --fixture",
        "cv": "medrun cv ph-mci --dataset adni-rsfmri --fixture",
        "repeat": "medrun repeat ph-mci --dataset adni-rsfmri --fixture",
        "grid": "medrun grid ph-mci --dataset adni-rsfmri --fixture",
        "baseline": "medrun baseline ph-mci --dataset adni-rsfmri --fixture",
    },
)
