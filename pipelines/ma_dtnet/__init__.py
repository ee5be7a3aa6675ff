"""ma-dtnet: MA-DTNet, joint breast-lesion segmentation and benign/malignant classification with morphological
attention (card: shared/papers/ma-dtnet.md).

The manifest lives in ``config.py``, the method in ``pipeline.py``.
"""

from medrun.pipelines import PipelineSpec

SPEC = PipelineSpec(
    slug="ma-dtnet",
    title="MA-DTNet",
    paper="Enhancing Medical Image Analysis with MA-DTNet: A Dual Task Network Guided by Morphological Attention",
    card="ma-dtnet",
    datasets=("busi", "udiat"),
    stages=("train", "eval", "predict", "cv", "ablate"),
    manifest="medrun.pipelines.ma_dtnet.config:MaDtnetManifest",
    impl="medrun.pipelines.ma_dtnet.pipeline:MaDtnet",
)
