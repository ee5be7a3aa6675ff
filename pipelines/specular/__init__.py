"""specular: specular-highlight detection (MMSER + intensity–saturation) and affine-covariant feature matching in
colonoscopy (card: docs/papers/specular.md).

Training-free: no ``train`` stage. The manifest lives in ``config.py``; the detection steps in ``method.py``; the
features and matching in ``features.py``; the stages in ``pipeline.py`` (``detect``, ``eval``, ``inpaint``),
``match.py`` and ``tune.py``; the paper's tables in ``paper.yaml``.
"""

from medrun.pipelines import PipelineSpec

SPEC = PipelineSpec(
    slug="specular",
    title="Specular highlight detection and covariant feature matching (training-free: no train stage)",
    paper="Specular Region Detection and Covariant Feature Extraction in colonoscopy (MMSER + intensity–saturation "
          "fusion, affine-covariant SIFT frames, GC-RANSAC)",
    card="specular",
    datasets=("cvc-clinicspec", "hyper-kvasir"),
    stages=("detect", "eval", "inpaint", "match", "tune"),
    manifest="medrun.pipelines.specular.config:SpecularManifest",
    impl="medrun.pipelines.specular.pipeline:Specular",
    parents={},
    stage_help={
        "detect": "Specular masks for a folder of frames (detect.variants: fused | mmser | is | is_en), with "
                  "overlays of the detected highlights.",
        "eval": "Table 1 metrics (accuracy, precision, recall, F1, Jaccard; per-image mean and pooled) of the fused "
                "detector, its ablations and the weight-free baselines against the GT masks; per-image CSV; "
                "inpainting check inside S_R.",
        "inpaint": "Suppress the detected highlights (Navier–Stokes inpainting of the dilated S_R; telea | arnold "
                   "as options) and write the filtered frames with before/after figures.",
        "match": "Frame pairs (f, f+25) from the videos: features per image and GC-RANSAC inliers per pair for the "
                 "affine-covariant detector and SIFT / ORB / Harris, on raw and filtered frames (Tables 2–3).",
        "tune": "Grid over MMSER's Δt and A_max on a held-out 20 % of the frames; reports the chosen values and "
                "the Jaccard on the other 80 %.",
    },
    examples={
        "detect": "medrun detect specular --dataset cvc-clinicspec --fixture\n\n"
                  "  medrun detect specular --dataset cvc-clinicspec --data-dir ~/data/cvc-clinicspec "
                  "-o detect.variants=[fused,mmser,is]",
        "eval": "medrun eval specular --dataset cvc-clinicspec --fixture\n\n"
                "  medrun eval specular --dataset cvc-clinicspec --data-dir ~/data/cvc-clinicspec "
                "-o dataset.images=Original -o dataset.masks=GT",
        "inpaint": "medrun inpaint specular --dataset cvc-clinicspec --fixture -o inpaint.method=ns",
        "match": "medrun match specular --dataset hyper-kvasir --fixture\n\n"
                 "  medrun match specular --dataset hyper-kvasir --data-dir ~/data/hyper-kvasir",
        "tune": "medrun tune specular --dataset cvc-clinicspec --fixture",
    },
    no_export="training-free: classical detection (component tree, colour tests, inpainting) and a weight-free "
              "covariant detector; there is no trained network to bundle",
)
