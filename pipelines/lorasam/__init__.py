"""lorasam: LoRA adaptation of SAM with text prompts for surgical scene segmentation (card: docs/papers/lorasam.md).

The manifest lives in ``config.py``, the method in ``pipeline.py``.
"""

from medrun.pipelines import PipelineSpec

SPEC = PipelineSpec(
    slug="lorasam",
    title="LoRASAM",
    paper="Low-Rank Adaptation of Segment Anything Model for Surgical Scene Segmentation (Paranjape et al., 2024)",
    card="lorasam",
    datasets=("endovis17", "endovis18", "cholecseg8k", "chestxdet", "abdominal-us"),
    stages=("train", "eval", "predict", "ablate"),
    manifest="medrun.pipelines.lorasam.config:LorasamManifest",
    impl="medrun.pipelines.lorasam.pipeline:LoraSamPipeline",
    stage_help={
        "ablate": "Tables 4 and 5: one train run per LoRA rank (ablate.ranks) and per tuned-parts variant "
                  "(ablate.components: pos_embed, norms, tal, lora_no_tal, full), beside the paper's ablations.",
    },
    examples={
        "ablate": "medrun ablate lorasam --dataset cholecseg8k --fixture\n\n"
                  "  medrun ablate lorasam --dataset endovis17 --data-dir ~/data/endovis17 "
                  "-o model.sam_checkpoint=sam_vit_b_01ec64.pth -o 'ablate.components=[full]'",
    },
    no_export="A run stores only the LoRA/TAL weights over a separate base SAM checkpoint and prompts with class-name "
              "text embeddings, so one network on one image input cannot hold it.",
)
