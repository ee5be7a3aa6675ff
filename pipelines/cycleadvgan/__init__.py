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
)
