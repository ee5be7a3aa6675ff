"""ad-progression, the method (card: shared/papers/ad-progression.md; seed 003, lines 4823–5105).

Data (``datasets.adnimerge``): ADNIMERGE.csv read with pandas (required columns checked, VISCODE normalised,
unknown codes a hard error unless ``dataset.ignore_viscodes``), the paper's cohort (visits bl, m12 … m60; diagnosed
baseline + ≥ 1 more diagnosed visit; no reversion), volumes ``images/{PTID}_{VISCODE}_{MRI|PET}.nii.gz`` (absent =
missing modality), centre-cropped to 128×160×128 and min–max scaled to [0, 1] (``dataset.volume`` resizes further
for CPU runs). Per visit slot t (the fixed VISCODE grid, s_t = months / 12; a missing visit has every mask 0):
6 volumes divided by ICV then z-scored; age = AGE (baseline) + s_t and education z-scored; gender one-hot (2), APOE4
one-hot (3); DX (CN / MCI / AD). Normalisation statistics and the t = 1 fill values (means; DX class frequencies)
come from the training subjects of the fold only.

Model (``models.adxpro.ADxPro``): AMVAE (per-modality 3D conv encoder + CBAM, masked product of experts with a
N(0, I) prior expert, per-modality decoders) → v_t = [μ_t ‖ bio ‖ dg ‖ dx] with forecasts filling masked entries →
time-decayed coupled-gate LSTM → next-visit tabular forecast (residual on the X slice) and DX logits. Loss: Kendall
uncertainty weighting of CE(DX at t = 2..T, observed), masked L1 on the biomarkers at t = 2..T, and the ELBO (BCE
recon of present modalities from the sampled z_t, β·KL with β warmed up linearly over ``train.beta_warmup_epochs``).
Adam, lr 2e-4, cosine annealing over the epochs, batch 16 subjects, Xavier-uniform init.

Protocol: subject-level ``train.folds``-fold CV (sklearn ``StratifiedKFold`` on the baseline DX, shuffled,
``train.split_seed``; or ``cv.folds_file``). Teacher-forced one-step-ahead: inputs observed at visits ≤ t predict DX
at t + 1; every follow-up slot (t = 2..6) with an observed DX is scored. Setting "without Dx" (Table 1): DX is never
an input (``model.dx_input: none``); ``baseline`` feeds the baseline DX (Table 3).

Metrics: ACC; PRE and REC macro over 3 classes; mAUC = Hand & Till (``metrics.classification.auroc(average='ovo')``,
checked against sklearn ``roc_auc_score(multi_class='ovo')``); MAE (ml) and MRE (%) of the biomarker forecasts at
observed follow-ups after undoing the z-score and the ICV division (ADNIMERGE volumes are mm³; 1 ml = 1000 mm³),
the mean over the 6 volumes and each volume.

Stages: ``prepare`` (cohort selection and counts, ``cohort.csv``, a cohort figure; nothing is asserted against the
paper's 1,369 / 5,768), ``train`` (fold ``train.fold`` held out; weights ``checkpoints/model.safetensors``), ``eval``
and ``predict`` (a train run's weights on ``eval.split`` test | train | all), ``impute`` (a train run's weights: every
missing MRI/PET of each kept visit slot decoded from the fused latent, or from the LSTM's imputed latent where the
visit has no image, as NIfTI under ``imputed/``; biomarkers observed or imputed, in mm³, ``imputed_biomarkers.csv``),
``cv`` (every fold, mean ± sd; ``cv.baseline: true`` also trains the biomarker-only model on each fold and adds a
paired t-test, scipy ``ttest_rel``).

Choices where the card is silent (ours): no validation split (the last epoch is scored, as the card's protocol does
not mention early stopping); s_t from the VISCODE (nominal months), not EXAMDATE; demographics (static, and the
nominal age) are observed at every slot of a subject who has them; a biomarker counts as observed when it and the
visit's ICV are present; the trajectory figure shows the test subjects with the most observed visits.

Not shown: the image branch's gain. On the fixture (whose PET carries the progression rate, which no table column
does) ADxPro and the biomarker-only model score the same (2-fold CV, 16 epochs, batch 4: mAUC 0.882 vs 0.884,
paired t-test p = 0.66, which with 2 folds means little); ``cv.baseline: true`` runs the comparison on real data.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import torch

from medrun.datasets import adnimerge as adm
from medrun.errors import DataError, UsageError
from medrun.metrics import classification as cm
from medrun.models.adxpro import ADxPro

from .. import training
from ..base import Pipeline
from ..report import learning_curves, markdown_table, paper_md, save_figure
from ..tasks.classification import loader, write_csv

N_BIO, N_DG = len(adm.BIOMARKERS), 7  # age, education, gender (2), APOE4 (3)
X_NAMES = [*adm.BIOMARKERS, "age", "education", "male", "female", "apoe4_0", "apoe4_1", "apoe4_2"]
ZSCORED = list(range(N_BIO + 2))  # biomarker ratios, age, education; one-hots stay 0/1


# -- data ---------------------------------------------------------------------------------------------------------
class Records:
    """The cohort as arrays over subjects × visit slots (raw units; normalised per fold by ``Normaliser``)."""

    def __init__(self, cohort: adm.Cohort, images: dict, visits: list[str]):
        import pandas as pd

        t = cohort.table
        self.subjects, self.visits = cohort.subjects, list(visits)
        n, T = len(self.subjects), len(visits)
        idx = {s: i for i, s in enumerate(self.subjects)}
        self.x = np.full((n, T, N_BIO + N_DG), np.nan, dtype=np.float64)
        self.dx = np.full((n, T), -1, dtype=np.int64)
        self.icv = np.full((n, T), np.nan)
        self.present = np.zeros((n, T), dtype=bool)
        self.times = np.tile(np.array([adm.viscode_months(v) / 12 for v in visits], dtype=np.float32), (n, 1))
        static: dict[int, dict] = {}
        for row in t.itertuples(index=False):
            i, k = idx[row.PTID], int(row.t)
            self.present[i, k] = True
            self.dx[i, k] = -1 if pd.isna(row.dx) else int(row.dx)
            icv = row.ICV
            self.icv[i, k] = icv
            for j, b in enumerate(adm.BIOMARKERS):
                val = getattr(row, b)
                self.x[i, k, j] = val / icv if icv == icv and icv > 0 else np.nan
            st = static.setdefault(i, {})
            for col in ("AGE", "PTEDUCAT", "APOE4", "PTGENDER"):
                val = getattr(row, col)
                if col not in st and not pd.isna(val) and str(val).strip() not in ("", "nan"):
                    st[col] = val
        for i, st in static.items():
            if "AGE" in st:
                self.x[i, :, N_BIO] = float(st["AGE"]) + self.times[i]
            if "PTEDUCAT" in st:
                self.x[i, :, N_BIO + 1] = float(st["PTEDUCAT"])
            if "PTGENDER" in st:
                male = str(st["PTGENDER"]).strip().lower() in ("male", "m", "1")
                self.x[i, :, N_BIO + 2] = float(male)
                self.x[i, :, N_BIO + 3] = float(not male)
            if "APOE4" in st:
                a = int(round(float(st["APOE4"])))
                for j in range(3):
                    self.x[i, :, N_BIO + 4 + j] = float(a == j)
        self.x[:, :, :N_BIO][~self.present] = np.nan
        self.subject_icv = np.array([np.nanmean(r) if np.isfinite(r).any() else np.nan for r in self.icv])
        self.images = images  # {(ptid, viscode, modality): path}
        self.img_mask = np.zeros((n, T, len(adm.MODALITIES)), dtype=np.float32)
        for (ptid, v, mod) in images:
            if ptid in idx and v in self.visits:
                self.img_mask[idx[ptid], self.visits.index(v), adm.MODALITIES.index(mod)] = 1.0

    def __len__(self):
        return len(self.subjects)


class Normaliser:
    """z-score statistics of the training subjects (observed entries), and the t = 1 fill vector."""

    def __init__(self, rec: Records, train_idx: list[int], n_classes: int = 3):
        x = rec.x[train_idx]
        self.mean = np.zeros(N_BIO + N_DG)
        self.sd = np.ones(N_BIO + N_DG)
        for j in ZSCORED:
            col = x[:, :, j][np.isfinite(x[:, :, j])]
            if col.size:
                self.mean[j], self.sd[j] = col.mean(), col.std() if col.std() > 0 else 1.0
        z = self.apply(x)
        fill = [float(np.nanmean(z[:, :, j])) if np.isfinite(z[:, :, j]).any() else 0.0 for j in range(N_BIO + N_DG)]
        dx = rec.dx[train_idx]
        freq = np.bincount(dx[dx >= 0], minlength=n_classes).astype(float)
        self.fill = np.array(fill + list(freq / max(freq.sum(), 1)), dtype=np.float32)

    def apply(self, x):
        return (x - self.mean) / self.sd

    def invert(self, z):
        return z * self.sd + self.mean

    def to_dict(self) -> dict:
        return {"names": X_NAMES, "mean": self.mean.tolist(), "sd": self.sd.tolist(), "fill": self.fill.tolist()}


class Subjects(torch.utils.data.Dataset):
    """One item per subject: every tensor the model's ``forward`` takes (see ``models.adxpro.ADxPro``)."""

    PRELOAD_BYTES = 512 * 1024 * 1024

    def __init__(self, rec: Records, idx: list[int], norm: Normaliser, shape, crop, dx_input: str):
        self.rec, self.idx, self.shape, self.crop = rec, list(idx), tuple(shape), crop
        z = norm.apply(rec.x[self.idx])
        self.x_mask = np.isfinite(z).astype(np.float32)
        self.x = np.nan_to_num(z, nan=0.0).astype(np.float32)
        self.dx_in = np.zeros((len(self.idx), len(rec.visits)), dtype=np.float32)
        if dx_input == "baseline":
            self.dx_in[:, 0] = 1.0
        n_vol = int(rec.img_mask[self.idx].sum())
        self._cache = {} if n_vol * int(np.prod(self.shape)) * 4 <= self.PRELOAD_BYTES else None

    def __len__(self):
        return len(self.idx)

    def volume(self, i: int, t: int, m: int) -> np.ndarray:
        key = (self.rec.subjects[i], self.rec.visits[t], adm.MODALITIES[m])
        if self._cache is not None and key in self._cache:
            return self._cache[key]
        vol = adm.load_volume(self.rec.images[key], self.shape, self.crop)
        if self._cache is not None:
            self._cache[key] = vol
        return vol

    def __getitem__(self, k):
        i = self.idx[k]
        T, M = len(self.rec.visits), len(adm.MODALITIES)
        imgs = np.zeros((T, M, *self.shape), dtype=np.float32)
        mask = self.rec.img_mask[i]
        for t in range(T):
            for m in range(M):
                if mask[t, m]:
                    imgs[t, m] = self.volume(i, t, m)
        return {"images": torch.from_numpy(imgs), "img_mask": torch.from_numpy(mask.copy()),
                "x": torch.from_numpy(self.x[k]), "x_mask": torch.from_numpy(self.x_mask[k]),
                "dx": torch.from_numpy(self.rec.dx[i].copy()), "dx_in": torch.from_numpy(self.dx_in[k]),
                "times": torch.from_numpy(self.rec.times[i].copy()), "index": k}


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


@torch.no_grad()
def infer(net: ADxPro, ds: Subjects, fill: np.ndarray, batch_size: int = 16) -> dict:
    """Run the model over a dataset in order: probabilities, forecasts, imputed inputs (numpy)."""
    net.eval()
    f = torch.from_numpy(fill)
    outs: dict[str, list] = {"prob": [], "x_hat": [], "v": []}
    for b in torch.utils.data.DataLoader(ds, batch_size=batch_size, shuffle=False):
        o = forward(net, b, f)
        outs["prob"].append(torch.softmax(o["dx_logits"], -1).numpy())
        outs["x_hat"].append(o["x_hat"].numpy())
        outs["v"].append(o["v"].numpy())
    return {k: np.concatenate(v) if v else np.zeros((0,)) for k, v in outs.items()}


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
class AdProgression(Pipeline):
    def build_model(self) -> ADxPro:
        mm, d = self.m.model, self.m.dataset
        return ADxPro(tuple(d.volume), N_BIO, N_DG, len(adm.CLASSES), mm.latent, mm.hidden,
                      len(adm.MODALITIES), mm.use_images)

    def _paths(self) -> tuple[Path, Path]:
        d = self.m.dataset
        root = Path(d.root)
        return adm.adnimerge_path(root, d.adnimerge), adm.images_dir(root, d.images)

    def records(self) -> tuple[Records, adm.Cohort]:
        if getattr(self, "_rec", None) is not None:
            return self._rec
        d = self.m.dataset
        table, images = self._paths()
        df = adm.read_adnimerge(table, ignore_viscodes=d.ignore_viscodes)
        if df.attrs.get("dropped_viscodes"):
            self.ctx.log(f"dropped rows with unknown VISCODEs {df.attrs['dropped_viscodes']} (dataset.ignore_viscodes)")
        cohort = adm.select_cohort(df, d.visits)
        if not cohort.subjects:
            raise DataError(f"{table}: no subject passes the cohort selection (diagnosed baseline + another "
                            f"diagnosed visit among {', '.join(d.visits)}, no reversion)", file=table,
                            fix="check the DX and VISCODE columns")
        files = adm.scan_images(images, cohort, d.visits)
        if not files and self.m.model.use_images:
            self.ctx.log(f"no volumes found in {images}: every image is missing (biomarker-only input)")
        c = cohort.counts
        self.ctx.log(f"cohort: {c['subjects']} subjects, {c['visits']} visits ({c['stable']} stable, "
                     f"{c['progressive']} progressive) of {c['table_subjects']} subjects / {c['table_visits']} rows; "
                     f"{len(files)} volumes")
        self._rec = (Records(cohort, files, d.visits), cohort)
        return self._rec

    def folds(self, rec: Records) -> list[list[int]]:
        """Subject indices per fold; every subject in exactly one fold."""
        from sklearn.model_selection import StratifiedKFold

        t = self.m.train
        if self.m.cv.folds_file:
            path = Path(self.m.cv.folds_file)
            assign = adm.read_folds(path, rec.subjects)
            ids = sorted(set(assign.values()))
            folds = [[i for i, s in enumerate(rec.subjects) if assign[s] == f] for f in ids]
            source = str(path)
        else:
            strata = rec.dx[:, 0]
            k = t.folds
            if len(rec) < k:
                raise DataError(f"{len(rec)} subjects cannot make {k} folds", fix=f"-o train.folds={max(2, len(rec))}")
            counts = np.bincount(strata, minlength=3)
            if counts[counts > 0].min() >= k:
                splitter = StratifiedKFold(n_splits=k, shuffle=True, random_state=t.split_seed)
                folds = [sorted(te.tolist()) for _, te in splitter.split(np.zeros(len(rec)), strata)]
            else:
                from sklearn.model_selection import KFold

                splitter = KFold(n_splits=k, shuffle=True, random_state=t.split_seed)
                folds = [sorted(te.tolist()) for _, te in splitter.split(np.zeros(len(rec)))]
            source = "computed folds"
        adm.check_disjoint([[rec.subjects[i] for i in f] for f in folds], source)
        return folds

    def split(self, rec: Records, fold: int | None = None) -> dict[str, list[int]]:
        folds = self.folds(rec)
        f = self.m.train.fold if fold is None else fold
        if f >= len(folds):
            raise UsageError(f"train.fold is {f} but there are {len(folds)} folds", fix=f"-o train.fold=0..{len(folds) - 1}")
        test = folds[f]
        train = sorted(i for j, fo in enumerate(folds) if j != f for i in fo)
        return {"train": train, "test": test, "all": list(range(len(rec)))}

    def _record_splits(self, rec: Records, splits: dict) -> None:
        lock = self.ctx.run.path / "data.lock.json"
        data = json.loads(lock.read_text())
        data["splits"] = {k: [rec.subjects[i] for i in v] for k, v in splits.items() if k != "all"}
        self.ctx.run.write_json("data.lock.json", data)

    def dataset(self, rec: Records, idx: list[int], norm: Normaliser) -> Subjects:
        d = self.m.dataset
        return Subjects(rec, idx, norm, d.volume, d.crop, self.m.model.dx_input)

    # -- training ---------------------------------------------------------------------------------------------
    def _fit(self, rec: Records, train_idx: list[int], *, use_images: bool | None = None, ckpt: bool = True):
        t = self.m.train
        norm = Normaliser(rec, train_idx)
        net = self.build_model()
        if use_images is not None and use_images != net.use_images:
            mm, d = self.m.model, self.m.dataset
            net = ADxPro(tuple(d.volume), N_BIO, N_DG, 3, mm.latent, mm.hidden, 2, use_images)
        module = _lit(net, norm.fill, t)
        trainer = training.make_trainer(self.ctx, t.epochs, checkpoint=ckpt, logger=ckpt)
        t0 = time.perf_counter()
        training.fit(trainer, module,
                     train_dataloaders=loader(self.dataset(rec, train_idx, norm), t.batch_size, True, t.num_workers,
                                              seed=self.m.seed),
                     ckpt_path=training.resume_checkpoint(self.ctx.run) if ckpt else None)
        return net, norm, (time.perf_counter() - t0) / max(1, t.epochs)

    def train(self) -> dict:
        rec, _ = self.records()
        splits = self.split(rec)
        self._record_splits(rec, splits)
        self.ctx.log(f"fold {self.m.train.fold + 1}/{self.m.train.folds}: train {len(splits['train'])} · "
                     f"test {len(splits['test'])} subjects")
        net, norm, secs = self._fit(rec, splits["train"])
        ck = self.ctx.run.path / "checkpoints"
        training.save_weights(net, ck / "model.safetensors", {"pipeline": "ad-progression", "classes": ",".join(adm.CLASSES)})
        self.ctx.run.write_json("checkpoints/normaliser.json", norm.to_dict())
        learning_curves(self.ctx.run.path / "logs" / "metrics.csv", self.ctx.run.path / "figures" / "learning_curves.png")
        metrics = self._report(rec, net, norm, splits["test"], "test")
        metrics["secs_per_epoch"] = round(secs, 3)
        metrics.update(training.count_params(net))
        return metrics

    def _report(self, rec, net, norm, idx, split: str) -> dict:
        ds = self.dataset(rec, idx, norm)
        res = infer(net, ds, norm.fill, self.m.train.batch_size)
        metrics, rows = score(rec, ds, norm, res)
        metrics["split"] = split
        write_csv(self.ctx.run.path / "per_case.csv", rows)
        trajectories_png(rec, ds, norm, res, self.ctx.run.path / "figures" / "trajectories.png")
        self.ctx.log(f"{split}: ACC {metrics['accuracy']:.4f}  PRE {metrics['precision_macro']:.4f}  "
                     f"REC {metrics['recall_macro']:.4f}  mAUC {metrics['mauc']:.4f}  MAE {metrics['mae_ml']:.3f} ml  "
                     f"MRE {metrics['mre_pct']:.2f} %  ({metrics['n_visits']} visits)")
        self.ctx.run.write_text("paper.md", paper_md(self.ctx.spec, self.m, metrics, self.ctx,
                                                     sections=paper_sections(metrics, None, self.m.model.use_images)))
        return metrics

    # -- stages on a finished train run -----------------------------------------------------------------------
    def _trained(self):
        rec, _ = self.records()
        splits = self.split(rec)
        norm = Normaliser(rec, splits["train"])
        return rec, splits, norm, self.trained_model()

    def eval(self) -> dict:
        rec, splits, norm, net = self._trained()
        split = self.m.eval.split
        if split not in splits:
            raise UsageError(f"unknown split '{split}'", fix=f"use --split {' | '.join(splits)}")
        self._record_splits(rec, splits)
        return self._report(rec, net, norm, splits[split], split)

    def predict(self) -> dict:
        rec, splits, norm, net = self._trained()
        split = self.m.eval.split if self.m.eval.split in splits else "all"
        ds = self.dataset(rec, splits[split], norm)
        res = infer(net, ds, norm.fill, self.m.train.batch_size)
        rows = []
        for k, i in enumerate(ds.idx):
            for t in range(1, len(rec.visits)):
                p = res["prob"][k, t]
                rows.append({"PTID": rec.subjects[i], "VISCODE": rec.visits[t], "visit_observed": bool(rec.present[i, t]),
                             "pred": adm.CLASSES[int(p.argmax())],
                             **{f"prob_{c}": round(float(p[j]), 6) for j, c in enumerate(adm.CLASSES)}})
        write_csv(self.ctx.run.path / "per_case.csv", rows)
        counts = {c: sum(r["pred"] == c for r in rows) for c in adm.CLASSES}
        self.ctx.log(f"forecast {len(rows)} follow-up slots of {len(ds)} subjects: {counts}")
        return {"n": len(rows), "n_subjects": len(ds), "split": split, "predicted": counts}

    def impute(self) -> dict:
        import nibabel as nib

        rec, splits, norm, net = self._trained()
        idx = splits[self.m.impute.split]
        ds = self.dataset(rec, idx, norm)
        res = infer(net, ds, norm.fill, self.m.train.batch_size)
        out_dir = self.ctx.run.path / "imputed"
        out_dir.mkdir(parents=True, exist_ok=True)
        L = net.latent
        n_vol, rows = 0, []
        for k, i in enumerate(ds.idx):
            affine = _affine(rec, i)
            icv = rec.subject_icv[i]
            for t, vis in enumerate(rec.visits):
                for m, mod in enumerate(adm.MODALITIES):
                    if rec.img_mask[i, t, m] or not net.use_images:
                        continue
                    z = torch.from_numpy(res["v"][k, t, :L][None])
                    with torch.no_grad():
                        vol = net.decode(z, m)[0].numpy().astype(np.float32)
                    nib.save(nib.Nifti1Image(vol, affine), str(out_dir / f"{rec.subjects[i]}_{vis}_{mod}.nii.gz"))
                    n_vol += 1
                xv = norm.invert(res["v"][k, t, L:L + N_BIO + N_DG])
                icv_t = rec.icv[i, t] if np.isfinite(rec.icv[i, t]) else icv
                row = {"PTID": rec.subjects[i], "VISCODE": vis, "visit_observed": bool(rec.present[i, t])}
                for j, b in enumerate(adm.BIOMARKERS):
                    observed = bool(np.isfinite(rec.x[i, t, j]))
                    val = rec.x[i, t, j] * icv_t if observed else xv[j] * icv_t
                    row[b] = round(float(val), 2) if np.isfinite(val) else ""
                    row[f"{b}_imputed"] = not observed
                rows.append(row)
        write_csv(self.ctx.run.path / "imputed_biomarkers.csv", rows)
        n_bio = sum(r[f"{b}_imputed"] for r in rows for b in adm.BIOMARKERS)
        self.ctx.log(f"imputed {n_vol} volumes (imputed/*.nii.gz) and {n_bio} biomarker values "
                     f"(imputed_biomarkers.csv) for {len(idx)} subjects")
        return {"imputed_volumes": n_vol, "imputed_biomarkers": int(n_bio), "n_subjects": len(idx),
                "split": self.m.impute.split}

    # -- prepare ----------------------------------------------------------------------------------------------
    def prepare(self) -> dict:
        import pandas as pd

        rec, cohort = self.records()
        t = cohort.table.copy()
        t["has_MRI"] = [bool(rec.img_mask[rec.subjects.index(p), k, 0]) for p, k in zip(t["PTID"], t["t"], strict=True)]
        t["has_PET"] = [bool(rec.img_mask[rec.subjects.index(p), k, 1]) for p, k in zip(t["PTID"], t["t"], strict=True)]
        t["DX_class"] = ["" if pd.isna(d) else adm.CLASSES[int(d)] for d in t["dx"]]
        cols = ["RID", "PTID", "VISCODE", "months", "DX_class", *adm.DEMOGRAPHICS, *adm.BIOMARKERS, "ICV", "has_MRI", "has_PET"]
        self.ctx.run.write_text("cohort.csv", t[cols].to_csv(index=False))
        c = dict(cohort.counts)
        c["volumes_mri"] = int(rec.img_mask[:, :, 0].sum())
        c["volumes_pet"] = int(rec.img_mask[:, :, 1].sum())
        c["missing_visit_slots"] = int((~rec.present).sum())
        cohort_png(rec, self.ctx.run.path / "figures" / "cohort.png")
        rows = [[k, v] for k, v in c.items() if not isinstance(v, (dict, list))]
        self.ctx.run.write_text("paper.md", "\n".join([
            f"# ADxPro cohort (prepare run `{self.ctx.run.info().get('id', '')[:12]}`)", "",
            "Paper (lines 5004–5012): 2,430 participants / 16,340 visits in the source table; after selection 1,369 "
            "patients, 5,768 visits (971 stable, 398 progressive). The counts depend on the ADNIMERGE version and are "
            "not asserted.", "", markdown_table(["count", "this data"], rows), ""]))
        return c

    # -- cross-validation -------------------------------------------------------------------------------------
    def cv(self) -> dict:
        from scipy.stats import ttest_rel

        rec, _ = self.records()
        folds = self.folds(rec)
        per_fold, base_fold, rows, per_bio = [], [], [], []
        self._record_splits(rec, {f"fold{i + 1}": f for i, f in enumerate(folds)})
        for i in range(len(folds)):
            sp = self.split(rec, i)
            self.ctx.log(f"fold {i + 1}/{len(folds)}: train {len(sp['train'])} · test {len(sp['test'])} subjects")
            net, norm, secs = self._fit(rec, sp["train"], ckpt=False)
            training.save_weights(net, self.ctx.run.path / "checkpoints" / f"fold{i + 1}.safetensors")
            ds = self.dataset(rec, sp["test"], norm)
            res = infer(net, ds, norm.fill, self.m.train.batch_size)
            m, case_rows = score(rec, ds, norm, res)
            if i == 0:
                trajectories_png(rec, ds, norm, res, self.ctx.run.path / "figures" / "trajectories.png")
            per_fold.append({"fold": i + 1, **{k: m[k] for k in _CV_KEYS}, "secs_per_epoch": round(secs, 3)})
            per_bio.append(m["mae_ml_per_biomarker"])
            rows += [{"fold": i + 1, **r} for r in case_rows]
            if self.m.cv.baseline:
                bnet, bnorm, _ = self._fit(rec, sp["train"], use_images=False, ckpt=False)
                bds = self.dataset(rec, sp["test"], bnorm)
                bm, _ = score(rec, bds, bnorm, infer(bnet, bds, bnorm.fill, self.m.train.batch_size))
                base_fold.append({"fold": i + 1, **{k: bm[k] for k in _CV_KEYS}})
        write_csv(self.ctx.run.path / "per_case.csv", rows)
        write_csv(self.ctx.run.path / "per_fold.csv", per_fold)
        metrics: dict = {"folds": len(folds)}
        for key in (*_CV_KEYS, "secs_per_epoch"):
            vals = np.array([f[key] for f in per_fold], dtype=float)
            metrics[key] = float(np.nanmean(vals))
            metrics[f"{key}_sd"] = float(np.nanstd(vals, ddof=1))
        metrics["mae_ml_per_biomarker"] = {b: float(np.mean([f[b] for f in per_bio if b in f]))
                                           for b in adm.BIOMARKERS if any(b in f for f in per_bio)}
        if base_fold:
            write_csv(self.ctx.run.path / "per_fold_baseline.csv", base_fold)
            for key in _CV_KEYS:
                a = np.array([f[key] for f in per_fold], dtype=float)
                b = np.array([f[key] for f in base_fold], dtype=float)
                metrics[f"baseline_{key}"] = float(np.nanmean(b))
                metrics[f"baseline_{key}_sd"] = float(np.nanstd(b, ddof=1))
                p = ttest_rel(a, b).pvalue if len(a) > 1 and not np.allclose(a, b) else float("nan")
                metrics[f"ttest_p_{key}"] = float(p)
        table = markdown_table(["fold", *_CV_KEYS], [[f["fold"], *[f[k] for k in _CV_KEYS]] for f in per_fold])
        self.ctx.run.write_text("paper.md", paper_md(self.ctx.spec, self.m, metrics, self.ctx,
                                                     title=f"ADxPro, {len(folds)}-fold CV",
                                                     sections=[*paper_sections(metrics, len(folds), self.m.model.use_images),
                                                               "## Folds\n\n" + table]))
        return metrics


_CV_KEYS = ("accuracy", "precision_macro", "recall_macro", "mauc", "mae_ml", "mre_pct")

TABLE1 = [("Bio+Dg+Gen", "GRU-D", 0.5750, 0.5722, 0.5934, 0.7632), ("Bio+Dg+Gen", "MinimalRNN", 0.5680, 0.5661, 0.5885, 0.7549),
          ("Bio+Dg+Gen", "BiPro", 0.5847, 0.5867, 0.5876, 0.7650), ("MRI+Bio+Dg+Gen", "CNN-BRNN", 0.5947, 0.5955, 0.6000, 0.7654),
          ("MRI+PET+Bio+Dg+Gen", "ADxPro", 0.6059, 0.6074, 0.6166, 0.7749)]
TABLE2 = [("GRU-D", 5.5422, 7.3789), ("MinimalRNN", 3.9373, 5.7233), ("BiPro", 4.0700, 5.9741),
          ("CNN-BRNN", 5.6713, 7.5433), ("ADxPro", 4.0363, 5.8039)]


def paper_sections(m: dict, folds: int | None, use_images: bool = True) -> list[str]:
    def v(key):
        val = m.get(key)
        sd = m.get(f"{key}_sd")
        if val is None:
            return "—"
        return f"{val:.4f} ± {sd:.4f}" if sd is not None and sd == sd else f"{val:.4f}"

    setting = f"{folds}-fold CV" if folds else "one held-out fold"
    t1 = [[i, n, f"{a:.4f}", f"{p:.4f}", f"{r:.4f}", f"{u:.4f}"] for i, n, a, p, r, u in TABLE1]
    t1.append(["MRI+PET+Bio+Dg+Gen" if use_images else "Bio+Dg+Gen", f"**this run** ({setting})", v("accuracy"), v("precision_macro"),
               v("recall_macro"), v("mauc")])
    if "baseline_accuracy" in m:
        t1.append(["Bio+Dg+Gen", f"this run, biomarker-only ({setting})", v("baseline_accuracy"),
                   v("baseline_precision_macro"), v("baseline_recall_macro"), v("baseline_mauc")])
    t2 = [[n, f"{a:.4f}", f"{r:.4f}"] for n, a, r in TABLE2] + [["**this run**", v("mae_ml"), v("mre_pct")]]
    out = ["## Table 1 (ADNI, 5-fold CV, up to 5 years, no DX input)\n\n"
           + markdown_table(["inputs", "model", "ACC", "PRE", "REC", "mAUC"], t1),
           "## Table 2 (biomarker imputation)\n\n" + markdown_table(["model", "MAE (ml)", "MRE (%)"], t2)]
    per = m.get("mae_ml_per_biomarker")
    if per:
        out.append("## MAE per biomarker (ml, this run)\n\n" + markdown_table(list(per), [[float(x) for x in per.values()]]))
    if "baseline_accuracy" in m:
        keys = [k for k in _CV_KEYS if f"ttest_p_{k}" in m]
        out.append("## Paired t-test, ADxPro vs the biomarker-only model (same folds)\n\n"
                   + markdown_table(["metric", "p"], [[k, m[f"ttest_p_{k}"]] for k in keys]))
    out.append("## Notes\n\nmAUC is Hand & Till's (sklearn `roc_auc_score(multi_class='ovo')`); PRE/REC are macro over "
               "CN/MCI/AD; MAE/MRE are scored after undoing the z-score and the ICV division (ml). The paper reports "
               "mAUC 0.7749 ± 0.0132 (Table 1; the abstract's ± 0.0135 is not used). Figures: "
               "`figures/trajectories.png`.")
    return out


def _affine(rec: Records, i: int) -> np.ndarray:
    import nibabel as nib

    for (ptid, _v, _m), path in rec.images.items():
        if ptid == rec.subjects[i]:
            try:
                return np.asarray(nib.load(str(path)).affine, dtype=float)
            except Exception:  # noqa: BLE001 (a reference only)
                break
    return np.eye(4)


def trajectories_png(rec: Records, ds: Subjects, norm: Normaliser, res: dict, out: Path) -> Path | None:
    """Per test subject (up to 6, most observed visits): Hippocampus observed vs forecast (ml), and the forecast
    expected stage P(MCI) + 2·P(AD) against the observed DX."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if not len(ds):
        return None
    order = sorted(range(len(ds)), key=lambda k: -int(rec.present[ds.idx[k]].sum()))[:6]
    years = rec.times[0]
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
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
    fig.tight_layout()
    save_figure(fig, out)
    return out


def cohort_png(rec: Records, out: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    hip = adm.BIOMARKERS.index("Hippocampus")
    for c, name in enumerate(adm.CLASSES):
        sel = rec.dx == c
        ax.scatter(rec.times[sel], (rec.x[:, :, hip] * 1000)[sel], s=10, label=name)
    ax.set(xlabel="years from baseline", ylabel="Hippocampus / ICV (×1000)", title="cohort: visits by DX")
    ax.legend()
    fig.tight_layout()
    save_figure(fig, out)
    return out
