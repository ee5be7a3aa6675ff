"""sepsis-synth ``tune``: the paper's hyperparameter search (Optuna, TPE sampler, 40 trials, maximise AUC).

For each classifier of ``tune.classifiers``, Optuna's TPE sampler (seeded with the run's seed) proposes parameters and
the objective is the mean ROC-AUC of stratified ``tune.folds``-fold cross-validation on the training rows of
``train.source`` (the real training split or a synthetic set): the test split and the external cohort are never
looked at. The paper does not say on what it tuned; cross-validation on the training rows is the choice that does
not leak. Search spaces: RF over ``n_estimators`` 50–500, ``max_depth`` 2–32, ``max_features`` 1–all,
``min_samples_leaf`` 1–20, ``min_samples_split`` 2–20 and ``bootstrap`` (the paper's six); both SVMs over C
(10⁻³–10², log). Writes ``trials.csv``, ``best.json``, the optimisation history and the ``-o`` overrides that make
``train`` use the best parameters.
"""

from __future__ import annotations

import numpy as np

from medrun.errors import EnvError

from ..report import markdown_table, paper_md

PAPER = {"rf": {"bootstrap": False, "max_depth": 20, "max_features": 5, "min_samples_leaf": 5,
                "min_samples_split": 12, "n_estimators": 500}, "svm_linear": {"C": 1.0}, "svm_rbf": {"C": 1.0}}


def space(trial, name: str, n_features: int) -> dict:
    if name == "rf":
        return {"n_estimators": trial.suggest_int("n_estimators", 50, 500, step=50),
                "max_depth": trial.suggest_int("max_depth", 2, 32),
                "max_features": trial.suggest_int("max_features", 1, n_features),
                "min_samples_leaf": trial.suggest_int("min_samples_leaf", 1, 20),
                "min_samples_split": trial.suggest_int("min_samples_split", 2, 20),
                "bootstrap": trial.suggest_categorical("bootstrap", [False, True])}
    return {"C": trial.suggest_float("C", 1e-3, 1e2, log=True)}


def tune(p) -> dict:
    try:
        import optuna
    except ImportError:
        raise EnvError("the tune stage needs optuna, which is not installed",
                       fix="pip install optuna (it is in medrun's dependencies: make setup)") from None
    from sklearn.model_selection import StratifiedKFold, cross_val_score

    tn, ctx = p.m.tune, p.ctx
    x, y, info = p.training_rows()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    folds = StratifiedKFold(tn.folds, shuffle=True, random_state=p.m.seed)
    metrics, trials, best, overrides = {"source": p.m.train.source, "rows": int(info["rows"])}, [], {}, []
    for name in tn.classifiers:
        base = p.classifier(name)

        def objective(trial, name=name, base=base):
            est = base.set_params(**space(trial, name, x.shape[1]))
            return float(np.mean(cross_val_score(est, x, y, cv=folds, scoring="roc_auc")))

        study = optuna.create_study(direction="maximize", sampler=optuna.samplers.TPESampler(seed=p.m.seed))
        study.optimize(objective, n_trials=tn.trials)
        trials += [{"classifier": name, "trial": t.number, "auc_cv": t.value, **t.params} for t in study.trials]
        best[name] = {"auc_cv": study.best_value, "params": study.best_params}
        metrics[f"auc_cv_{name}"] = study.best_value
        overrides += [f"-o train.{name}.{k}={v}" for k, v in study.best_params.items()]
        ctx.log(f"{name}: best CV AUC {study.best_value:.4f} with {study.best_params}")
    ctx.write_csv("trials.csv", trials)
    ctx.write_json("best.json", best)
    with ctx.figure("history", ncols=len(best), figsize=(4.5 * len(best), 3.6), squeeze=False) as (fig, axes):
        for ax, name in zip(axes[0], best, strict=True):
            v = [t["auc_cv"] for t in trials if t["classifier"] == name]
            ax.plot(v, "o", ms=3, alpha=0.6, label="trial")
            ax.plot(np.maximum.accumulate(v), "-", label="best so far")
            ax.set(title=name, xlabel="trial", ylabel=f"{tn.folds}-fold CV AUC")
            ax.legend(fontsize=7)
    rows = [[name, k, v, PAPER[name].get(k)] for name in best for k, v in best[name]["params"].items()]
    ctx.write_text("paper.md", paper_md(
        ctx.spec, p.m, metrics, ctx, title="hyperparameter search", table="Sect. 3.3", expect={},
        setting=f"Optuna TPE, {tn.trials} trials per classifier, {tn.folds}-fold CV AUC on {p.describe(info)}",
        keys=[k for k in metrics if k.startswith("auc_cv_")],
        sections=["## Best parameters beside the paper's\n\n" + markdown_table(["classifier", "parameter", "best",
                                                                               "paper"], rows),
                  "## To train with them\n\n```\n" + " \\\n  ".join(overrides) + "\n```"]))
    return metrics
