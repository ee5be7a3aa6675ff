"""sc-unext: SC-UNeXt, lightweight 2D lesion segmentation (docs/papers/sc-unext.md).

The manifest lives in ``config.py``, the method in ``pipeline.py``.
"""

from medrun.pipelines import PipelineSpec

SPEC = PipelineSpec(
    slug="sc-unext",
    title="SC-UNeXt",
    paper="Advanced Medical Image Segmentation with Multi-Scale Feature Fusion and Attention Mechanisms (SC-UNeXt)",
    card="sc-unext",
    datasets=("isic2018", "montgomery", "pairs"),
    stages=("train", "eval", "predict", "repeat", "ablate", "complexity"),
    manifest="medrun.pipelines.sc_unext.config:ScUnextManifest",
    impl="medrun.pipelines.sc_unext.pipeline:ScUnext",
    parents={"eval": "train", "predict": "train"},
    stage_help={
        "repeat": "The card's random 80/20 split × 3 split seeds: one train run per seed, mean and variance.",
        "ablate": "Run the paper's ablation table: every variant the manifest lists (dotted overrides), one summary "
                  "table.",
        "complexity": "Count parameters and multiply-accumulates of the card's models beside the paper's table.",
    },
    examples={
        "repeat": "medrun repeat sc-unext --dataset isic2018 --fixture",
        "ablate": "medrun ablate sc-unext --dataset isic2018 --fixture",
        "complexity": "medrun complexity sc-unext --dataset isic2018 --fixture",
    },
)
