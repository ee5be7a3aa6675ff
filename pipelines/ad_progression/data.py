"""ad-progression's data: the cohort as arrays over subjects × visit slots (``Records``), the per-fold
normalisation (``Normaliser``: z-scores and t = 1 fill values from the training subjects only) and the torch
Dataset of subjects (``Subjects``) the model's ``forward`` takes."""

from __future__ import annotations

import numpy as np
import torch

from medrun.datasets import adnimerge as adm

N_BIO, N_DG = len(adm.BIOMARKERS), 7  # age, education, gender (2), APOE4 (3)
X_NAMES = [*adm.BIOMARKERS, "age", "education", "male", "female", "apoe4_0", "apoe4_1", "apoe4_2"]
ZSCORED = list(range(N_BIO + 2))  # biomarker ratios, age, education; one-hots stay 0/1


def model_images(files: dict, model) -> dict:
    """The volumes the model reads: those of ``model.modalities`` (Fig. 5's MRI-only / PET-only rows count the other
    modality as missing), and none without the image branch (``use_images`` false, GRU-D, MinimalRNN), so that those
    runs never open a volume."""
    keep = model.modalities if model.arch == "adxpro" and model.use_images else []
    return {k: f for k, f in files.items() if k[2] in keep}


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
