"""totalct-sam: TotalCT-SAM, whole-body CT semantic segmentation with a memorizing transformer
(card: docs/papers/totalct-sam.md).

The manifest lives in ``config.py``, the method in ``pipeline.py``.
"""

from medrun.pipelines import PipelineSpec

SPEC = PipelineSpec(
    slug="totalct-sam",
    title="TotalCT-SAM",
    paper="TotalCT-SAM: A Whole-Body CT Segment Anything Model with Memorizing Transformer",
    card="totalct-sam",
    datasets=("totalsegmentator",),
    stages=("train", "eval", "predict"),
    manifest="medrun.pipelines.totalct_sam.config:TotalCTSamManifest",
    impl="medrun.pipelines.totalct_sam.pipeline:TotalCTSam",
    no_export="Its output is a whole-CT label volume from sliding-window inference (or a mask from a click), which "
              "a bundle's per-file JSON predictions cannot carry.",
)
