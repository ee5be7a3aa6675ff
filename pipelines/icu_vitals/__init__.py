"""icu-vitals: vital signs from photos of ICU monitors (card: docs/papers/icu-vitals.md).

The manifest lives in ``config.py``, the method in ``pipeline.py`` (corner regressor), ``extract.py`` (photo →
vitals), ``deskew.py`` (ARP), ``ocr.py`` (engines, ``train-ocr``, ``ocr-bench``) and ``rules.py`` (vital rules).
"""

from medrun.pipelines import PipelineSpec

SPEC = PipelineSpec(
    slug="icu-vitals",
    title="ICU monitor vitals",
    paper="Extracting Vitals from ICU Monitor Images: An Insight from Analysis of 10K Patient Data",
    card="icu-vitals",
    datasets=("icu-monitors",),
    stages=("train", "eval", "extract", "deskew", "train-ocr", "ocr-bench"),
    manifest="medrun.pipelines.icu_vitals.config:IcuVitalsManifest",
    impl="medrun.pipelines.icu_vitals.pipeline:IcuVitals",
    parents={"eval": "train", "extract": "train"},
    stage_help={
        "extract": "Photo → JSON of HR, SpO2, RR, SBP/DBP, MAP and the ECG trace (deskew, corners, crop, OCR, rules).",
        "deskew": "Estimate each photo's skew with adaptive radial projection and write the deskewed images "
                  "(and, with deskew.check, recover synthetic ±10° rotations).",
        "train-ocr": "Train the tiny CRNN + CTC recogniser (the crnn-tiny OCR engine) on synthetic text crops.",
        "ocr-bench": "Word exact-match and seconds per image of each OCR engine on the labelled word boxes (Table 3).",
    },
    examples={
        "train": "medrun train icu-vitals --dataset icu-monitors --fixture\n\n"
                 "  medrun train icu-vitals --dataset icu-monitors --data-dir ~/data/icu-monitors "
                 "-o model.backbone_weights=~/weights/effnet_b4_imagenet.safetensors",
        "eval": "medrun eval icu-vitals --dataset icu-monitors --fixture\n\n"
                "  medrun eval icu-vitals --dataset icu-monitors -o eval.ocr=[paddle] "
                "-o extract.paddle_model_dir=~/paddleocr",
        "extract": "medrun extract icu-vitals --dataset icu-monitors --fixture -o extract.ocr=oracle\n\n"
                   "  medrun extract icu-vitals --dataset icu-monitors -o extract.input=photos/ -o extract.ocr=easyocr "
                   "-o extract.easyocr_model_dir=~/.EasyOCR/model",
        "deskew": "medrun deskew icu-vitals --dataset icu-monitors --fixture -o deskew.input=photos/",
        "train-ocr": "medrun train-ocr icu-vitals --dataset icu-monitors --fixture",
        "ocr-bench": "medrun ocr-bench icu-vitals --dataset icu-monitors --fixture "
                     "-o ocr_bench.engines=[oracle,crnn-tiny]",
    },
    no_export="the method is a chain (deskew, corner regression, crop, OCR engine, rules, ECG tracing), "
              "not one network a MONAI bundle can describe; "
              "the corner weights are checkpoints/model.safetensors of a train run",
)
