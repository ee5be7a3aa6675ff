"""transnet-oct: TransNetOCT, 3D-OCT retinal layer segmentation with a propagated prior shape
(docs/papers/transnet-oct.md).

The manifest lives in ``config.py``, the method in ``pipeline.py``, Algorithm 1 in ``propagate.py``.
"""

from medrun.pipelines import PipelineSpec

SPEC = PipelineSpec(
    slug="transnet-oct",
    title="TransNetOCT",
    paper="TransNetOCT: An Efficient Transformer-Based Model for 3D-OCT Segmentation Using Prior Shape",
    card="transnet-oct",
    datasets=("oct-layers",),
    stages=("train", "eval", "predict", "propagate", "cv"),
    manifest="medrun.pipelines.transnet_oct.config:TransNetOctManifest",
    impl="medrun.pipelines.transnet_oct.pipeline:TransNetOct",
    parents={"eval": "train", "predict": "train"},
    stage_help={
        "propagate": "Algorithm 1: propagate the fovea B-scan's labels to its ±2 neighbours by intensity matching; "
                     "writes the prior maps per patient and their agreement with the labels.",
        "cv": "Patient-wise cross-validation (leave-one-out, or dataset.folds) of every cv.variants entry "
              "(prior / no prior / UNet / FPN): one train run per fold and variant, mean ± sd per layer.",
    },
    examples={
        "propagate": "medrun propagate transnet-oct --dataset oct-layers --fixture",
        "cv": "medrun cv transnet-oct --dataset oct-layers --fixture",
    },
    no_export="the network needs prior maps propagated from a labelled fovea B-scan (Algorithm 1) beside the "
              "B-scans, a preprocessing step a MONAI bundle's transforms cannot express",
)
