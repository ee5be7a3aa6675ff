"""ad-progression's stages beside train/eval/predict: ``impute`` (a finished train run fills every missing visit
slot: decoded MRI/PET as NIfTI, biomarkers in mm³) and ``prepare`` (the cohort, its counts and a figure)."""

from __future__ import annotations

import numpy as np
import torch

from medrun.datasets import adnimerge as adm

from ..report import markdown_table, paper_note
from .data import N_BIO, N_DG, Records


def impute(p) -> dict:
    from ..predictor import Forward

    splits = p.splits()
    net = p.trained_model()
    rec, norm, idx = p.rec, p.norm, splits[p.m.impute.split]
    ds, res = p.infer(net, idx)
    latent, n_vol, rows = net.latent, 0, []
    for k, i in enumerate(ds.idx):
        affine = _affine(rec, i)
        for t, vis in enumerate(rec.visits):
            for m, mod in enumerate(adm.MODALITIES):
                if rec.img_mask[i, t, m] or not net.use_images or mod not in p.m.model.modalities:
                    continue
                z = torch.from_numpy(res["v"][k, t, :latent][None])
                vol = p.predictor(Forward(net, "decode"), z, m)[0].numpy().astype(np.float32)
                p.ctx.write_nifti(f"imputed/{rec.subjects[i]}_{vis}_{mod}.nii.gz", vol, affine)
                n_vol += 1
            xv = norm.invert(res["v"][k, t, latent:latent + N_BIO + N_DG])
            icv_t = rec.icv[i, t] if np.isfinite(rec.icv[i, t]) else rec.subject_icv[i]
            row = {"PTID": rec.subjects[i], "VISCODE": vis, "visit_observed": bool(rec.present[i, t])}
            for j, b in enumerate(adm.BIOMARKERS):
                observed = bool(np.isfinite(rec.x[i, t, j]))
                val = rec.x[i, t, j] * icv_t if observed else xv[j] * icv_t
                row[b] = round(float(val), 2) if np.isfinite(val) else ""
                row[f"{b}_imputed"] = not observed
            rows.append(row)
    p.ctx.write_csv("imputed_biomarkers.csv", rows)
    n_bio = sum(r[f"{b}_imputed"] for r in rows for b in adm.BIOMARKERS)
    p.ctx.log(f"imputed {n_vol} volumes (imputed/*.nii.gz) and {n_bio} biomarker values (imputed_biomarkers.csv) "
              f"for {len(idx)} subjects")
    return {"imputed_volumes": n_vol, "imputed_biomarkers": int(n_bio), "n_subjects": len(idx),
            "split": p.m.impute.split}


def prepare(p) -> dict:
    import pandas as pd

    rec, cohort = p.records()
    t = cohort.table.copy()
    for mod, j in (("MRI", 0), ("PET", 1)):
        t[f"has_{mod}"] = [bool(rec.img_mask[rec.subjects.index(s), k, j])
                           for s, k in zip(t["PTID"], t["t"], strict=True)]
    t["DX_class"] = ["" if pd.isna(d) else adm.CLASSES[int(d)] for d in t["dx"]]
    cols = ["RID", "PTID", "VISCODE", "months", "DX_class", *adm.DEMOGRAPHICS, *adm.BIOMARKERS, "ICV", "has_MRI",
            "has_PET"]
    table = t[cols].astype(object).where(t[cols].notna(), "")  # missing values as empty cells
    p.ctx.write_csv("cohort.csv", table.to_dict("records"), digits=None)
    c = dict(cohort.counts)
    c["volumes_mri"] = int(rec.img_mask[:, :, 0].sum())
    c["volumes_pet"] = int(rec.img_mask[:, :, 1].sum())
    c["missing_visit_slots"] = int((~rec.present).sum())
    with p.ctx.figure("cohort", figsize=(6, 4)) as (_, ax):
        hip = adm.BIOMARKERS.index("Hippocampus")
        for k, name in enumerate(adm.CLASSES):
            sel = rec.dx == k
            ax.scatter(rec.times[sel], (rec.x[:, :, hip] * 1000)[sel], s=10, label=name)
        ax.set(xlabel="years from baseline", ylabel="Hippocampus / ICV (×1000)", title="cohort: visits by DX")
        ax.legend()
    rows = [[k, v] for k, v in c.items() if not isinstance(v, (dict, list))]
    p.ctx.write_text("paper.md", "\n".join([
        f"# ADxPro cohort (prepare run `{p.ctx.run.info().get('id', '')[:12]}`)", "",
        paper_note(p.ctx.spec, "cohort"), "", markdown_table(["count", "this data"], rows), ""]))
    return c


def _affine(rec: Records, i: int) -> np.ndarray:
    import nibabel as nib

    for (ptid, _v, _m), path in rec.images.items():
        if ptid == rec.subjects[i]:
            try:
                return np.asarray(nib.load(str(path)).affine, dtype=float)
            except Exception:  # noqa: BLE001 (a reference only)
                break
    return np.eye(4)
