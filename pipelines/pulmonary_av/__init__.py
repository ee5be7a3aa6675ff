"""pulmonary-av: pulmonary artery/vein segmentation with a classical prior, EA-U-Net and ASE
(card: docs/papers/pulmonary-av.md).

The manifest lives in ``config.py``; the networks, training and evaluation in ``pipeline.py``; Stage 1a and ASE
(the geometry: isosurfaces, skeletons, frustums) in ``geometry.py``; the ``prior``, ``refine``,
``count-terminals`` and ``predict`` stages in ``stages.py``.
"""

from medrun.pipelines import PipelineSpec

SPEC = PipelineSpec(
    slug="pulmonary-av",
    title="Pulmonary artery/vein segmentation: marching-cubes prior, EA-U-Net and ASE",
    paper="Fusion of Machine Learning and Deep Neural Networks for Pulmonary Arteries and Veins Segmentation in "
          "Lung Cancer Surgery Planning",
    card="pulmonary-av",
    datasets=("pulmonary_av",),
    stages=("prior", "train", "eval", "refine", "count-terminals", "predict"),
    manifest="medrun.pipelines.pulmonary_av.config:PulmonaryAvManifest",
    impl="medrun.pipelines.pulmonary_av.pipeline:PulmonaryAv",
    parents={"eval": "train", "predict": "train", "refine": "train"},
    stage_help={
        "prior": "Stage 1a + 1b: the binary vessel prior P = P_in (marching-cubes isosurfaces inside the lungs, no "
                 "learning) ∪ P_out (the prior-net Attention U-Net outside them, trained as a child run); writes "
                 "priors/<id>.nii.gz and the prior's recall of intra- and extrapulmonary vessels.",
        "refine": "Stage 3, ASE on a trained EA-U-Net: connectivity refinement (skeleton ends bridged by frustums "
                  "inside the prior) and classification refinement; metrics and terminal counts before/after, and "
                  "the gap-case check when the data has one.",
        "count-terminals": "Terminal-vessel counts (skeleton endpoints) of label maps: count.input (a folder of "
                           ".nii.gz label maps) or the dataset's labelsTr.",
    },
    examples={
        "prior": "medrun prior pulmonary-av --dataset pulmonary_av --fixture",
        "train": "medrun train pulmonary-av --dataset pulmonary_av --fixture -o train.stage=prior-net\n\n"
                 "  medrun train pulmonary-av --dataset pulmonary_av --data-dir ~/pav -o prior.intensity_offset=0",
        "refine": "medrun refine pulmonary-av --dataset pulmonary_av --fixture",
        "count-terminals": "medrun count-terminals pulmonary-av --dataset pulmonary_av --fixture "
                           "-o count.input=runs/pulmonary-av/refine-<id>/refined",
        "predict": "medrun predict pulmonary-av --dataset pulmonary_av --fixture -o predict.input=path/to/cases",
    },
    no_export="a MONAI bundle describes one network on one input; EA-U-Net needs the vessel prior (marching cubes "
              "inside the lung mask plus a second network outside it) as its second input, and ASE after it; the "
              "weights are in checkpoints/model.safetensors and checkpoints/prior_net.safetensors",
)
