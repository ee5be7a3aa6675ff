"""sm-safe: SM-SAFE, multi-modal fusion + attentive structural encoding + U-Net on the MSD tasks
(card: docs/papers/sm-safe.md).

The manifest lives in ``config.py``, the method in ``pipeline.py``.
"""

from medrun.pipelines import PipelineSpec

SPEC = PipelineSpec(
    slug="sm-safe",
    title="SM-SAFE",
    paper="Deep Semantic Segmentation of Biomedical Imagery via Multi-modal Fusion and Attentive Structural Encoding "
          "(SM-SAFE)",
    card="sm-safe",
    datasets=("msd",),
    stages=("train", "eval", "predict", "cv", "fuse-maps", "summarize", "ablate"),
    manifest="medrun.pipelines.sm_safe.config:SmSafeManifest",
    impl="medrun.pipelines.sm_safe.pipeline:SmSafe",
    parents={"eval": "train", "predict": "train", "fuse-maps": "train", "summarize": "train"},
    stage_help={
        "cv": "Patient-level k-fold CV: one train run per fold (reused when complete), out-of-fold means and per-fold "
              "mean ± sd.",
        "fuse-maps": "Write a finished train run's per-modality fusion weight maps (NIfTI) and their means per label.",
        "summarize": "Summarise a finished multi-task train run: mean ± sd across its tasks.",
        "ablate": "The paper's Table 1: one train run per variant in ablate.variants (dotted overrides), one table.",
    },
    no_export="A train run holds one network per MSD task, each with its own modalities and classes, not the one "
              "network a bundle carries.",
    examples={
        "cv": "medrun cv sm-safe --dataset msd --fixture",
        "fuse-maps": "medrun fuse-maps sm-safe --dataset msd --fixture",
        "summarize": "medrun summarize sm-safe --dataset msd --fixture",
        "ablate": "medrun ablate sm-safe --dataset msd --fixture",
    },
)
