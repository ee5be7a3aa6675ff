"""cycleadvgan: CycleAdvGAN, a texture-manipulation attack on medical image classifiers (card:
shared/papers/cycleadvgan.md).

The manifest lives in ``config.py``, the method in ``pipeline.py``.
"""

from medrun.pipelines import PipelineSpec

SPEC = PipelineSpec(
    slug="cycleadvgan",
    title="CycleAdvGAN",
    paper="Medical Image Classification Attack Based on Texture Manipulation (ICPR 2024)",
    card="cycleadvgan",
    datasets=("isic2020", "chestxray"),
    stages=("train", "eval", "predict", "attack", "transfer", "sweep-lambda"),
    manifest="medrun.pipelines.cycleadvgan.config:CycleAdvGanManifest",
    impl="medrun.pipelines.cycleadvgan.pipeline:CycleAdvGan",
    parents={"eval": "train", "predict": "train", "attack": "train", "transfer": "train", "sweep-lambda": "train"},
    stage_help={
        "attack": "Attack a finished train run's model (--run ID or --checkpoint FILE): adversarial images and success rates.",
        "transfer": "Attack every target model with every source model's adversarial images: the source x target table.",
        "sweep-lambda": "Attack once per value of the adversarial weight the manifest lists; one table and a plot.",
    },
    examples={
        "attack": "medrun attack cycleadvgan --dataset isic2020 --fixture",
        "transfer": "medrun transfer cycleadvgan --dataset isic2020 --fixture",
        "sweep-lambda": "medrun sweep-lambda cycleadvgan --dataset isic2020 --fixture",
    },
)
