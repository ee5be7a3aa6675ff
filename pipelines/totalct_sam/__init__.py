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
    stages=("train", "eval", "predict", "ablate", "baselines", "zeroshot"),
    manifest="medrun.pipelines.totalct_sam.config:TotalCTSamManifest",
    impl="medrun.pipelines.totalct_sam.pipeline:TotalCTSam",
    stage_help={
        "ablate": "Table 3: TotalCT-SAM with and without the memorizing block, one train run each, as one paired "
                  "table beside the paper's.",
        "baselines": "Table 1: one train run per baselines.archs (totalct-sam, unetr, swinunetr) on the same split, "
                     "plus SAM-Med3D zero-shot, beside the paper's table.",
        "zeroshot": "Table 1's SAM-Med3D row: SAM-Med3D without fine-tuning, clicked per structure "
                    "(model.sammed3d_checkpoint, else random init).",
    },
    examples={
        "ablate": "medrun ablate totalct-sam --dataset totalsegmentator --fixture",
        "baselines": "medrun baselines totalct-sam --dataset totalsegmentator --fixture\n\n"
                     "  medrun train totalct-sam --dataset totalsegmentator --data-dir DIR -o model.arch=unetr "
                     "-o train.lr_new=1e-4",
        "zeroshot": "medrun zeroshot totalct-sam --dataset totalsegmentator --data-dir DIR "
                    "-o model.sammed3d_checkpoint=sam_med3d.pth",
    },
    no_export="Its output is a whole-CT label volume from sliding-window inference (or a mask from a click), which "
              "a bundle's per-file JSON predictions cannot carry.",
)
