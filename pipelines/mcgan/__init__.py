"""mcgan: MCGAN, cross-domain multi-contrast MR synthesis (card: docs/papers/mcgan.md).

The manifest lives in ``config.py``; slicing, tissue masks and the stage wiring in ``pipeline.py``; the two
trainings in ``da.py`` (CycleGAN between the donor's and the recipient's T1) and ``i2i.py`` (the Attention U-Net
from restyled T1 to the donor's contrast); synthesis and the tissue-weighted KL in ``evaluate.py``; the paper's
tables in ``paper.yaml``.
"""

from medrun.pipelines import PipelineSpec

SPEC = PipelineSpec(
    slug="mcgan",
    title="MCGAN",
    paper="Cross-Domain Multi-contrast MR Image Synthesis via Generative Adversarial Network (MCGAN)",
    card="mcgan",
    datasets=("hcp", "ixi", "simons"),
    stages=("slice", "train-da", "train-i2i", "synthesize", "kl-eval"),
    manifest="medrun.pipelines.mcgan.config:McganManifest",
    impl="medrun.pipelines.mcgan.pipeline:Mcgan",
    parents={"synthesize": "train-i2i", "kl-eval": "train-i2i"},
    stage_help={
        "slice": "Volumes → per-volume-max normalised axial slices and CSF/GM/WM masks of the donor and recipient "
                 "(FAST segmentations or multi-Otsu), with figures.",
        "train-da": "Stage 1: CycleGAN between the donor's and the recipient's T1 (unpaired); writes G1 (donor → "
                    "recipient style).",
        "train-i2i": "Stage 2: the Attention U-Net G3 from G1(donor T1) to the donor's contrast (paired, PatchGAN "
                     "+ L1 + VGG); runs or reuses the train-da run of the same manifest first.",
        "synthesize": "On a train-i2i run: the recipient's test T1 → the missing contrast, with attention maps and "
                      "figures.",
        "kl-eval": "On a train-i2i run: the tissue-weighted KL of synthetic vs real histograms (Table 1), against "
                   "copying the T1 and I2I without DA.",
    },
    examples={
        "slice": "medrun slice mcgan --dataset hcp --fixture",
        "train-da": "medrun train-da mcgan --dataset hcp --fixture",
        "train-i2i": "medrun train-i2i mcgan --dataset hcp --fixture",
        "synthesize": "medrun synthesize mcgan --dataset hcp --fixture",
        "kl-eval": "medrun kl-eval mcgan --dataset hcp --fixture",
    },
    no_export="two generators chained across datasets (G1 for training only, G3 for synthesis) with no single "
              "input/output a MONAI bundle describes; use checkpoints/g3.safetensors with models.mcgan",
)
