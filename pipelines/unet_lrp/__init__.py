"""unet-lrp: layer-wise relevance propagation on U-Nets (paper notes: docs/papers/unet-lrp.md).

The manifest lives in ``config.py``, the method in ``pipeline.py`` (the explain and lrp-stats stages in
``explain.py``, the compare stage in ``compare.py``), the paper's figures and notes in ``paper.yaml``.
"""

from medrun.pipelines import PipelineSpec

SPEC = PipelineSpec(
    slug="unet-lrp",
    title="LRP on U-Nets",
    paper="Applying Layer-Wise Relevance Propagation on U-Net Architectures",
    card="unet-lrp",
    datasets=("montgomery", "shenzhen", "cityscapes", "pairs"),
    stages=("train", "eval", "predict", "explain", "lrp-stats", "compare"),
    manifest="medrun.pipelines.unet_lrp.config:UnetLrpManifest",
    impl="medrun.pipelines.unet_lrp.pipeline:UnetLrp",
    parents={"eval": "train", "predict": "train", "explain": "train", "lrp-stats": "train"},
    stage_help={
        "explain": "LRP relevance maps of a finished train run (--run ID or --checkpoint FILE): .npy maps, "
                   "overlays, per-image CSV.",
        "lrp-stats": "Relevance statistics of a finished train run (max |R| with and without the residual fix, "
                     "conservation, relevance inside the object).",
        "compare": "The paper's comparison: U-Net, residual U-Net and U-Net++ each with batch and instance norm, "
                   "one train run per variant, Dice and relevance statistics in one table.",
    },
    examples={
        "predict": "medrun predict unet-lrp --dataset montgomery --fixture -o predict.input=path/to/images",
        "explain": "medrun explain unet-lrp --dataset montgomery --fixture",
        "lrp-stats": "medrun lrp-stats unet-lrp --dataset montgomery --fixture",
        "compare": "medrun compare unet-lrp --dataset montgomery --fixture\n\n"
                   "  medrun compare unet-lrp --dataset montgomery --data-dir ~/MontgomerySet "
                   "-o 'compare.archs=[unet,resunet]'",
    },
)
