"""epilepsy-mtl: cross-stitch multitask CNN classifying HFO and IED images together (card:
shared/papers/epilepsy-mtl.md).

The manifest lives in ``config.py``, the method in ``pipeline.py`` (saliency maps in ``explain.py``, segment rendering in ``render.py``).
"""

from medrun.pipelines import PipelineSpec

SPEC = PipelineSpec(
    slug="epilepsy-mtl",
    title="Cross-stitch multitask HFO + IED classifier",
    paper="Multi-modal Multitask Learning Model for Simultaneous Classification of Two Epilepsy Biomarkers "
          "(Broti et al., ICPR 2024)",
    card="epilepsy-mtl",
    datasets=("ncnp-ecog",),
    stages=("train", "eval", "predict", "cv", "ablate", "explain", "render"),
    manifest="medrun.pipelines.epilepsy_mtl.config:EpilepsyMtlManifest",
    impl="medrun.pipelines.epilepsy_mtl.pipeline:EpilepsyMtl",
    parents={"eval": "train", "predict": "train", "explain": "train"},
    stage_help={
        "cv": "Cross-validate (k folds, as the pipeline's card says); writes per-fold metrics and mean ± sd.",
        "ablate": "Run the paper's ablation table: every variant the manifest lists (dotted overrides), one summary table.",
        "explain": "Explain a finished train run (--run ID or --checkpoint FILE): maps as .npy, overlays, per-image CSV.",
        "render": "Render raw signal segments into the images the pipeline reads (epilepsy-mtl: HFO wavelet maps, IED traces).",
    },
    examples={
        "cv": "medrun cv epilepsy-mtl --dataset ncnp-ecog --fixture",
        "ablate": "medrun ablate epilepsy-mtl --dataset ncnp-ecog --fixture",
        "explain": "medrun explain epilepsy-mtl --dataset ncnp-ecog --fixture",
        "render": "medrun render epilepsy-mtl --dataset ncnp-ecog --fixture",
    },
)
