"""fusing-forces: human-guided refinement of thin-line masks (engraved Etruscan mirrors) with a second UNet f_iter
that takes the depth patch, the current mask and the user's strokes (docs/papers/fusing-forces.md).

The manifest lives in ``config.py``; the simulated human in ``interaction.py``; data in ``data.py``; the networks,
``train-init``, ``train`` and ``eval`` in ``pipeline.py``; ``prepare``, ``stats``, ``simulate`` and ``refine`` in
modules of their own; the paper's tables in ``paper.yaml``.
"""

from medrun.pipelines import PipelineSpec

SPEC = PipelineSpec(
    slug="fusing-forces",
    title="Fusing Forces (f_init + interactive refinement f_iter)",
    paper="Fusing Forces: Deep-Human-Guided Refinement of Segmentation Masks (Sterzinger et al.)",
    card="fusing-forces",
    datasets=("etmira",),
    stages=("prepare", "stats", "train-init", "train", "eval", "simulate", "refine"),
    manifest="medrun.pipelines.fusing_forces.config:FusingForcesManifest",
    impl="medrun.pipelines.fusing_forces.pipeline:FusingForces",
    parents={"eval": "train", "simulate": "train", "refine": "train"},
    stage_help={
        "prepare": "High-pass + clipping + mirror-masked normalisation of every side, the training tiles and the "
                   "val/test patch split; per-side table and figures.",
        "stats": "Algorithm 1: stroke half-widths (EDT at the skeleton) of the training drawings, μ/σ after the "
                 "2σ cut and the Gamma fit, with a histogram.",
        "train-init": "Train f_init (FlexibleUNet on the depth patch alone); test pFM beside a thresholded "
                      "high-pass baseline.",
        "train": "Train f_iter on [X, Δ, Y] with one simulated stroke per patch (f_init from a train-init run, run or "
                 "reused as a child, or model.init_ckpt); early stopping on val pFM_Δ.",
        "simulate": "Whole-mirror interaction loop (lowest-pFM patch, better of add/erase, refine): curve CSV, "
                    "Table 2 at max pFM_Δ and the workload reduction against manual pasting.",
        "refine": "One patch plus a user-drawn stroke PNG (red = add, blue = erase) → refined mask Y', with "
                  "before/after figures (the annotation use).",
    },
    examples={
        "prepare": "medrun prepare fusing-forces --dataset etmira --fixture",
        "stats": "medrun stats fusing-forces --dataset etmira --data-dir ~/data/ETMIRA",
        "train-init": "medrun train-init fusing-forces --dataset etmira --fixture",
        "simulate": "medrun simulate fusing-forces --dataset etmira --fixture",
        "refine": "medrun refine fusing-forces --dataset etmira --fixture -o refine.side=ANSA-VI-1700_R "
                  "-o refine.x=128 -o refine.y=128 -o refine.strokes=strokes.png",
    },
    no_export="two coupled networks (f_init feeds f_iter) driven by user strokes; a MONAI bundle's single "
              "image-in/mask-out network does not describe it — use `medrun refine`",
)
