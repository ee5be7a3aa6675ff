"""idqce: instance discrimination with quantized contextual embeddings, BYOL pulled toward a frozen VQ-VAE's codes
(card: docs/papers/idqce.md).

The manifest lives in ``config.py``, the method in ``pipeline.py`` (linear evaluation and predict in ``linear.py``,
Grad-CAM in ``explain.py``, figures in ``figures.py``), the paper's tables in ``paper.yaml``.
"""

from medrun.pipelines import PipelineSpec

SPEC = PipelineSpec(
    slug="idqce",
    title="IDQCE",
    paper="IDQCE: Instance Discrimination Learning Through Quantized Contextual Embeddings for Medical Images",
    card="idqce",
    datasets=("nih", "mimic", "vindr", "mured", "odir", "eyepacs"),
    stages=("train-vqvae", "pretrain", "linear-eval", "explain", "predict", "reproduce"),
    manifest="medrun.pipelines.idqce.config:IdqceManifest",
    impl="medrun.pipelines.idqce.pipeline:Idqce",
    parents={"pretrain": "train-vqvae", "linear-eval": "pretrain", "explain": "linear-eval",
             "predict": "linear-eval"},
    stage_help={
        "train-vqvae": "Stage 1: train the VQ-VAE (shallow encoder, codebook K, decoder) on the pre-training images; "
                       "reports reconstruction MSE, its fall and codebook perplexity.",
        "pretrain": "Stage 2: self-supervised pre-training of ResNet f_θ (BYOL + agreement with the frozen VQ-VAE's "
                    "quantized code; -o pretrain.method=byol turns the code term off) on a train-vqvae run.",
        "linear-eval": "Linear probes on the frozen f_θ of a pretrain run at label fractions 1 %, 10 %, 100 % "
                       "(3 subset seeds), plus random-init and ImageNet-init baselines; test macro AUC.",
        "explain": "Grad-CAM heat maps (captum, layer4) of a linear-eval run's 1 % probe on test images.",
        "reproduce": "train-vqvae → pretrain → linear-eval as child runs of one command (the card's smoke run).",
    },
    examples={
        "train-vqvae": "medrun train-vqvae idqce --dataset nih --fixture\n\n"
                       "  medrun train-vqvae idqce --dataset nih --data-dir ~/data/nih -o vqvae.k=512",
        "pretrain": "medrun pretrain idqce --dataset nih --fixture\n\n"
                    "  medrun pretrain idqce --dataset nih --fixture --run VQ_RUN_ID -o pretrain.method=byol",
        "linear-eval": "medrun linear-eval idqce --dataset nih --fixture\n\n"
                       "  medrun linear-eval idqce --dataset nih --run PRETRAIN_ID "
                       "-o linear.init_checkpoint=resnet50-imagenet.pth",
        "explain": "medrun explain idqce --dataset nih --fixture",
        "predict": "medrun predict idqce --dataset nih --fixture -o predict.input=path/to/xrays",
        "reproduce": "medrun reproduce idqce --dataset nih --fixture",
    },
    no_export="the trained artefact is a frozen feature extractor plus per-fraction linear heads chosen at "
              "evaluation time; use linear-eval's checkpoints/model.safetensors (models.idqce.LinearProbe)",
)
