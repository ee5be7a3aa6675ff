"""counterfactual-ldm: CDCT, counterfactual trajectories with a latent diffusion model for concept discovery
(card: docs/papers/counterfactual-ldm.md).

The manifest lives in ``config.py``; f_φ, concepts and captions in ``pipeline.py``; the LDM in ``ldm.py``; the
guided sampler in ``generate.py``; the concept VAE in ``concept_vae.py``; Algorithm 1 in ``discover.py``; Table 1 in
``evaluate.py``; the whole chain in ``reproduce.py``.
"""

from medrun.pipelines import PipelineSpec

SPEC = PipelineSpec(
    slug="counterfactual-ldm",
    title="CDCT: counterfactual trajectories with a latent diffusion model",
    paper="Generating Counterfactual Trajectories with Latent Diffusion Models for Concept Discovery (CDCT)",
    card="counterfactual-ldm",
    datasets=("isic2019",),
    stages=("train-classifier", "train-concepts", "caption", "finetune-ldm", "generate", "train-vae", "discover",
            "eval", "reproduce"),
    manifest="medrun.pipelines.counterfactual_ldm.config:CounterfactualLdmManifest",
    impl="medrun.pipelines.counterfactual_ldm.pipeline:CounterfactualLdm",
    parents={"train-concepts": "train-classifier", "caption": "train-concepts", "finetune-ldm": "caption",
             "generate": "finetune-ldm", "train-vae": "generate", "discover": "train-vae", "eval": "finetune-ldm"},
    stage_help={
        "train-classifier": "Train f_φ (ResNet50, 8 ISIC classes; best epoch by val balanced accuracy).",
        "train-concepts": "Fine-tune a copy of f_φ on the six dermoscopic concepts of concepts.csv (blank = unknown).",
        "caption": "Write a caption per image: diagnosis + concepts present (annotation, else the concept head).",
        "finetune-ldm": "Fine-tune the latent diffusion model on the captions (SD 2.1 from finetune_ldm.sd_path, or "
                        "the card's tiny configs).",
        "generate": "Classifier-guided counterfactual trajectories toward every other class (generate.*: targets, "
                    "guided_steps, lambda_c, conditional, subset).",
        "train-vae": "Train the concept VAE on every trajectory image of a generate run.",
        "discover": "Algorithm 1: rank (latent dim, value) pairs by the mean rise of p(class); success rates.",
        "eval": "Table 1: L1, L2, flip ratio and FID (with user Inception weights) of MEL↔NV test counterfactuals.",
        "reproduce": "Run the whole chain (each stage a run of its own, reused when complete) and summarise it.",
    },
    examples={
        "train-classifier": "medrun train-classifier counterfactual-ldm --dataset isic2019 --fixture",
        "generate": "medrun generate counterfactual-ldm --dataset isic2019 --fixture -o generate.lambda_c=4\n\n"
                    "  medrun generate counterfactual-ldm --dataset isic2019 --data-dir ~/isic -o "
                    "finetune_ldm.sd_path=~/sd-2-1 -o generate.subset=100",
        "eval": "medrun eval counterfactual-ldm --dataset isic2019 --fixture",
        "reproduce": "medrun reproduce counterfactual-ldm --dataset isic2019 --fixture",
    },
    no_export="a chain of four models (f_φ, concept head, latent diffusion model, concept VAE) and a guided sampler; "
              "no single network to bundle as a MONAI predictor",
)
