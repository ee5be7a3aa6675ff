"""ad-progression, the method (card: docs/papers/ad-progression.md; seed 003, lines 4823–5105).

Data (``datasets.adnimerge``; arrays in ``data.py``): ADNIMERGE.csv read with pandas (required columns checked,
VISCODE normalised, unknown codes a hard error unless ``dataset.ignore_viscodes``), the paper's cohort (visits bl,
m12 … m60; diagnosed baseline + ≥ 1 more diagnosed visit; no reversion), volumes
``images/{PTID}_{VISCODE}_{MRI|PET}.nii.gz`` (absent = missing modality), centre-cropped to 128×160×128 and min–max
scaled to [0, 1] (``dataset.volume`` resizes further for CPU runs). Per visit slot t (the fixed VISCODE grid,
s_t = months / 12; a missing visit has every mask 0): 6 volumes divided by ICV then z-scored; age = AGE (baseline)
+ s_t and education z-scored; gender one-hot (2), APOE4 one-hot (3); DX (CN / MCI / AD). Normalisation statistics
and the t = 1 fill values (means; DX class frequencies) come from the training subjects of the fold only.

Model (``models.adxpro.ADxPro``): AMVAE (per-modality 3D conv encoder + CBAM, masked product of experts with a
N(0, I) prior expert, per-modality decoders) → v_t = [μ_t ‖ bio ‖ dg ‖ dx] with forecasts filling masked entries →
time-decayed coupled-gate LSTM → next-visit tabular forecast (residual on the X slice) and DX logits. Loss: Kendall
uncertainty weighting of CE(DX at t = 2..T, observed), masked L1 on the biomarkers at t = 2..T, and the ELBO (BCE
recon of present modalities from the sampled z_t, β·KL with β warmed up linearly over ``train.beta_warmup_epochs``).
Adam, lr 2e-4, cosine annealing over the epochs, batch 16 subjects, Xavier-uniform init.

Protocol: subject-level ``train.folds``-fold CV (sklearn ``StratifiedKFold`` on the baseline DX, shuffled,
``train.split_seed``; or ``train.folds_file``). Teacher-forced one-step-ahead: inputs observed at visits ≤ t predict
DX at t + 1; every follow-up slot (t = 2..6) with an observed DX is scored. Setting "without Dx" (Table 1): DX is
never an input (``model.dx_input: none``); ``baseline`` feeds the baseline DX (Table 3).

Metrics: ACC; PRE and REC macro over 3 classes; mAUC = Hand & Till (``metrics.classification.auroc(average='ovo')``,
checked against sklearn ``roc_auc_score(multi_class='ovo')``); MAE (ml) and MRE (%) of the biomarker forecasts at
observed follow-ups after undoing the z-score and the ICV division (ADNIMERGE volumes are mm³; 1 ml = 1000 mm³),
the mean over the 6 volumes and each volume.

Stages: ``prepare`` (``prepare.py``: cohort selection and counts, ``cohort.csv``, a cohort figure; nothing is
asserted against the paper's 1,369 / 5,768), ``train`` (fold ``train.fold`` held out; weights
``checkpoints/model.safetensors`` and the fold's normaliser), ``eval`` and ``predict`` (a train run's weights on
``eval.split`` test | train | all, on the manifest's hardware through the predictor), ``impute`` (``impute.py``: a
train run's weights: every missing MRI/PET of each kept visit slot decoded from the fused latent, or from the LSTM's
imputed latent where the visit has no image, as NIfTI under ``imputed/``; biomarkers observed or imputed, in mm³,
``imputed_biomarkers.csv``), ``cv`` (a sweep: one train run per fold, ``train.fold`` = 0 … k − 1, each reused when
complete, then mean ± sd over folds; ``cv.baseline: true`` adds the biomarker-only model, ``model.use_images:
false``, as a train run per fold and a paired t-test, scipy ``ttest_rel``).

Choices where the card is silent (ours): no validation split (the last epoch is scored, as the card's protocol does
not mention early stopping); s_t from the VISCODE (nominal months), not EXAMDATE; demographics (static, and the
nominal age) are observed at every slot of a subject who has them; a biomarker counts as observed when it and the
visit's ICV are present; the trajectory figure shows the test subjects with the most observed visits; each fold of
``cv`` is seeded like a train run (``seed``), so fold k of ``cv`` is exactly ``medrun train -o train.fold=k``.

Baselines (``baselines.py``, Table 1/2, Fig. 5): ``model.arch`` grud | minimalrnn builds GRU-D or MinimalRNN on the
tabular inputs with ADxPro's heads and loss without the ELBO (``models/grud.py``, ``models/minimalrnn.py``);
``model.modalities`` [MRI] | [PET] keeps one modality (the other counts as missing, also in ``impute``); the
image files are not read at all without the image branch. ``medrun baselines`` trains each row on every fold.

The image branch's gain: the fixture's images show a hidden amyloid status that moves the diagnosis and no table
column shows (``datasets.adnimerge.fixture``); its smoke run (``baselines`` over adxpro, biomarker-only, grud,
minimalrnn) requires adxpro's mAUC to exceed the biomarker-only model's (``image_gain.mauc``).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from medrun.datasets import adnimerge as adm
from medrun.errors import DataError, UsageError
from medrun.metrics import classification as cm
from medrun.models.adxpro import ADxPro

from ..report import markdown_table, paper_data, paper_md, paper_note
from ..sweep import Child, headline, summarise
from ..tasks.supervised import Supervised
from . import SPEC
from .data import N_BIO, N_DG, Normaliser, Records, Subjects, model_images  # noqa: F401 (Normaliser, Subjects: the tests' names)

CV_KEYS = ("accuracy", "precision_macro", "recall_macro", "mauc", "mae_ml", "mre_pct")


# -- Lightning module ---------------------------------------------------------------------------------------------
def _lit(net: ADxPro, fill: np.ndarray, t):
    import lightning as L

    class LitADxPro(L.LightningModule):
        def __init__(self):
            super().__init__()
            self.net = net
            self.register_buffer("fill", torch.from_numpy(fill))

        def beta(self) -> float:
            if t.beta_warmup_epochs <= 0:
                return t.beta
            return t.beta * min(1.0, self.current_epoch / t.beta_warmup_epochs)

        def training_step(self, batch, batch_idx):
            out = forward(self.net, batch, self.fill, sample=True)
            parts = self.net.losses(out, batch, beta=self.beta(), n_bio=N_BIO)
            n = len(batch["dx"])
            for k, v in parts.items():
                self.log(f"train_{k}" if k != "loss" else "train_loss", v, on_step=False, on_epoch=True, batch_size=n)
            return parts["loss"]

        def configure_optimizers(self):
            opt = torch.optim.Adam(self.parameters(), lr=t.lr)
            if not t.cosine:
                return opt
            sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(1, t.epochs))
            return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "epoch"}}

    return LitADxPro()


def forward(net: ADxPro, b: dict, fill: torch.Tensor, sample: bool = False) -> dict:
    return net(b["images"], b["img_mask"], b["x"], b["x_mask"], b["dx"], b["dx_in"], b["times"], fill, sample=sample)


def infer(pred, net: ADxPro, ds: Subjects, fill: np.ndarray, batch_size: int = 16) -> dict:
    """The model over a dataset in order, through the predictor ``pred`` (the manifest's hardware): probabilities,
    forecasts, imputed inputs (numpy)."""
    f = pred.fabric.to_device(torch.from_numpy(fill))
    outs = pred.map(net, torch.utils.data.DataLoader(ds, batch_size=batch_size, shuffle=False),
                    fn=lambda n, b: forward(n, b, f))
    if not outs:
        return {k: np.zeros((0,)) for k in ("prob", "x_hat", "v")}
    return {"prob": torch.cat([torch.softmax(o["dx_logits"], -1) for o in outs]).numpy(),
            "x_hat": torch.cat([o["x_hat"] for o in outs]).numpy(), "v": torch.cat([o["v"] for o in outs]).numpy()}


def score(rec: Records, ds: Subjects, norm: Normaliser, res: dict) -> tuple[dict, list[dict]]:
    """DX metrics at every follow-up slot with an observed DX, and biomarker MAE (ml) / MRE (%)."""
    ys, ps, rows = [], [], []
    errs = {b: [] for b in adm.BIOMARKERS}
    rels = {b: [] for b in adm.BIOMARKERS}
    for k, i in enumerate(ds.idx):
        for t in range(1, len(rec.visits)):
            y = int(rec.dx[i, t])
            if y >= 0:
                ys.append(y)
                ps.append(res["prob"][k, t])
                rows.append({"PTID": rec.subjects[i], "VISCODE": rec.visits[t], "true": adm.CLASSES[y],
                             "pred": adm.CLASSES[int(res["prob"][k, t].argmax())],
                             **{f"prob_{c}": round(float(res["prob"][k, t, j]), 6) for j, c in enumerate(adm.CLASSES)}})
            icv = rec.icv[i, t]
            if not np.isfinite(icv):
                continue
            pred = norm.invert(res["x_hat"][k, t])[:N_BIO] * icv / 1000
            true = rec.x[i, t, :N_BIO] * icv / 1000
            for j, b in enumerate(adm.BIOMARKERS):
                if np.isfinite(true[j]):
                    errs[b].append(abs(pred[j] - true[j]))
                    rels[b].append(abs(pred[j] - true[j]) / abs(true[j]) * 100)
    if not ys:
        raise DataError("no follow-up visit with a diagnosis to score in this split",
                        fix="check the cohort (medrun prepare ad-progression) or use another fold")
    y, p = np.array(ys), np.array(ps)
    pred = p.argmax(1)
    prf = cm.precision_recall_f1(y, pred, num_classes=3)
    metrics = {"accuracy": cm.accuracy(y, pred), "precision_macro": prf["precision_macro"],
               "recall_macro": prf["recall_macro"], "mauc": cm.auroc(y, p, average="ovo"), "n_visits": int(len(y)),
               "n_subjects": len(ds), "confusion_matrix": cm.confusion_matrix(y, pred, num_classes=3).tolist()}
    per = {b: float(np.mean(v)) for b, v in errs.items() if v}
    metrics["mae_ml"] = float(np.mean(list(per.values()))) if per else float("nan")
    metrics["mre_pct"] = float(np.mean([np.mean(v) for v in rels.values() if v])) if per else float("nan")
    metrics["mae_ml_per_biomarker"] = per
    return metrics, rows


# -- the pipeline -------------------------------------------------------------------------------------------------
class AdProgression(Supervised):
    val_split = None  # no validation split: the last epoch is scored (the card's protocol)

    def build_model(self):
        mm, d = self.m.model, self.m.dataset
        if mm.arch != "adxpro":  # a Table 1 baseline on the tabular inputs (models/grud.py, models/minimalrnn.py)
            from medrun.models import create

            return create(mm.arch, n_bio=N_BIO, n_dg=N_DG, n_classes=len(adm.CLASSES), hidden=mm.hidden)
        return ADxPro(tuple(d.volume), N_BIO, N_DG, len(adm.CLASSES), mm.latent, mm.hidden,
                      len(adm.MODALITIES), mm.use_images)

    def records(self) -> tuple[Records, adm.Cohort]:
        if getattr(self, "_rec", None) is not None:
            return self._rec
        d = self.m.dataset
        root = Path(d.root)
        table, images = adm.adnimerge_path(root, d.adnimerge), adm.images_dir(root, d.images)
        df = adm.read_adnimerge(table, ignore_viscodes=d.ignore_viscodes)
        if df.attrs.get("dropped_viscodes"):
            self.ctx.log(f"dropped rows with unknown VISCODEs {df.attrs['dropped_viscodes']} (dataset.ignore_viscodes)")
        cohort = adm.select_cohort(df, d.visits)
        if not cohort.subjects:
            raise DataError(f"{table}: no subject passes the cohort selection (diagnosed baseline + another "
                            f"diagnosed visit among {', '.join(d.visits)}, no reversion)", file=table,
                            fix="check the DX and VISCODE columns")
        files = adm.scan_images(images, cohort, d.visits)
        mm = self.m.model
        if self.ctx.stage != "prepare":  # prepare counts every volume; the model reads its own
            files = model_images(files, mm)
        if not files and mm.use_images and mm.arch == "adxpro":
            self.ctx.log(f"no volumes found in {images}: every image is missing (biomarker-only input)")
        c = cohort.counts
        self.ctx.log(f"cohort: {c['subjects']} subjects, {c['visits']} visits ({c['stable']} stable, "
                     f"{c['progressive']} progressive) of {c['table_subjects']} subjects / {c['table_visits']} rows; "
                     f"{len(files)} volumes")
        self._rec = (Records(cohort, files, d.visits), cohort)
        return self._rec

    def folds(self, rec: Records) -> list[list[int]]:
        """Subject indices per fold; every subject in exactly one fold."""
        from sklearn.model_selection import KFold, StratifiedKFold

        t = self.m.train
        if t.folds_file:
            path = Path(t.folds_file)
            assign = adm.read_folds(path, rec.subjects)
            folds = [[i for i, s in enumerate(rec.subjects) if assign[s] == f] for f in sorted(set(assign.values()))]
            source = str(path)
        else:
            strata, k = rec.dx[:, 0], t.folds
            if len(rec) < k:
                raise DataError(f"{len(rec)} subjects cannot make {k} folds", fix=f"-o train.folds={max(2, len(rec))}")
            counts = np.bincount(strata, minlength=3)
            if counts[counts > 0].min() >= k:
                parts = StratifiedKFold(n_splits=k, shuffle=True, random_state=t.split_seed).split(
                    np.zeros(len(rec)), strata)
            else:
                parts = KFold(n_splits=k, shuffle=True, random_state=t.split_seed).split(np.zeros(len(rec)))
            folds = [sorted(te.tolist()) for _, te in parts]
            source = "computed folds"
        adm.check_disjoint([[rec.subjects[i] for i in f] for f in folds], source)
        return folds

    def splits(self) -> dict:
        rec = self.rec = self.records()[0]
        folds, f = self.folds(rec), self.m.train.fold
        if f >= len(folds):
            raise UsageError(f"train.fold is {f} but there are {len(folds)} folds",
                             fix=f"-o train.fold=0..{len(folds) - 1}")
        train = sorted(i for j, fo in enumerate(folds) if j != f for i in fo)
        self.norm = Normaliser(rec, train)
        self.ctx.record_splits({"train": [rec.subjects[i] for i in train], "test": [rec.subjects[i] for i in folds[f]]})
        self.ctx.log(f"fold {f + 1}/{len(folds)}: train {len(train)} · test {len(folds[f])} subjects")
        return {"train": train, "test": folds[f], "all": list(range(len(rec)))}

    # -- the template's hooks -------------------------------------------------------------------------------
    def dataset(self, idx, train: bool = False) -> Subjects:
        d = self.m.dataset
        return Subjects(self.rec, idx, self.norm, d.volume, d.crop, self.m.model.dx_input)

    def lit_module(self, net):
        return _lit(net, self.norm.fill, self.m.train)

    def weights_metadata(self) -> dict:
        return {"pipeline": "ad-progression", "classes": ",".join(adm.CLASSES)}

    def train(self) -> dict:
        metrics = super().train()
        self.ctx.write_json("checkpoints/normaliser.json", self.norm.to_dict())
        return metrics

    def infer(self, net, idx) -> tuple[Subjects, dict]:
        ds = self.dataset(idx)
        return ds, infer(self.predictor, net, ds, self.norm.fill, self.m.train.batch_size)

    def evaluate(self, net, idx):
        ds, res = self._scored = self.infer(net, idx)
        return score(self.rec, ds, self.norm, res)

    def figures(self, net, idx, metrics, rows, split):
        ds, res = self._scored
        if len(ds):
            with self.ctx.figure("trajectories", ncols=2, figsize=(11, 4)) as (_, axes):
                trajectories(axes, self.rec, ds, self.norm, res)

    def summary_line(self, split, m):
        return (f"{split}: ACC {m['accuracy']:.4f}  PRE {m['precision_macro']:.4f}  REC {m['recall_macro']:.4f}  "
                f"mAUC {m['mauc']:.4f}  MAE {m['mae_ml']:.3f} ml  MRE {m['mre_pct']:.2f} %  ({m['n_visits']} visits)")

    def paper_sections(self, metrics):
        return paper_sections(metrics, None, self.m.model.use_images)

    def predict_items(self):
        splits = self.splits()
        self.predict_split = self.m.eval.split if self.m.eval.split in splits else "all"
        return splits[self.predict_split]

    def predict_rows(self, net, idx) -> list[dict]:
        ds, res = self.infer(net, idx)
        rec, rows = self.rec, []
        for k, i in enumerate(ds.idx):
            for t in range(1, len(rec.visits)):
                p = res["prob"][k, t]
                rows.append({"PTID": rec.subjects[i], "VISCODE": rec.visits[t],
                             "visit_observed": bool(rec.present[i, t]), "pred": adm.CLASSES[int(p.argmax())],
                             **{f"prob_{c}": round(float(p[j]), 6) for j, c in enumerate(adm.CLASSES)}})
        self.n_subjects = len(ds)
        return rows

    def predict_summary(self, rows):
        counts = {c: sum(r["pred"] == c for r in rows) for c in adm.CLASSES}
        self.ctx.log(f"forecast {len(rows)} follow-up slots of {self.n_subjects} subjects: {counts}")
        return {"n_subjects": self.n_subjects, "split": self.predict_split, "predicted": counts}

    # -- extra stages ---------------------------------------------------------------------------------------------
    def impute(self) -> dict:
        from .impute import impute

        return impute(self)

    def prepare(self) -> dict:
        from .impute import prepare

        return prepare(self)

    def baselines(self) -> dict:
        from .baselines import baselines

        return baselines(self)

    def cv(self) -> dict:
        """k-fold CV: one train run per fold (``train.fold``), and with ``cv.baseline`` one biomarker-only train run
        per fold, each reused when complete; mean ± sd over folds and the paired t-test."""
        from scipy.stats import ttest_rel

        rec, _ = self.records()
        folds = self.folds(rec)  # a bad folds file stops here, before any fold trains
        self.ctx.record_splits({f"fold{i + 1}": [rec.subjects[j] for j in f] for i, f in enumerate(folds)})
        kinds = {"adxpro": {}, **({"biomarker-only": {"model.use_images": False}} if self.m.cv.baseline else {})}
        runs = self.ctx.sweep([Child(f"fold{i + 1}" + ("" if kind == "adxpro" else f"-{kind}"), {"train.fold": i, **o},
                                     labels={"fold": i + 1, "model": kind})
                               for kind, o in kinds.items() for i in range(len(folds))], title="fold")
        per_fold = [r.row for r in runs if r.child.labels["model"] == "adxpro"]
        self.ctx.write_csv("per_fold.csv", per_fold)
        self.ctx.write_csv("per_case.csv", [{"fold": r.child.labels["fold"], **row} for r in runs
                                            if r.child.labels["model"] == "adxpro" for row in r.read_csv()])
        keys = [*CV_KEYS, "secs_per_epoch"]
        metrics: dict = {"folds": len(folds), **headline(summarise(per_fold, keys)[0], keys)}
        per_bio = [r.metrics.get("mae_ml_per_biomarker", {}) for r in runs if r.child.labels["model"] == "adxpro"]
        metrics["mae_ml_per_biomarker"] = {b: float(np.mean([f[b] for f in per_bio if b in f]))
                                           for b in adm.BIOMARKERS if any(b in f for f in per_bio)}
        base = [r.row for r in runs if r.child.labels["model"] == "biomarker-only"]
        if base:
            self.ctx.write_csv("per_fold_baseline.csv", base)
            s = summarise(base, CV_KEYS)[0]
            for key in CV_KEYS:
                a, b = (np.array([f[key] for f in rows], dtype=float) for rows in (per_fold, base))
                metrics[f"baseline_{key}"], metrics[f"baseline_{key}_sd"] = s[key], s[f"{key}_sd"]
                metrics[f"ttest_p_{key}"] = float(ttest_rel(a, b).pvalue) if len(a) > 1 and not np.allclose(a, b) \
                    else float("nan")
        table = markdown_table(["fold", *CV_KEYS, "run"], [[f["fold"], *[f[k] for k in CV_KEYS], f["run_id"]]
                                                          for f in per_fold])
        self.ctx.write_text("paper.md", paper_md(self.ctx.spec, self.m, metrics, self.ctx,
                                                 title=f"ADxPro, {len(folds)}-fold CV",
                                                 sections=[*paper_sections(metrics, len(folds),
                                                                           self.m.model.use_images),
                                                           "## Folds (each a train run of its own)\n\n" + table]))
        return metrics


def paper_sections(m: dict, folds: int | None, use_images: bool = True) -> list[str]:
    """Tables 1 and 2 of the paper (``paper.yaml``) with this run's row, the MAE per biomarker, and the paired t-test
    against the biomarker-only model when there is one."""
    def v(key):
        val, sd = m.get(key), m.get(f"{key}_sd")
        if val is None:
            return "—"
        return f"{val:.4f} ± {sd:.4f}" if sd is not None and sd == sd else f"{val:.4f}"

    tables = paper_data(SPEC)["tables"]
    setting = f"{folds}-fold CV" if folds else "one held-out fold"
    t1 = [*tables["table1"]["rows"], ["MRI+PET+Bio+Dg+Gen" if use_images else "Bio+Dg+Gen", f"**this run** ({setting})",
                                      v("accuracy"), v("precision_macro"), v("recall_macro"), v("mauc")]]
    if "baseline_accuracy" in m:
        t1.append(["Bio+Dg+Gen", f"this run, biomarker-only ({setting})", v("baseline_accuracy"),
                   v("baseline_precision_macro"), v("baseline_recall_macro"), v("baseline_mauc")])
    t2 = [*tables["table2"]["rows"], ["**this run**", v("mae_ml"), v("mre_pct")]]
    out = [f"## {tables['table1']['title']}\n\n" + markdown_table(tables["table1"]["header"], t1),
           f"## {tables['table2']['title']}\n\n" + markdown_table(tables["table2"]["header"], t2)]
    per = m.get("mae_ml_per_biomarker")
    if per:
        out.append("## MAE per biomarker (ml, this run)\n\n"
                   + markdown_table(list(per), [[float(x) for x in per.values()]]))
    if "baseline_accuracy" in m:
        keys = [k for k in CV_KEYS if f"ttest_p_{k}" in m]
        out.append("## Paired t-test, ADxPro vs the biomarker-only model (same folds)\n\n"
                   + markdown_table(["metric", "p"], [[k, m[f"ttest_p_{k}"]] for k in keys]))
    out.append(paper_note(SPEC, "comparison"))
    return out


def trajectories(axes, rec: Records, ds: Subjects, norm: Normaliser, res: dict) -> None:
    """Per test subject (up to 6, most observed visits): Hippocampus observed vs forecast (ml), and the forecast
    expected stage P(MCI) + 2·P(AD) against the observed DX."""
    order = sorted(range(len(ds)), key=lambda k: -int(rec.present[ds.idx[k]].sum()))[:6]
    years = rec.times[0]
    hip = adm.BIOMARKERS.index("Hippocampus")
    for n, k in enumerate(order):
        i, col = ds.idx[k], f"C{n}"
        obs = rec.x[i, :, hip] * rec.icv[i] / 1000
        pred = norm.invert(res["x_hat"][k])[:, hip] * rec.subject_icv[i] / 1000
        axes[0].plot(years, obs, "o", color=col)
        axes[0].plot(years[1:], pred[1:], "-", color=col, label=rec.subjects[i])
        stage = res["prob"][k, :, 1] + 2 * res["prob"][k, :, 2]
        dx = np.where(rec.dx[i] >= 0, rec.dx[i], np.nan)
        axes[1].plot(years, dx + 0.03 * n, "o", color=col)
        axes[1].plot(years[1:], stage[1:], "-", color=col)
    axes[0].set(xlabel="years from baseline", ylabel="Hippocampus (ml)", title="observed (dots) vs forecast")
    axes[1].set(xlabel="years from baseline", ylabel="stage", yticks=[0, 1, 2], yticklabels=list(adm.CLASSES),
                title="observed DX (dots) vs forecast P(MCI)+2·P(AD)")
    axes[0].legend(fontsize=7)
