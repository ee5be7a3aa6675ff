"""mrd-flow: MRD detection in flow cytometry with local (GNN) and global (FPS set attention) features
(docs/papers/mrd-flow.md).

The manifest lives in ``config.py``, the method in ``pipeline.py``, the model zoo sweep in ``benchmark.py``.
"""

from medrun.pipelines import PipelineSpec

SPEC = PipelineSpec(
    slug="mrd-flow",
    title="GIN-ST-FPS",
    paper="On the Importance of Local and Global Feature Learning for Automated Measurable Residual Disease "
          "Detection in Flow Cytometry Data (Weijler et al.)",
    card="mrd-flow",
    datasets=("vie", "bln", "bue"),
    stages=("train", "eval", "predict", "benchmark"),
    manifest="medrun.pipelines.mrd_flow.config:MrdFlowManifest",
    impl="medrun.pipelines.mrd_flow.pipeline:MrdFlow",
    parents={"eval": "train", "predict": "train"},
    stage_help={
        "benchmark": "The model zoo of Tables 2–5 (MLP … GIN-ST-FPS): one train run per model and seed, mean ± sd "
                     "of per-sample F1 in one table beside the paper's.",
    },
    examples={
        "train": "medrun train mrd-flow --dataset vie --fixture\n\n"
                 "  medrun train mrd-flow --dataset vie --data-dir ~/flow/vie -o model.arch=st-fps",
        "eval": "medrun eval mrd-flow --dataset vie --fixture\n\n"
                "  medrun eval mrd-flow --dataset bue --fixture --run <vie train run id>   (inter-lab, Table 6)\n\n"
                "  medrun eval mrd-flow --dataset vie -o model.drop_features=[CD10,CD19,CD45]   (Table 7)",
        "predict": "medrun predict mrd-flow --dataset vie --fixture -o predict.input=path/to/samples",
        "benchmark": "medrun benchmark mrd-flow --dataset vie --fixture",
    },
    no_export="a sample is a set of events with a kNN graph built at run time, which MONAI bundles (images in, "
              "images or classes out) do not describe; the weights are in checkpoints/model.safetensors",
)
