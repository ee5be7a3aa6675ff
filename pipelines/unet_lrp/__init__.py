"""unet-lrp: layer-wise relevance propagation on U-Nets (card: shared/papers/unet-lrp.md).

The manifest lives in ``config.py``, the method in ``pipeline.py``.
"""

from medrun.pipelines import PipelineSpec

SPEC = PipelineSpec(
    slug="unet-lrp",
    title="LRP on U-Nets",
    paper="Applying Layer-Wise Relevance Propagation on U-Net Architectures",
    card="unet-lrp",
    datasets=("montgomery", "shenzhen", "cityscapes", "pairs"),
    stages=("train", "eval", "predict", "explain", "lrp-stats"),
    manifest="medrun.pipelines.unet_lrp.config:UnetLrpManifest",
    impl="medrun.pipelines.unet_lrp.pipeline:UnetLrp",
    parents={"eval": "train", "predict": "train", "explain": "train", "lrp-stats": "train"},
    stage_help={
        "explain": "Explain a finished train run (--run ID or --checkpoint FILE): maps as .npy, overlays, per-image CSV.",
        "lrp-stats": "Relevance statistics of a finished train run (max |R|, conservation, relevance inside the object).",
    },
    examples={
        "explain": "medrun explain unet-lrp --dataset montgomery --fixture",
        "lrp-stats": "medrun lrp-stats unet-lrp --dataset montgomery --fixture",
    },
)
