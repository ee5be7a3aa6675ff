"""drivpocket: DRIVPocket, dual-stream rotation-invariant binding-site prediction (card: docs/papers/drivpocket.md).

The manifest lives in ``config.py``; the grids, point sets, fusion and pocket extraction in ``geometry.py``; the
content-addressed caches and the ``preprocess`` stage in ``preprocess.py``; the method in ``pipeline.py``.
"""

from medrun.pipelines import PipelineSpec

SPEC = PipelineSpec(
    slug="drivpocket",
    title="DRIVPocket",
    paper="DRIVPocket: A Dual-stream Rotation Invariance in Feature Sampling and Voxel Fusion Approach for Protein "
          "Binding Site Prediction",
    card="drivpocket",
    datasets=("scpdb", "coach420", "holo4k", "sc6k", "pdbbind"),
    stages=("preprocess", "train", "eval", "predict"),
    manifest="medrun.pipelines.drivpocket.config:DrivPocketManifest",
    impl="medrun.pipelines.drivpocket.pipeline:DrivPocket",
    parents={"eval": "train", "predict": "train"},
    stage_help={
        "preprocess": "Parse every protein and grid every site into the content-addressed cache (atom sets, 14-channel "
                      "density grids, pocket labels); resumes where it stopped, a second run computes nothing.",
    },
    examples={
        "preprocess": "medrun preprocess drivpocket --dataset scpdb --fixture",
        "train": "medrun train drivpocket --dataset scpdb --fixture\n\n"
                 "  medrun train drivpocket --dataset scpdb --data-dir ~/scPDB "
                 "-o dataset.split_lists=[seg_scPDB_train0_96.types,seg_scPDB_test0_96.types]",
        "eval": "medrun eval drivpocket --dataset scpdb --fixture\n\n"
                "  medrun eval drivpocket --dataset coach420 --data-dir ~/p2rank-datasets --run <scpdb train run> "
                "-o eval.candidates=coach420_candidates.csv",
        "predict": "medrun predict drivpocket --dataset scpdb --fixture -o predict.input=path/to/protein.pdb",
    },
    no_export="the input is a protein (atoms typed into a density grid and a point set cut around candidate centres), "
              "which MONAI bundles (images in, images out) do not describe; the weights are in "
              "checkpoints/model.safetensors",
)
