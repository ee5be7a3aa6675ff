"""cmu-net: CMU-Net, a U-Net with Mamba and CBAM for sub-cellular segmentation (docs/papers/cmu-net.md).

The manifest lives in ``config.py``, the method in ``pipeline.py``.
"""

from medrun.pipelines import PipelineSpec

SPEC = PipelineSpec(
    slug="cmu-net",
    title="CMU-Net",
    paper="Sinha & Sekh, Attention Seekers U-Net with Mamba for Sub-cellular Segmentation (CMU-Net)",
    card="cmu-net",
    datasets=("sekh-mito", "luo-er", "luo-mito"),
    stages=("train", "eval", "predict", "morphology", "ablate"),
    manifest="medrun.pipelines.cmu_net.config:CmuNetManifest",
    impl="medrun.pipelines.cmu_net.pipeline:CmuNet",
    parents={"eval": "train", "predict": "train", "morphology": "train"},
    stage_help={
        "morphology": "Count and measure the objects in a finished train run's predicted masks against the ground "
                      "truth.",
        "ablate": "Run the paper's ablation table: every variant the manifest lists (dotted overrides), one summary "
                  "table.",
    },
    examples={
        "morphology": "medrun morphology cmu-net --dataset sekh-mito --fixture",
        "ablate": "medrun ablate cmu-net --dataset sekh-mito --fixture",
    },
)
