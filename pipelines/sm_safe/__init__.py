"""sm-safe: SM-SAFE, multi-modal fusion + attentive structural encoding + U-Net on the MSD tasks
(card: shared/papers/sm-safe.md).

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
        "cv": "Cross-validate (k folds, as the pipeline's card says); writes per-fold metrics and mean ± sd.",
        "fuse-maps": "Write a finished train run's per-modality fusion weight maps (NIfTI) and their means per label.",
        "summarize": "Summarise a finished multi-task train run: mean ± sd across its tasks.",
        "ablate": "Run the paper's ablation table: every variant the manifest lists (dotted overrides), one summary table.",
    },
    examples={
        "cv": "medrun cv sm-safe --dataset msd --fixture",
        "fuse-maps": "medrun fuse-maps sm-safe --dataset msd --fixture",
        "summarize": "medrun summarize sm-safe --dataset msd --fixture",
        "ablate": "medrun ablate sm-safe --dataset msd --fixture",
    },
)
