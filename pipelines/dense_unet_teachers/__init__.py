"""dense-unet-teachers: Enhanced 3D Dense U-Net with two independent teachers
(card: docs/papers/dense-unet-teachers.md).

The manifest lives in ``config.py``, the network wiring, teachers and evaluation in ``pipeline.py``, the fusion
model and its fusion events (Eq. 4–5) in ``fusion.py``, the Analyze/NIfTI predictions in ``predict.py``.
"""

from medrun.pipelines import PipelineSpec

SPEC = PipelineSpec(
    slug="dense-unet-teachers",
    title="Dense U-Net with two independent teachers",
    paper="Enhanced 3D Dense U-Net with Two Independent Teachers for Infant Brain Image Segmentation",
    card="dense-unet-teachers",
    datasets=("iseg2017", "mrbrains13"),
    stages=("train-teacher", "fuse", "eval", "predict", "loo"),
    manifest="medrun.pipelines.dense_unet_teachers.config:DenseUnetTeachersManifest",
    impl="medrun.pipelines.dense_unet_teachers.pipeline:DenseUnetTeachers",
    parents={"eval": "fuse", "predict": "fuse"},
    stage_help={
        "train-teacher": "Train one single-modality teacher (teacher.modality t1 or t2) on random 3D patches; scores "
                         "the validation subject (Dice CSF/GM/WM).",
        "fuse": "Train (or reuse) both teachers, then the two-channel fusion model with fusion events "
                "(Eq. 4 on every trainable tensor, α from Eq. 5); scores the validation subject, logs every α.",
        "loo": "Leave-one-out over the labelled subjects (MRBrainS13's five): one fuse run per held-out subject, "
               "mean and sd of the tissue Dice.",
    },
    examples={
        "train-teacher": "medrun train-teacher dense-unet-teachers --dataset iseg2017 --fixture -o teacher.modality=t2",
        "fuse": "medrun fuse dense-unet-teachers --dataset iseg2017 --fixture\n\n"
                "  medrun fuse dense-unet-teachers --dataset iseg2017 --data-dir ~/iSEG2017 -o fusion.alpha=const:0.6",
        "loo": "medrun loo dense-unet-teachers --dataset mrbrains13 --fixture",
        "predict": "medrun predict dense-unet-teachers --dataset iseg2017 --fixture "
                   "-o predict.input=path/to/iSeg-2017-Testing",
    },
    no_export="a MONAI bundle describes one network on one input; this run's model needs the cropping to the "
              "brain, per-volume z-scoring of two co-registered modalities and the iSEG label values around it; the "
              "weights are in checkpoints/model.safetensors",
)
