"""ad-lite: AD-Lite Net, Alzheimer's stage from single MRI slices (card: shared/papers/ad-lite.md).

The manifest lives in ``config.py``, the method in ``pipeline.py``.
"""

from medrun.pipelines import PipelineSpec

SPEC = PipelineSpec(
    slug="ad-lite",
    title="AD-Lite Net",
    paper="AD-Lite Net: A Lightweight and Concatenated CNN Model for Alzheimer's Detection from MRI Images (ICPR 2024)",
    card="ad-lite",
    datasets=("ad", "adni", "oasis", "merged", "imagefolder"),
    stages=("train", "eval", "predict", "cv", "ablate", "baselines"),
    manifest="medrun.pipelines.ad_lite.config:AdLiteManifest",
    impl="medrun.pipelines.ad_lite.pipeline:AdLite",
    stage_help={
        "cv": "10-fold stratified cross-validation (Table 3): one train run per fold, mean ± sd over folds.",
        "ablate": "Table 2: AD-Lite Net with and without the parallel concatenation block, one train run each, "
                  "beside the paper's ablation.",
        "baselines": "Table 1: one train run per baselines.archs (adlite, densenet121, mobilenet_v2, vgg16, xception; "
                     "random init or baselines.weights), beside the paper's table.",
    },
    examples={
        "train": "medrun train ad-lite --dataset oasis --fixture\n\n"
        "  medrun train ad-lite --dataset oasis --data-dir ~/kaggle/imagesoasis/Data -o train.epochs=3\n\n"
        "  medrun train ad-lite --dataset ad --accelerator gpu --devices 2 --strategy ddp --precision bf16-mixed",
        "eval": "medrun eval ad-lite --dataset oasis --fixture --split test\n\n"
        "  medrun eval ad-lite --dataset oasis --run 3fa9c2\n\n"
        "  medrun eval ad-lite --dataset oasis --checkpoint weights.safetensors",
        "predict": "medrun predict ad-lite --dataset oasis --fixture -o predict.input=path/to/images",
        "cv": "medrun cv ad-lite --dataset merged --fixture",
        "ablate": "medrun ablate ad-lite --dataset ad --fixture\n\n"
                  "  medrun ablate ad-lite --dataset ad --data-dir ~/kaggle/\"Alzheimer_s Dataset\"",
        "baselines": "medrun baselines ad-lite --dataset ad --fixture -o 'baselines.archs=[adlite,mobilenet_v2]'\n\n"
                     "  medrun train ad-lite --dataset ad --data-dir … -o model.arch=densenet121 "
                     "-o model.weights=densenet121.pth",
    },
)
