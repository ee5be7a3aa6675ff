"""ad-lite: AD-Lite Net, Alzheimer's stage from single MRI slices (card: shared/papers/ad-lite.md).

The manifest lives in ``config.py``, the method in ``pipeline.py``.
"""

from medrun.pipelines import PipelineSpec

SPEC = PipelineSpec(
    slug="ad-lite",
    title="AD-Lite Net",
    paper="AD-Lite Net: A Lightweight and Concatenated CNN Model for Alzheimer's Detection from MRI Images (ICPR 2024)",
    card="ad-lite",
    datasets=("ad", "adni", "oasis", "merged"),
    stages=("train", "eval", "predict", "cv"),
    manifest="medrun.pipelines.ad_lite.config:AdLiteManifest",
    impl="medrun.pipelines.ad_lite.pipeline:AdLite",
)
