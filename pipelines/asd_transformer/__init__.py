"""asd-transformer: attention transformer on ABIDE functional connectivity for autism (card:
shared/papers/asd-transformer.md).

The manifest lives in ``config.py``, the method in ``pipeline.py``, the feature steps (ComBat, local efficiency)
in ``features.py``.
"""

from medrun.pipelines import PipelineSpec

SPEC = PipelineSpec(
    slug="asd-transformer",
    title="ASD attention transformer",
    paper="An Attention Transformer-Based Method for the Modelling of Functional Connectivity and the Diagnosis of "
          "Autism Spectrum Disorder (ICPR 2024)",
    card="asd-transformer",
    datasets=("abide", "abide-pcp"),
    stages=("train", "eval", "predict", "ablate", "prepare"),
    manifest="medrun.pipelines.asd_transformer.config:AsdTransformerManifest",
    impl="medrun.pipelines.asd_transformer.pipeline:AsdTransformerPipeline",
    stage_help={
        "ablate": "Run the paper's ablation table: every variant the manifest lists (dotted overrides), one summary table.",
        "prepare": "Read and check the raw records (tables, volumes) and write the prepared dataset the other stages use.",
    },
    examples={
        "ablate": "medrun ablate asd-transformer --dataset abide --fixture",
        "prepare": "medrun prepare asd-transformer --dataset abide --fixture",
    },
)
