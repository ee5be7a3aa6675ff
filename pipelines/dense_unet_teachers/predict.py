"""``predict``: label maps of unlabelled subjects in the challenge's format, and the three-plane overlay figure.

iSEG-2017: ``predictions/subject-N-label.hdr`` + ``.img`` (Analyze 7.5, uint8, 0/10/150/250, the T1's grid, voxel
size and 4th axis), the names the challenge's upload expects. MRBrainS13: ``predictions/<N>/segmentation.nii.gz``
(0–3, the T1's affine).
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np

from medrun.datasets import iseg2017, mrbrains13
from medrun.errors import DataError

COLOURS = ("tab:blue", "gold", "red")  # CSF, GM, WM


def analyze_bytes(labels: np.ndarray, ref) -> tuple[bytes, bytes]:
    """(.hdr, .img) bytes of an Analyze 7.5 uint8 label volume on ``ref``'s grid (shape incl. a trailing 1)."""
    import nibabel as nib

    img = nib.AnalyzeImage(labels.reshape(ref.shape).astype(np.uint8), ref.affine, header=ref.header.copy())
    img.set_data_dtype(np.uint8)
    hdr, data = io.BytesIO(), io.BytesIO()
    img.to_file_map(nib.AnalyzeImage.make_file_map({"header": hdr, "image": data}))
    return hdr.getvalue(), data.getvalue()


def test_subjects(p) -> list:
    """``predict.input`` (a folder in the dataset's layout), else iSEG's ``iSeg-2017-Testing``, else the validation
    subject."""
    name = p.m.dataset.name
    reader = iseg2017 if name == "iseg2017" else mrbrains13
    src = p.m.predict.input
    if src:
        folder = Path(src).expanduser()
        if not folder.is_dir():
            raise DataError(f"predict.input not found or not a folder: {folder}",
                            fix="point predict.input at a folder of subjects in the dataset's layout")
        subs = reader.subjects_in(folder, labelled=False)
        if not subs:
            what = ("subject-N-T1.hdr/.img and -T2" if name == "iseg2017"
                    else "numbered folders with T1.nii, T2_FLAIR.nii")
            raise DataError(f"no subjects in {folder} (looked for {what})", fix="point predict.input at such a folder")
        return subs
    root = p.ctx.data_roots[name]
    subs = iseg2017.read_test(root) if name == "iseg2017" else []
    if subs:
        return subs
    val = [s for s in reader.read(root) if s.number == p.m.dataset.val_subject]
    for s in val:
        s.label = None
    return val


def predict_stage(p) -> dict:
    from .pipeline import prepare

    net = p.trained_model()
    subjects = test_subjects(p)
    rows = []
    for s in p.ctx.track(subjects, "predicting"):
        vol = prepare(s, p.m.train.patch_size, p.label_values)
        pred = p.segment(net, vol)
        if p.m.dataset.name == "iseg2017":
            hdr, img = analyze_bytes(np.asarray(iseg2017.LABEL_VALUES, np.uint8)[pred], vol.ref)
            rel = f"predictions/{s.id}-label.hdr"
            p.ctx.write_bytes(rel, hdr)
            p.ctx.write_bytes(rel[:-4] + ".img", img)
        else:
            rel = f"predictions/{s.id}/segmentation.nii.gz"
            p.ctx.write_nifti(rel, pred.astype(np.uint8), vol.ref.affine)
        counts = np.bincount(pred.ravel(), minlength=4)
        rows.append({"subject": s.id, "t1": str(s.images["t1"]), "prediction": rel,
                     **{f"voxels_{t}": int(counts[c]) for c, t in enumerate(("csf", "gm", "wm"), 1)}})
    p.ctx.write_csv("per_case.csv", rows)
    p.ctx.log(f"predicted {len(rows)} subjects")
    return {"n": len(rows)}


def overlay_three_planes(ctx, name: str, image: np.ndarray, gt: np.ndarray, pred: np.ndarray, title: str) -> None:
    """Axial, coronal and sagittal slices through the brain's centre: the image with each tissue's true outline
    (solid) and predicted outline (dashed); CSF blue, GM yellow, WM red."""
    idx = np.argwhere(gt > 0)
    centre = idx.mean(0).round().astype(int) if len(idx) else np.array(gt.shape) // 2
    with ctx.figure(name, ncols=3, figsize=(12, 4.4)) as (fig, axes):
        for ax, axis, plane in zip(axes, (2, 1, 0), ("axial", "coronal", "sagittal"), strict=True):
            def take(a, axis=axis):
                return np.rot90(np.take(a, centre[axis], axis=axis))

            ax.imshow(take(image), cmap="gray")
            for c, colour in enumerate(COLOURS, 1):
                for mask, style in ((gt, "solid"), (pred, "dashed")):
                    sl = take(mask) == c
                    if sl.any() and not sl.all():
                        ax.contour(sl, levels=[0.5], colors=colour, linewidths=0.9, linestyles=style)
            ax.set_title(plane, fontsize=9)
            ax.set_axis_off()
        fig.suptitle(title + "  (solid: truth, dashed: prediction; CSF blue, GM yellow, WM red)", fontsize=9)
