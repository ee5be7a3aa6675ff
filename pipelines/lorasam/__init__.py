"""lorasam: LoRA adaptation of SAM with text prompts for surgical scene segmentation (card: docs/papers/lorasam.md).

The manifest lives in ``config.py``, the method in ``pipeline.py``.
"""

from medrun.pipelines import PipelineSpec

SPEC = PipelineSpec(
    slug="lorasam",
    title="LoRASAM",
    paper="Low-Rank Adaptation of Segment Anything Model for Surgical Scene Segmentation (Paranjape et al., 2024)",
    card="lorasam",
    datasets=("endovis17", "endovis18", "cholecseg8k"),
    stages=("train", "eval", "predict"),
    manifest="medrun.pipelines.lorasam.config:LorasamManifest",
    impl="medrun.pipelines.lorasam.pipeline:LoraSamPipeline",
    no_export="A run stores only the LoRA/TAL weights over a separate base SAM checkpoint and prompts with class-name "
              "text embeddings, so one network on one image input cannot hold it.",
)
