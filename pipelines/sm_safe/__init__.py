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
)
