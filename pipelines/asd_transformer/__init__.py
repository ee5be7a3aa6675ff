"""asd-transformer: attention transformer on ABIDE functional connectivity for autism (card:
docs/papers/asd-transformer.md).

The manifest lives in ``config.py``, the method in ``pipeline.py``, the feature steps (ComBat, local efficiency)
and their cache in ``features.py``, the figures in ``figures.py``, ``ablate`` in ``ablate.py``, ``baselines`` in
``baselines.py``, the paper's tables in ``paper.yaml``.
"""

from medrun.pipelines import PipelineSpec

SPEC = PipelineSpec(
    slug="asd-transformer",
    title="ASD attention transformer",
    paper="An Attention Transformer-Based Method for the Modelling of Functional Connectivity and the Diagnosis of "
          "Autism Spectrum Disorder (ICPR 2024)",
    card="asd-transformer",
    datasets=("abide", "abide-pcp"),
    stages=("train", "eval", "predict", "ablate", "prepare", "baselines"),
    manifest="medrun.pipelines.asd_transformer.config:AsdTransformerManifest",
    impl="medrun.pipelines.asd_transformer.pipeline:AsdTransformerPipeline",
    stage_help={
        "ablate": "Table 2: each of ablate.variants is a train run of its own (reused when complete); one table.",
        "baselines": "Table 1: one train run per baselines.archs (brainnetcnn, fbnetgen, bnt, the proposed model) on "
                     "the same splits; one table beside the paper's rows.",
        "prepare": "FC → ComBat → local efficiency → community order, written as features.npz with the checks.",
    },
    examples={
        "ablate": "medrun ablate asd-transformer --dataset abide --fixture",
        "prepare": "medrun prepare asd-transformer --dataset abide --fixture",
        "baselines": "medrun baselines asd-transformer --dataset abide --fixture\n\n"
                     "  medrun train asd-transformer --dataset abide --data-dir … -o model.arch=bnt "
                     "-o preprocess.combat=false -o preprocess.nle=false",
    },
    no_export="the input is a subject's connectivity after ComBat across the whole cohort's sites, not one image",
)
