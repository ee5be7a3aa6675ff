"""epilepsy-mtl: cross-stitch multitask CNN classifying HFO and IED images together (paper notes:
docs/papers/epilepsy-mtl.md).

The manifest lives in ``config.py``, the method in ``pipeline.py`` (the fold sweeps ``cv`` and ``ablate`` in
``cv.py``, ``baselines`` in ``baselines.py``, saliency maps in ``explain.py``, segment rendering in ``render.py``),
the paper's tables in ``paper.yaml``.
"""

from medrun.pipelines import PipelineSpec

SPEC = PipelineSpec(
    slug="epilepsy-mtl",
    title="Cross-stitch multitask HFO + IED classifier",
    paper="Multi-modal Multitask Learning Model for Simultaneous Classification of Two Epilepsy Biomarkers "
          "(Broti et al., ICPR 2024)",
    card="epilepsy-mtl",
    datasets=("ncnp-ecog",),
    stages=("train", "eval", "predict", "cv", "ablate", "baselines", "explain", "render"),
    manifest="medrun.pipelines.epilepsy_mtl.config:EpilepsyMtlManifest",
    impl="medrun.pipelines.epilepsy_mtl.pipeline:EpilepsyMtl",
    parents={"eval": "train", "predict": "train", "explain": "train"},
    stage_help={
        "cv": "Table 1: one train run per fold of dataset.protocol (cv: 5 stratified folds; lopo: one per patient), "
              "mean ± sd over folds.",
        "ablate": "Fig. 5: the folds once per number of stitch units (ablate.n_stitch: 0, 1, 2), gains beside the "
                  "paper's.",
        "baselines": "Table 2: the folds of dataset.protocol for the proposed model and for the single-task CNN "
                     "(model.task hfo, ied: one stream, one head), beside the paper's Table 2.",
        "explain": "Explain a finished train run (--run ID or --checkpoint FILE): saliency maps of both heads as .npy, "
                   "overlays, per-pair CSV.",
        "render": "Render raw signal segments into the images the pipeline reads (HFO wavelet maps, IED traces).",
    },
    examples={
        "cv": "medrun cv epilepsy-mtl --dataset ncnp-ecog --fixture\n\n"
              "  medrun cv epilepsy-mtl --dataset ncnp-ecog --fixture -o dataset.protocol=lopo",
        "ablate": "medrun ablate epilepsy-mtl --dataset ncnp-ecog --fixture",
        "baselines": "medrun baselines epilepsy-mtl --dataset ncnp-ecog --fixture\n\n"
                     "  medrun train epilepsy-mtl --dataset ncnp-ecog --fixture -o model.task=hfo",
        "explain": "medrun explain epilepsy-mtl --dataset ncnp-ecog --fixture",
        "render": "medrun render epilepsy-mtl --dataset ncnp-ecog --fixture",
    },
    no_export="the network classifies an HFO image and an IED image together (two inputs, paired), which a "
              "single-input MONAI bundle cannot express",
)
