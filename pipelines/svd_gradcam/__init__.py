"""svd-gradcam: SVD-Grad-CAM saliency maps for a DenseNet-169 MURA elbow classifier (card: docs/papers/svd-gradcam.md).

The manifest lives in ``config.py``, the method in ``pipeline.py``, the explain stage in ``explain.py`` (the CAM
methods in ``cams.py``), the paper's tables in ``paper.yaml``.
"""

from medrun.pipelines import PipelineSpec

SPEC = PipelineSpec(
    slug="svd-gradcam",
    title="SVD-Grad-CAM",
    paper="SVD-Grad-CAM: Singular Value Decomposition filtered Gradient Weighted Class Activation Map (Thota et al.)",
    card="svd-gradcam",
    datasets=("mura", "imagefolder"),
    stages=("train", "eval", "predict", "explain"),
    manifest="medrun.pipelines.svd_gradcam.config:SvdGradCamManifest",
    impl="medrun.pipelines.svd_gradcam.pipeline:SvdGradCam",
    parents={"eval": "train", "predict": "train", "explain": "train"},
    stage_help={
        "explain": "Explain a finished train run (--run ID or --checkpoint FILE): maps as .npy, overlays, "
                   "per-image CSV.",
    },
    examples={
        "explain": "medrun explain svd-gradcam --dataset mura --fixture",
    },
)
