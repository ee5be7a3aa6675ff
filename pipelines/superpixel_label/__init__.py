"""superpixel-label: superpixel-based sparse labelling with gap filling, then a U-Net (docs/papers/superpixel-label.md).

The manifest lives in ``config.py``; the annotation method in ``method.py``; training and evaluation in
``pipeline.py``; the ``annotate`` and ``gap-stats`` stages in ``annotate.py``; ``table1`` in ``table1.py``.
"""

from medrun.pipelines import PipelineSpec

SPEC = PipelineSpec(
    slug="superpixel-label",
    title="Superpixel-based sparse labelling (SLIC / SEEDS / SNIC, gap filling, U-Net)",
    paper="Superpixel-Based Sparse Labeling for Efficient and Certain Medical Image Annotation",
    card="superpixel-label",
    datasets=("isic2018", "cxr", "busi"),
    stages=("annotate", "gap-stats", "train", "eval", "table1"),
    manifest="medrun.pipelines.superpixel_label.config:SuperpixelLabelManifest",
    impl="medrun.pipelines.superpixel_label.pipeline:SuperpixelLabel",
    parents={"eval": "train"},
    stage_help={
        "annotate": "Superpixels (SLIC, SEEDS, SNIC-like), simulated sparse labels (whole superpixels inside or "
                    "outside the GT; boundary superpixels skipped) and the gap filled (nofill / dist / rw): pseudo-GT "
                    "PNGs with 255 = ignore, and figures of each fill.",
        "gap-stats": "Tables 2–3: gap pixels N, correctly filled M, E_f and E_b per training image for Dist_fill and "
                     "RW_fill, per superpixel method; checks N = M + E_f + E_b.",
        "table1": "Table 1 as a sweep: a U-Net on the original GT and one per superpixel method × fill (each a train "
                  "run), plus a gap-stats child; test metrics beside the paper's.",
    },
    examples={
        "annotate": "medrun annotate superpixel-label --dataset isic2018 --fixture\n\n"
                    "  medrun annotate superpixel-label --dataset busi --data-dir ~/data/Dataset_BUSI_with_GT "
                    "-o annotate.split=all",
        "gap-stats": "medrun gap-stats superpixel-label --dataset isic2018 --fixture",
        "table1": "medrun table1 superpixel-label --dataset isic2018 --fixture",
    },
    no_export="the paper's contribution is the label generation; a MONAI bundle of one of its U-Nets is not "
              "written (the weights are in each train run's checkpoints/model.safetensors)",
)
