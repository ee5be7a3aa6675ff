"""cycleadvgan: CycleAdvGAN, a texture-manipulation attack on medical image classifiers (card:
docs/papers/cycleadvgan.md).

The manifest lives in ``config.py``; the target classifier F and the wiring in ``pipeline.py``, the attack in
``attack.py``, the transfer matrix and the λ sweep (sweeps of train and attack runs) in ``sweeps.py``, the paper's
tables in ``paper.yaml``.
"""

from medrun.pipelines import PipelineSpec

SPEC = PipelineSpec(
    slug="cycleadvgan",
    title="CycleAdvGAN",
    paper="Medical Image Classification Attack Based on Texture Manipulation (ICPR 2024)",
    card="cycleadvgan",
    datasets=("isic2020", "chestxray", "imagefolder"),
    stages=("train", "eval", "predict", "attack", "transfer", "sweep-lambda"),
    manifest="medrun.pipelines.cycleadvgan.config:CycleAdvGanManifest",
    impl="medrun.pipelines.cycleadvgan.pipeline:CycleAdvGan",
    parents={"eval": "train", "predict": "train", "attack": "train", "transfer": "train", "sweep-lambda": "train"},
    stage_help={
        "attack": "Attack a finished train run's model (--run ID or --checkpoint FILE): adversarial images and "
                  "success rates.",
        "transfer": "The source x target table: a train run per other model, an attack run per source (reused when "
                    "complete), each source's adversarial images fed to every target.",
        "sweep-lambda": "One attack run per value of the adversarial weight the manifest lists (reused when "
                        "complete); one table and a plot.",
    },
    examples={
        "attack": "medrun attack cycleadvgan --dataset isic2020 --fixture\n\n"
        "  medrun attack cycleadvgan --dataset imagefolder --data-dir data/skin  # two class folders, e.g. "
        "benign/ malignant/",
        "predict": "medrun predict cycleadvgan --run <train id> -o predict.input=new_images/",
        "transfer": "medrun transfer cycleadvgan --dataset isic2020 --fixture",
        "sweep-lambda": "medrun sweep-lambda cycleadvgan --dataset isic2020 --fixture",
    },
)
