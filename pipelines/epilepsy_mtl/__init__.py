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
)
