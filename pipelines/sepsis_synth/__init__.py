"""sepsis-synth: privacy-preserving synthetic tabular ICU data (KDE-KNN) for sepsis detection
(card: docs/papers/sepsis-synth.md).

The manifest lives in ``config.py``; cohorts, classifiers, ``train``/``eval``/``predict`` in ``pipeline.py``; the
generators in ``generators.py``; the other stages in ``prepare.py``, ``generate.py``, ``mix.py``, ``privacy.py``,
``tune.py`` and ``reproduce.py``; the paper's tables in ``paper.yaml``.
"""

from medrun.pipelines import PipelineSpec

SPEC = PipelineSpec(
    slug="sepsis-synth",
    title="KDE-KNN synthetic sepsis data",
    paper="Privacy-Preserving Tabular Data Generation: Application to Sepsis Detection (ICPR 2024)",
    card="sepsis-synth",
    datasets=("sepsis-csv", "physionet2019"),
    stages=("prepare", "generate", "train", "eval", "predict", "mix", "privacy", "tune", "reproduce"),
    manifest="medrun.pipelines.sepsis_synth.config:SepsisSynthManifest",
    impl="medrun.pipelines.sepsis_synth.pipeline:SepsisSynth",
    stage_help={
        "prepare": "Flatten both cohorts to one row per patient at the cut-off hour: internal.csv, external.csv, "
                   "cohort counts and missingness.",
        "generate": "Fit generate.method (kdeknn, kde, smote, tabddpm) on the training split and draw generate.sets "
                    "class-balanced synthetic sets, with marginal and correlation figures.",
        "mix": "Table 5: SVM-rbf (mix.classifier) on real:synthetic mixes of fixed size, one train run per ratio × "
               "repeat; mean ± sd AUC on the internal test split and the external cohort.",
        "privacy": "Distance to closest record (Exp. 4) of each generator's sets to the real training rows, with the "
                   "real–real distance and the Fig. 4 histograms.",
        "tune": "Optuna TPE over each classifier's hyperparameters (tune.trials) by cross-validated AUC on the "
                "training rows; prints the overrides to use.",
        "reproduce": "Tables 3–5 and the DCR comparison in one run: real-data and synthetic train runs, the mix and "
                     "the privacy stage as runs of their own, summarised beside the paper's numbers.",
    },
    examples={
        "prepare": "medrun prepare sepsis-synth --dataset physionet2019 --data-dir ~/physionet/challenge-2019/training",
        "generate": "medrun generate sepsis-synth --dataset sepsis-csv --fixture -o generate.method=kdeknn",
        "train": "medrun train sepsis-synth --dataset sepsis-csv --fixture -o train.source=real",
        "eval": "medrun eval sepsis-synth --dataset sepsis-csv --fixture --split external",
        "predict": "medrun predict sepsis-synth --dataset sepsis-csv --fixture -o predict.input=new_patients.csv",
        "mix": "medrun mix sepsis-synth --dataset sepsis-csv --fixture",
        "privacy": "medrun privacy sepsis-synth --dataset sepsis-csv --fixture",
        "tune": "medrun tune sepsis-synth --dataset sepsis-csv --fixture -o tune.trials=10",
        "reproduce": "medrun reproduce sepsis-synth --dataset sepsis-csv --fixture",
    },
    no_export="the classifiers are scikit-learn models over tabular features (saved with skops), not a network "
              "over images that a MONAI bundle describes",
)
