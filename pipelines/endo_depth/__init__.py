"""endo-depth: DVTwin, self-supervised siamese-ViT depth for endoscopy (docs/papers/endo-depth.md).

The manifest lives in ``config.py``, the method in ``pipeline.py`` (losses and warping in ``method.py``).
"""

from medrun.pipelines import PipelineSpec

SPEC = PipelineSpec(
    slug="endo-depth",
    title="DVTwin (endo-depth)",
    paper="Self-supervised Siamese Network Using Vision Transformer for Depth Estimation in Endoscopic Surgeries "
          "(DVTwin)",
    card="endo-depth",
    datasets=("hamlyn", "scared"),
    stages=("train", "eval", "finetune", "predict"),
    manifest="medrun.pipelines.endo_depth.config:EndoDepthManifest",
    impl="medrun.pipelines.endo_depth.pipeline:EndoDepth",
    parents={"eval": "train", "predict": "train", "finetune": "train"},
    stage_help={
        "finetune": "Fine-tune a finished train run (e.g. the Hamlyn model, --run ID) on SCARED's training subjects, "
                    "then score SCARED's test subjects.",
    },
    examples={
        "finetune": "medrun finetune endo-depth --dataset scared --fixture --run <hamlyn train run id>",
        "predict": "medrun predict endo-depth --dataset hamlyn -o predict.input=frame.jpg",
    },
    no_export="the model takes a stereo pair (a sheared copy of the frame at inference) and returns disparity that "
              "needs the train run's median scale to become mm; a MONAI bundle's single-input inference does not "
              "express that",
)
