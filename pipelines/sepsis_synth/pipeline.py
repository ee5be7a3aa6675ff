"""sepsis-synth, the method (card: docs/papers/sepsis-synth.md).

Data (``datasets.sepsis``): an internal and an external cohort, each a flat CSV (one row per patient) or a folder
of hourly timelines flattened to the last value of each feature within the first ``dataset.cutoff_hours`` (9 h);
column names through the layout's map and ``dataset.feature_map``. The internal cohort is split 85/15, stratified
(the card: stratification is not stated, so stratify), with ``dataset.split_seed``; median imputation and z-scoring
are fitted on the training split and applied to the test split and the external cohort. The training split's
sepsis share is logged (the paper's 18.55 % does not match its own 296/1275 = 23.2 %; the observed one is used).

Generators (``generators.py``, ``generate`` stage): KDE-KNN (k = 5, Scott bandwidth, standardised space, as the
card resolves what the paper leaves open), plain KDE, fully synthetic SMOTE and TabDDPM, each fitted once on the
training split and sampled ``generate.sets`` times (3), ``generate.n_per_class`` rows per class (540 + 540). A train
run on a synthetic source runs (or reuses) the ``generate`` run of its method as a child run; that child sees the
manifest with the sections of the consuming stages reset (``CONSUMERS``), so every train, mix, privacy and tune run
of one method shares one generate run.

Classifiers (``train``): RF (bootstrap False, max_depth 20, max_features 5, min_samples_leaf 5, min_samples_split
12, 500 trees, ``random_state = seed``), SVM linear and SVM rbf (C = 1), scikit-learn defaults otherwise, trained on
``train.source`` (real training split, or synthetic set ``train.set``, or with ``train.real_fraction`` a mix of
``train.total`` rows, the real part drawn without replacement). AUC = ROC-AUC of ``predict_proba`` (RF) or
``decision_function`` (SVMs) on the internal test split and the whole external cohort. Each classifier is saved as
imputer → scaler → classifier (the training split's statistics) with skops (``checkpoints/model.skops``; loading
trusts only the types it lists, never pickle); ``eval`` and ``predict`` load it from a train run or
``--checkpoint``.

Choices where the card is silent or the paper unclear:
- "AUC ± variance" is reported as the sample sd (ddof 1) and labelled so; Table 5's 0/100 row is the mean over the
  three synthetic sets (repeat i of ``mix`` uses set i), as the card says.
- DCR is synthetic → real (TabDDPM's direction) and the reverse is reported too (``privacy``).
- Exp. 3's mix size is fixed at 2 × n_per_class (1080) rows.
- TabDDPM: T = 1000, MLP 4×256 (dim_t 128), AdamW lr 1e-3 (weight decay 1e-4), 5k steps of batch 256 with TabDDPM's
  linear lr annealing, quantile-normal features, class-conditional, class-balanced sampling; no EMA (TabDDPM samples
  from the raw weights too). Its sets are drawn in one batch of reverse diffusion (one denoiser call per timestep for
  all sets), so a generate run costs T calls whatever ``generate.sets`` is.
- KDE-KNN and SMOTE sets are seeded (seed, set); SMOTE is imbalanced-learn's, asked for ``n_per_class`` new rows per
  class with ``generate.smote_k`` same-class neighbours, and only the new rows are kept ("fully synthetic").
- Exp. 3 needs one synthetic set per repeat: ``mix.repeats > generate.sets`` is a UsageError of the ``mix`` stage (not
  of the manifest, since a generate run never reads ``mix``).
- ``tune`` optimises cross-validated AUC on the training rows only (the paper does not say on what it tuned).
- A constant feature in one class makes its KDE singular: a DataError naming the fix (drop it with
  ``dataset.features``), not a silent jitter.
- ``predict`` scores patients without labels: an SVM's decision value > 0 or RF probability > 0.5 is "sepsis".
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import numpy as np

from medrun.datasets import sepsis
from medrun.errors import DataError, UsageError

from ..base import Pipeline
from ..report import paper_data, paper_md, paper_note, paper_table
from ..sweep import Child
from .config import cohort_paths, feature_map, features

NAMES = {"rf": "RF", "svm_linear": "SVM (linear)", "svm_rbf": "SVM (rbf)"}
CONSUMERS = ("train", "eval", "predict", "mix", "privacy", "tune", "reproduce")  # sections a generate run ignores
PAPER_SETTING = {"Table 3": "MaDB 85/15 split, classifiers trained on the real training split (3 splits); MaDB test "
                            "split and SLDB",
                 "Table 4": "MaDB 85/15 split, classifiers trained on 540 + 540 synthetic rows (3 sets); MaDB test "
                            "split and SLDB",
                 "Table 5": "SVM (rbf) trained on real + KDE-KNN rows (3 sampling seeds); MaDB test split and SLDB"}
TRUSTED = ["numpy.dtype", "sklearn.tree._tree.Tree"]  # skops: beyond its defaults, what a model file may hold


@dataclass
class Part:
    ids: list[str]
    x: np.ndarray  # raw values, NaN where missing
    y: np.ndarray | None


@dataclass
class Cohort:
    features: list[str]
    train: Part
    test: Part
    external: Part
    imputer: object
    scaler: object
    internal: sepsis.Table
    external_table: sepsis.Table

    def z(self, x: np.ndarray) -> np.ndarray:
        """Raw rows → the standardised space (training split's medians and z-scores)."""
        return self.scaler.transform(self.imputer.transform(x))

    def part(self, name: str) -> Part:
        return {"train": self.train, "test": self.test, "external": self.external}[name]


class SepsisSynth(Pipeline):
    def build_model(self):
        """TabDDPM's denoiser, the one network of the paper's comparison, at the manifest's settings."""
        from medrun.models.tabddpm import MLPDiffusion

        g = self.m.generate.tabddpm
        return MLPDiffusion(len(features(self.m)), 2, g.layers, g.dim_t, g.dropout)

    # -- data ---------------------------------------------------------------------------------------------------
    def tables(self) -> tuple[sepsis.Table, sepsis.Table]:
        d = self.m.dataset
        fmap, name = feature_map(self.m)
        paths = cohort_paths(self.m)
        kw = dict(cutoff=d.cutoff_hours, drop_early=d.drop_early, map_name=name)
        internal = sepsis.read(paths["internal"], fmap, features(self.m), what="internal", **kw)
        external = sepsis.read(paths["external"], fmap, features(self.m), what="external", **kw)
        for t, what in ((internal, "internal"), (external, "external")):
            note = (f"; dropped {len(t.dropped_early)} labelled within {d.cutoff_hours:g} h and {len(t.dropped_empty)} "
                    f"without a row in them" if t.dropped_early or t.dropped_empty else "")
            self.ctx.log(f"{what}: {len(t.ids)} patients, {t.n_sepsis} sepsis ({100 * t.n_sepsis / len(t.ids):.1f} %), "
                         f"{len(t.features)} features{note}")
        return internal, external

    @cached_property
    def cohort(self) -> Cohort:
        from sklearn.impute import SimpleImputer
        from sklearn.model_selection import train_test_split
        from sklearn.preprocessing import StandardScaler

        d = self.m.dataset
        internal, external = self.tables()
        idx = np.arange(len(internal.ids))
        try:
            tr, te = train_test_split(idx, test_size=d.test_fraction, stratify=internal.y, random_state=d.split_seed)
        except ValueError as e:
            raise DataError(f"{internal.source}: cannot split {len(idx)} patients ({internal.n_sepsis} sepsis) "
                            f"{1 - d.test_fraction:.0%}/{d.test_fraction:.0%} with both classes on each side ({e})",
                            fix="use a larger cohort or change dataset.test_fraction") from None
        tr, te = np.sort(tr), np.sort(te)
        for name, part in (("training", tr), ("test", te)):
            if len(np.unique(internal.y[part])) < 2:
                raise DataError(f"{internal.source}: the {name} split has one class only",
                                fix="use a larger cohort or change dataset.test_fraction")
        empty = [f for j, f in enumerate(internal.features) if np.isnan(internal.x[tr, j]).all()]
        if empty:
            raise DataError(f"{internal.source}: feature(s) {', '.join(empty)} have no value in the training split",
                            fix="leave them out with dataset.features")
        imputer = SimpleImputer(strategy="median").fit(internal.x[tr])
        scaler = StandardScaler().fit(imputer.transform(internal.x[tr]))

        def part(t, rows):
            return Part([t.ids[i] for i in rows], t.x[rows], t.y[rows])

        c = Cohort(internal.features, part(internal, tr), part(internal, te),
                   part(external, np.arange(len(external.ids))), imputer, scaler, internal, external)
        self.ctx.record_splits({"train": c.train.ids, "test": c.test.ids, "external": c.external.ids})
        share = c.train.y.mean()
        self.ctx.log(f"split {d.split_seed}: train {len(tr)} ({100 * share:.2f} % sepsis; the paper states 18.55 %) · "
                     f"test {len(te)} · external {len(c.external.ids)}")
        return c

    # -- training sources -----------------------------------------------------------------------------------------
    def generated(self, method: str) -> dict:
        """The synthetic sets of ``method`` from its generate run (run or reused as a child of this run)."""
        overrides = {**{s: {} for s in CONSUMERS}, "generate.method": method}
        (run,) = self.ctx.sweep([Child(f"generate-{method}", overrides, stage="generate")], title="generate")
        with np.load(run.run_dir / "synthetic.npz", allow_pickle=False) as z:
            out = {k: z[k] for k in z.files}
        if list(out["features"]) != self.cohort.features:
            raise UsageError(f"the generate run {run.run_dir} has other features than this run",
                             fix="rerun it with --force")
        out["run_id"] = run.run_id
        return out

    def training_rows(self) -> tuple[np.ndarray, np.ndarray, dict]:
        """(x, y) in standardised space for ``train.source``, and what they are."""
        t, c = self.m.train, self.cohort
        real_x, real_y = c.z(c.train.x), c.train.y
        if t.source == "real":
            return real_x, real_y, {"rows": len(real_y), "rows_real": len(real_y)}
        syn = self.generated(t.source)
        sx, sy = syn[f"x_set{t.set}"], syn[f"y_set{t.set}"]
        info = {"generate_run": syn["run_id"][:12]}
        if t.real_fraction is None:
            return sx, sy, {**info, "rows": len(sy), "rows_real": 0}
        total = t.total or 2 * self.m.generate.n_per_class
        n_real = int(round(t.real_fraction * total))
        n_syn = total - n_real
        if n_real > len(real_y) or n_syn > len(sy):
            raise UsageError(f"a mix of {total} rows needs {n_real} real and {n_syn} synthetic rows; there are "
                             f"{len(real_y)} real training rows and {len(sy)} synthetic ones",
                             fix="lower train.total (mix.total)")
        rng = np.random.default_rng(np.random.SeedSequence([self.m.seed, t.set]))
        ri, si = rng.choice(len(real_y), n_real, replace=False), rng.choice(len(sy), n_syn, replace=False)
        x = np.concatenate([real_x[np.sort(ri)], sx[np.sort(si)]])
        y = np.concatenate([real_y[np.sort(ri)], sy[np.sort(si)]])
        return x, y, {**info, "rows": total, "rows_real": n_real}

    # -- classifiers ------------------------------------------------------------------------------------------------
    def classifier(self, name: str):
        from sklearn.ensemble import RandomForestClassifier
        from sklearn.svm import SVC

        t = self.m.train
        if name == "rf":
            return RandomForestClassifier(**t.rf.model_dump(), random_state=self.m.seed)
        svm = getattr(t, name)
        return SVC(kernel="linear" if name == "svm_linear" else "rbf", C=svm.C, gamma=svm.gamma)

    def fit_models(self, x, y) -> dict:
        from sklearn.pipeline import Pipeline as SkPipeline

        c = self.cohort
        out = {}
        for name in self.m.train.classifiers:
            clf = self.classifier(name).fit(x, y)
            out[name] = SkPipeline([("impute", c.imputer), ("scale", c.scaler), ("clf", clf)])
        return out

    @staticmethod
    def scores(model, x: np.ndarray) -> np.ndarray:
        """The AUC score of a fitted pipeline on raw rows: RF probability of sepsis, an SVM's decision value."""
        if hasattr(model[-1], "decision_function"):
            return np.asarray(model.decision_function(x), dtype=np.float64)
        return np.asarray(model.predict_proba(x)[:, 1], dtype=np.float64)

    def save_models(self, models: dict, info: dict) -> None:
        import skops.io as sio

        bundle = {"pipeline": "sepsis-synth", "features": list(self.cohort.features), "classifiers": models,
                  "source": {k: str(v) for k, v in info.items()}}
        self.ctx.write_bytes("checkpoints/model.skops", sio.dumps(bundle))

    def load_models(self) -> dict:
        """The classifiers of the parent train run (checked against its MANIFEST.sha256) or ``--checkpoint``."""
        import skops.io as sio

        from medrun.artifacts import sha256_file

        path = self.ctx.checkpoint or self.ctx.parent_file("checkpoints/model.skops")
        self.ctx.run.update_info(parent_weights_sha256=sha256_file(path))
        try:
            data = path.read_bytes()
            extra = [t for t in sio.get_untrusted_types(data=data) if t not in TRUSTED]
            if extra:
                raise UsageError(f"{path} holds types a sepsis-synth model never does: {', '.join(extra[:4])}",
                                 fix="pass the checkpoints/model.skops of a sepsis-synth train run")
            bundle = sio.loads(data, trusted=TRUSTED)
        except UsageError:
            raise
        except Exception as e:  # noqa: BLE001 (any unreadable file is the same problem to the user)
            raise UsageError(f"{path} is not a skops model file ({type(e).__name__})",
                             fix="pass the checkpoints/model.skops of a sepsis-synth train run") from None
        if not isinstance(bundle, dict) or bundle.get("pipeline") != "sepsis-synth":
            raise UsageError(f"{path} is not a sepsis-synth model", fix="pass a sepsis-synth train run's model.skops")
        return bundle

    # -- evaluation ---------------------------------------------------------------------------------------------------
    def evaluate(self, models: dict, parts: dict[str, Part]) -> tuple[dict, list[dict]]:
        from medrun.metrics.classification import auroc

        metrics, rows = {}, []
        for split, p in parts.items():
            scores = {name: self.scores(m, p.x) for name, m in models.items()}
            for name, s in scores.items():
                metrics[f"auc_{split}_{name}"] = auroc(p.y, s)
            rows += [{"split": split, "patient": pid, "sepsis": int(p.y[i]),
                      **{f"score_{n}": float(s[i]) for n, s in scores.items()}} for i, pid in enumerate(p.ids)]
            metrics[f"n_{split}"], metrics[f"n_sepsis_{split}"] = len(p.ids), int(p.y.sum())
        return metrics, rows

    def roc_figure(self, models: dict, parts: dict[str, Part], title: str) -> None:
        from sklearn.metrics import auc, roc_curve

        with self.ctx.figure("roc", ncols=len(parts), figsize=(5 * len(parts), 4.4), squeeze=False) as (fig, axes):
            for ax, (split, p) in zip(axes[0], parts.items(), strict=True):
                for name, m in models.items():
                    s = self.scores(m, p.x)
                    fpr, tpr, _ = roc_curve(p.y, s)
                    ax.plot(fpr, tpr, label=f"{NAMES[name]} (AUC {auc(fpr, tpr):.3f})")
                ax.plot([0, 1], [0, 1], ":", color="grey")
                ax.set(xlabel="false positive rate", ylabel="true positive rate",
                       title=f"{'internal test' if split == 'test' else split} ({len(p.ids)} patients)")
                ax.legend(loc="lower right", fontsize=8)
            fig.suptitle(title)

    def paper_numbers(self) -> dict:
        return paper_data(self.ctx.spec).get("numbers", {})

    def expect_for(self, source: str, real_fraction: float | None, classifiers, splits=("test", "external")) -> dict:
        """The paper's AUCs for this training source (Table 3 real, Table 4 synthetic, Table 5 a KDE-KNN mix)."""
        nums = self.paper_numbers()
        if real_fraction is not None and source == "kdeknn":
            row = nums.get("table5", {}).get(int(round(100 * real_fraction)))
            if not row:
                return {}
            return {f"auc_{s}_svm_rbf": row[i] for i, s in enumerate(("test", "external")) if s in splits}
        table = nums.get("table3" if source == "real" else "table4", {})
        row = table if source == "real" else table.get(source, {})
        return {f"auc_{s}_{c}": row[c][i] for c in classifiers if c in row
                for i, s in enumerate(("test", "external")) if s in splits}

    def describe(self, info: dict) -> str:
        t = self.m.train
        if t.source == "real":
            return f"real training split ({info['rows']} rows)"
        what = f"{t.source} set {t.set} (generate run {info.get('generate_run', '?')})"
        if t.real_fraction is None:
            return f"synthetic: {what}, {info['rows']} rows"
        return f"mix: {info['rows_real']} real + {info['rows'] - info['rows_real']} rows of {what}"

    # -- stages -------------------------------------------------------------------------------------------------------
    def train(self) -> dict:
        t, c = self.m.train, self.cohort
        x, y, info = self.training_rows()
        self.ctx.log(f"training {', '.join(NAMES[n] for n in t.classifiers)} on {self.describe(info)}")
        models = self.fit_models(x, y)
        self.save_models(models, {"source": t.source, "set": t.set, "real_fraction": t.real_fraction, **info})
        parts = {"test": c.test, "external": c.external}
        metrics, rows = self.evaluate(models, parts)
        self.ctx.write_csv("per_case.csv", rows)
        self.roc_figure(models, parts, f"trained on {self.describe(info)}")
        self.ctx.log("  ".join(f"{NAMES[n]}: test {metrics[f'auc_test_{n}']:.4f} external "
                               f"{metrics[f'auc_external_{n}']:.4f}" for n in t.classifiers))
        metrics.update({"source": t.source, "rows_train": int(info["rows"]), "rows_real": int(info["rows_real"]),
                        "sepsis_share_train": float(y.mean()), "features": len(c.features),
                        "dropped_early_internal": len(c.internal.dropped_early)})
        expect = self.expect_for(t.source, t.real_fraction, t.classifiers)
        table = "Table 5" if t.real_fraction is not None else "Table 3" if t.source == "real" else "Table 4"
        keys = [f"auc_{s}_{n}" for n in t.classifiers for s in ("test", "external")]
        self.ctx.write_text("paper.md", paper_md(
            self.ctx.spec, self.m, metrics, self.ctx, title=f"sepsis detection, trained on {t.source}",
            expect=expect, table=table, keys=keys, setting=PAPER_SETTING[table],
            sections=[f"## This run\n\nTrained on {self.describe(info)}; AUC on the internal test split and the "
                      "external cohort.", paper_table(self.ctx.spec, table.lower().replace(" ", "")),
                      paper_note(self.ctx.spec, "comparison")]))
        return metrics

    def eval(self) -> dict:
        bundle = self.load_models()
        c, split = self.cohort, self.m.eval.split
        if list(bundle["features"]) != c.features:
            raise UsageError(f"the model was trained on {len(bundle['features'])} features "
                             f"({', '.join(bundle['features'][:3])} …), this manifest gives {len(c.features)}",
                             fix="evaluate with the train run's manifest (dataset.features, dataset.feature_map)")
        models = bundle["classifiers"]
        metrics, rows = self.evaluate(models, {split: c.part(split)})
        self.ctx.write_csv("per_case.csv", rows)
        self.roc_figure(models, {split: c.part(split)}, f"eval on {split}")
        metrics["split"] = split
        self.ctx.log("  ".join(f"{NAMES[n]} {metrics[f'auc_{split}_{n}']:.4f}" for n in models))
        src = bundle.get("source", {})
        frac = src.get("real_fraction")
        frac = None if frac in (None, "None") else float(frac)
        expect = self.expect_for(src.get("source", "real"), frac, list(models), splits=(split,)) \
            if split != "train" else {}
        self.ctx.write_text("paper.md", paper_md(
            self.ctx.spec, self.m, metrics, self.ctx, title=f"sepsis detection, eval on {split}", expect=expect,
            keys=[f"auc_{split}_{n}" for n in models], setting=f"classifiers trained on {src.get('source', '?')}"))
        return metrics

    def predict(self) -> dict:
        bundle = self.load_models()
        feats, models = list(bundle["features"]), bundle["classifiers"]
        src = self.m.predict.input
        if src:
            files = self.ctx.predict_inputs(src, (".csv", ".psv"), what="patient tables")
            fmap, name = feature_map(self.m)
            kw = dict(fmap=fmap, features=feats, what="predict.input", cutoff=self.m.dataset.cutoff_hours,
                      drop_early=False, labelled=False, map_name=name)
            tables = [sepsis.read(Path(src).expanduser(), **kw)] if Path(src).expanduser().is_dir() else \
                [sepsis.read(f, **kw) for f in files]
            ids = [i for t in tables for i in t.ids]
            x = np.concatenate([t.x for t in tables])
        else:
            p = self.cohort.part(self.m.eval.split)
            ids, x = p.ids, p.x
        rows = [{"patient": pid} for pid in ids]
        counts = {}
        for n, m in models.items():
            s = self.scores(m, x)
            positive = s > 0 if n != "rf" else s > 0.5
            counts[f"predicted_sepsis_{n}"] = int(positive.sum())
            for r, v, pos in zip(rows, s, positive, strict=True):
                r[f"score_{n}"], r[f"sepsis_{n}"] = float(v), int(pos)
        self.ctx.write_csv("per_case.csv", rows)
        self.ctx.log(f"scored {len(rows)} patients: " + ", ".join(f"{NAMES[n]} {counts[f'predicted_sepsis_{n}']} sepsis"
                                                               for n in models))
        return {"n": len(rows), **counts}

    def prepare(self) -> dict:
        from .prepare import prepare

        return prepare(self)

    def generate(self) -> dict:
        from .generate import generate

        return generate(self)

    def mix(self) -> dict:
        from .mix import mix

        return mix(self)

    def privacy(self) -> dict:
        from .privacy import privacy

        return privacy(self)

    def tune(self) -> dict:
        from .tune import tune

        return tune(self)

    def reproduce(self) -> dict:
        from .reproduce import reproduce

        return reproduce(self)

