"""ma-dtnet: MA-DTNet, joint breast-lesion segmentation and benign/malignant classification with morphological
attention (docs/papers/ma-dtnet.md).

The manifest lives in ``config.py``, the method in ``pipeline.py``.
"""

from medrun.pipelines import PipelineSpec

SPEC = PipelineSpec(
    slug="ma-dtnet",
    title="MA-DTNet",
    paper="Enhancing Medical Image Analysis with MA-DTNet: A Dual Task Network Guided by Morphological Attention",
    card="ma-dtnet",
    datasets=("busi", "udiat", "glas"),
    stages=("train", "eval", "predict", "cv", "ablate"),
    manifest="medrun.pipelines.ma_dtnet.config:MaDtnetManifest",
    impl="medrun.pipelines.ma_dtnet.pipeline:MaDtnet",
    stage_help={
        "cv": "Cross-validate (k folds, as the pipeline's card says); writes per-fold metrics and mean ± sd.",
        "ablate": "Run the paper's ablation table: every variant the manifest lists (dotted overrides), one summary "
                  "table.",
    },
    examples={
        "cv": "medrun cv ma-dtnet --dataset busi --fixture",
        "ablate": "medrun ablate ma-dtnet --dataset busi --fixture",
    },
)
