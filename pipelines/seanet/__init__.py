"""seanet: SEANet (CTformer + Spectral Residual Units) for low-dose CT denoising (docs/papers/seanet.md).

The manifest lives in ``config.py``, the method in ``pipeline.py``, the extra stages in ``denoise.py`` and
``spectral.py``.
"""

from medrun.pipelines import PipelineSpec

SPEC = PipelineSpec(
    slug="seanet",
    title="SEANet",
    paper="SEANet: Rethinking Skip-Connections Design in Encoder-Decoder Networks via Synergistic Spatial-Spectral "
          "Fusion for LDCT Denoising",
    card="seanet",
    datasets=("mayo",),
    stages=("train", "eval", "denoise", "spectral-map"),
    manifest="medrun.pipelines.seanet.config:SeanetManifest",
    impl="medrun.pipelines.seanet.pipeline:Seanet",
    parents={"eval": "train", "denoise": "train", "spectral-map": "train"},
    stage_help={
        "denoise": "Denoise low-dose CT slices (DICOM .IMA/.dcm or .npy) with a finished train run; writes denoised "
                   "DICOM / .npy in the same units (HU preserved).",
        "spectral-map": "Fig. 6: log-magnitude spectra of LDCT, output and NDCT, and of the SRUs' global-branch "
                        "features, for test slices.",
    },
    examples={
        "train": "medrun train seanet --dataset mayo --fixture\n\n"
                 "  medrun train seanet --dataset mayo --data-dir ~/data/Mayo2016 -o model.arch=ctformer\n\n"
                 "  medrun train seanet --dataset mayo --accelerator gpu --precision bf16-mixed",
        "eval": "medrun eval seanet --dataset mayo --fixture",
        "denoise": "medrun denoise seanet --dataset mayo --fixture -o denoise.input=path/to/L506/quarter_3mm",
        "spectral-map": "medrun spectral-map seanet --dataset mayo --fixture",
    },
    no_export="a MONAI bundle would need SEANet's sliding-window tiling and the HU normalisation in its config; "
              "the `denoise` stage is the supported way to apply a trained model",
)
