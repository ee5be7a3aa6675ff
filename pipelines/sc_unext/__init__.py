"""sc-unext: SC-UNeXt, lightweight 2D lesion segmentation (card: shared/papers/sc-unext.md).

The manifest lives in ``config.py``, the method in ``pipeline.py``.
"""

from medrun.pipelines import PipelineSpec

SPEC = PipelineSpec(
    slug="sc-unext",
    title="SC-UNeXt",
    paper="Advanced Medical Image Segmentation with Multi-Scale Feature Fusion and Attention Mechanisms (SC-UNeXt)",
    card="sc-unext",
    datasets=("isic2018", "montgomery"),
    stages=("train", "eval", "predict", "repeat", "ablate", "complexity"),
    manifest="medrun.pipelines.sc_unext.config:ScUnextManifest",
    impl="medrun.pipelines.sc_unext.pipeline:ScUnext",
    parents={"eval": "train", "predict": "train"},
)
