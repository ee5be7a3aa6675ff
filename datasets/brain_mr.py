"""Multi-contrast brain MRI of the mcgan card: IXI, HCP Young Adult and the (uncited) Simons set, one module for
the family.

Layouts (as unpacked):
- ``ixi``: ``IXI-T1/IXI<id>-<site>-<n>-T1.nii.gz``, ``IXI-T2/…-T2.nii.gz``, ``IXI-PD/…-PD.nii.gz`` (one tar per
  contrast from brain-development.org; site Guys/HH/IOP). A subject is ``IXI<id>-<site>-<n>``.
- ``hcp``: ``<subject>/T1w/T1w_acpc_dc_restore_brain.nii.gz``, ``<subject>/T1w/T2w_acpc_dc_restore_brain.nii.gz``,
  ``<subject>/T1w/Diffusion/{data.nii.gz,bvals,bvecs}`` (ConnectomeDB). DWI = the mean of the b≈1000 volumes of the
  4D ``data.nii.gz``, resampled to the T1 grid when its grid differs (HCP's diffusion is 1.25 mm, T1w 0.7 mm).
- ``simons``: BIDS-like ``sub-XX/anat/sub-XX_{T1w,FLAIR,T2starw}.nii.gz`` (the paper cites no source).

Tissue maps (CSF 1, GM 2, WM 3, FSL FAST's ``*_seg.nii.gz``) are looked up as ``<seg_dir>/<subject>_seg.nii.gz`` or
``<seg_dir>/<T1 file stem>_seg.nii.gz``, and without a ``seg_dir`` beside the T1 (``<T1 stem>_seg.nii.gz``, where
FAST writes by default). The mcgan pipeline falls back to multi-Otsu when a subject has none.

The fixture writes all three miniatures side by side (``IXI/``, ``HCP/``, ``Simons/``; the cross-dataset pipeline
needs a donor beside its recipient) and returns the named one: 6 subjects each, 64×64×32 int16 volumes of nested
ellipsoids (WM core, GM shell, CSF rim and ventricles) with per-subject jitter, each contrast a per-tissue intensity
lookup plus noise, and a per-dataset "scanner" (gamma, contrast scale, bias field) so the T1 domains differ.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

from medrun.errors import DataError

from . import DatasetInfo

CONTRASTS = {"ixi": ("t1", "t2", "pd"), "hcp": ("t1", "t2", "dwi"), "simons": ("t1", "flair", "t2star")}
FOLDERS = {"ixi": "IXI", "hcp": "HCP", "simons": "Simons"}  # fixture (and suggested) folder names
IXI_SUFFIX = {"t1": "T1", "t2": "T2", "pd": "PD"}
SIMONS_SUFFIX = {"t1": "T1w", "flair": "FLAIR", "t2star": "T2starw"}
HCP_FILES = {"t1": "T1w/T1w_acpc_dc_restore_brain.nii.gz", "t2": "T1w/T2w_acpc_dc_restore_brain.nii.gz",
             "dwi": "T1w/Diffusion/data.nii.gz"}

DATASETS = [
    DatasetInfo("ixi", "IXI (T1, T2, PD brain MRI)", "IXI-T1/IXI<id>-<site>-<n>-T1.nii.gz, IXI-T2/…-T2.nii.gz, "
                "IXI-PD/…-PD.nii.gz", "brain-development.org/ixi-dataset (IXI-T1/T2/PD tars); point at the folder "
                "holding IXI-T1/", "medrun.datasets.brain_mr:fixture_ixi", ("synthesis", "mri")),
    DatasetInfo("hcp", "HCP Young Adult (T1w, T2w, DWI)", "<subject>/T1w/{T1w,T2w}_acpc_dc_restore_brain.nii.gz, "
                "<subject>/T1w/Diffusion/{data.nii.gz,bvals,bvecs}", "ConnectomeDB (db.humanconnectome.org, account "
                "and data use terms); point at the folder of subject folders", "medrun.datasets.brain_mr:fixture_hcp",
                ("synthesis", "mri")),
    DatasetInfo("simons", "Simons brain MRI (T1, T2-FLAIR, T2*)", "sub-XX/anat/sub-XX_{T1w,FLAIR,T2starw}.nii.gz",
                "not cited by the paper; arrange your copy BIDS-like and point at the folder of sub-XX folders",
                "medrun.datasets.brain_mr:fixture_simons", ("synthesis", "mri")),
]


@dataclass
class Subject:
    id: str
    files: dict[str, Path]  # contrast -> NIfTI
    seg: Path | None = None
    extra: dict = field(default_factory=dict)


# -- reading the public layouts ---------------------------------------------------------------------------------
def read(name: str, root: Path, seg_dir: Path | None = None) -> list[Subject]:
    """Subjects with a T1, sorted by id; DataError naming the folder and the fix when the layout is not there."""
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"{name} folder not found: {root}", fix=f"point at the {name} folder ({_layout(name)})")
    subjects = {"ixi": _read_ixi, "hcp": _read_hcp, "simons": _read_simons}[name](root)
    if not subjects:
        raise DataError(f"no {name} subjects with a T1 in {root}", fix=f"expected {_layout(name)}")
    for s in subjects:
        s.seg = find_seg(s, seg_dir)
    return subjects


def _layout(name: str) -> str:
    return next(d.layout for d in DATASETS if d.name == name)


def check_layout(name: str, root: Path) -> None:
    """Cheap: the folder of T1s is where the public layout puts it."""
    root = Path(root)
    if name == "ixi" and not (root / "IXI-T1").is_dir():
        raise DataError(f"{root} has no IXI-T1/ folder", fix="point at the folder holding IXI-T1/, IXI-T2/, IXI-PD/")
    if name == "hcp" and not any(root.glob("*/T1w/T1w_acpc_dc_restore_brain.nii.gz")):
        raise DataError(f"{root} has no <subject>/T1w/T1w_acpc_dc_restore_brain.nii.gz",
                        fix="point at the folder of HCP subject folders (preprocessed structural + diffusion)")
    if name == "simons" and not any(root.glob("sub-*/anat/sub-*_T1w.nii.gz")):
        raise DataError(f"{root} has no sub-XX/anat/sub-XX_T1w.nii.gz", fix="arrange the Simons data BIDS-like")


def _read_ixi(root: Path) -> list[Subject]:
    check_layout("ixi", root)
    out = {}
    pat = re.compile(r"^(IXI\d+-[A-Za-z]+-\d+)-(T1|T2|PD)\.nii\.gz$")
    for c, suffix in IXI_SUFFIX.items():
        folder = root / f"IXI-{suffix}"
        for f in sorted(folder.glob(f"*-{suffix}.nii.gz")) if folder.is_dir() else []:
            m = pat.match(f.name)
            if m is None:
                raise DataError(f"unexpected IXI file name {f}",
                                fix="IXI files are IXI<id>-<site>-<n>-<T1|T2|PD>.nii.gz")
            out.setdefault(m.group(1), {})[c] = f
    return [Subject(k, v) for k, v in sorted(out.items()) if "t1" in v]


def _read_hcp(root: Path) -> list[Subject]:
    check_layout("hcp", root)
    subs = []
    for d in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        files = {c: d / rel for c, rel in HCP_FILES.items() if (d / rel).is_file()}
        if "t1" in files:
            subs.append(Subject(d.name, files))
    return subs


def _read_simons(root: Path) -> list[Subject]:
    check_layout("simons", root)
    subs = []
    for d in sorted(root.glob("sub-*")):
        files = {c: d / "anat" / f"{d.name}_{s}.nii.gz" for c, s in SIMONS_SUFFIX.items()}
        files = {c: f for c, f in files.items() if f.is_file()}
        if "t1" in files:
            subs.append(Subject(d.name, files))
    return subs


def find_seg(s: Subject, seg_dir: Path | None) -> Path | None:
    t1 = s.files["t1"]
    stem = t1.name.removesuffix(".nii.gz")
    places = [Path(seg_dir) / f"{s.id}_seg.nii.gz", Path(seg_dir) / f"{stem}_seg.nii.gz"] if seg_dir else \
        [t1.parent / f"{stem}_seg.nii.gz"]
    return next((p for p in places if p.is_file()), None)


def _load(path: Path):
    import nibabel as nib

    try:
        img = nib.as_closest_canonical(nib.load(str(path)))
        return img, img.get_fdata(dtype="float32")
    except Exception as e:  # noqa: BLE001 (nibabel raises many kinds)
        raise DataError(f"cannot read {path}: {e}", fix="re-download or re-export the volume as NIfTI") from None


def _dwi(path: Path, t1_img):
    """Mean of the b≈1000 volumes (bvals beside the data), on the T1 grid."""
    import numpy as np

    img, data = _load(path)
    bvals_file = path.parent / "bvals"
    if data.ndim != 4:
        raise DataError(f"{path} is not 4D (shape {data.shape})", fix="point at HCP's Diffusion/data.nii.gz")
    if not bvals_file.is_file():
        raise DataError(f"{bvals_file} missing beside {path.name}", fix="copy bvals from the HCP Diffusion folder")
    b = np.loadtxt(bvals_file).ravel()
    if len(b) != data.shape[3]:
        raise DataError(f"{bvals_file} has {len(b)} values for {data.shape[3]} volumes in {path.name}",
                        fix="use the bvals file of the same data.nii.gz")
    sel = np.abs(b - 1000) <= 100
    if not sel.any():
        raise DataError(f"{bvals_file} has no b≈1000 volume", fix="the DWI contrast is the mean of b=1000 volumes")
    vol = data[..., sel].mean(-1)
    if vol.shape != t1_img.shape[:3]:
        import nibabel as nib
        from nibabel.processing import resample_from_to

        vol = resample_from_to(nib.Nifti1Image(vol, img.affine), (t1_img.shape[:3], t1_img.affine), order=1)
        vol = vol.get_fdata(dtype="float32")
    return vol


def load_subject(s: Subject, contrasts) -> tuple[dict, object]:
    """{contrast: volume (X, Y, Z) float32 in [0, 1], divided by its maximum} (RAS canonical), the tissue map
    (int, 0 background, 1 CSF, 2 GM, 3 WM) or None. Contrasts of one subject must share the T1's shape."""
    import numpy as np

    t1_img, t1 = _load(s.files["t1"])
    vols = {"t1": t1}
    for c in contrasts:
        if c == "t1":
            continue
        if c not in s.files:
            raise DataError(f"subject {s.id} has no {c} ({s.files['t1'].parent})", fix=f"add its {c} volume or "
                            "drop the subject")
        if c == "dwi":
            vols[c] = _dwi(s.files[c], t1_img)
            continue
        _, v = _load(s.files[c])
        if v.shape != t1.shape:
            raise DataError(f"{s.files[c]} has shape {v.shape}, its T1 {s.files['t1'].name} {t1.shape}",
                            fix="register every contrast to the subject's T1 grid first (e.g. ANTs or FLIRT, rigid)")
        vols[c] = v
    out = {}
    for c, v in vols.items():
        v = np.nan_to_num(v, nan=0.0, posinf=0.0, neginf=0.0)
        v = np.clip(v, 0, None)
        mx = float(v.max())
        if mx <= 0:
            raise DataError(f"{s.files[c]} is empty (maximum {mx})", fix="check the volume")
        out[c] = (v / mx).astype(np.float32)
    seg = None
    if s.seg is not None:
        _, seg = _load(s.seg)
        if seg.shape != t1.shape:
            raise DataError(f"{s.seg} has shape {seg.shape}, the T1 {t1.shape}", fix="segment the same T1 volume")
        seg = np.rint(seg).astype(np.int16)
        if seg.min() < 0 or seg.max() > 3:
            raise DataError(f"{s.seg} holds labels outside 0–3", fix="pass FSL FAST's *_seg.nii.gz (1 CSF, 2 GM, 3 WM)")
    return out, seg


# -- fixture ------------------------------------------------------------------------------------------------------
# per-tissue intensity (CSF, GM, WM) of each contrast, before the scanner transform
_LOOKUP = {"t1": (0.22, 0.55, 0.85), "t2": (0.92, 0.55, 0.32), "pd": (0.88, 0.72, 0.55),
           "t2star": (0.85, 0.48, 0.28), "flair": (0.15, 0.72, 0.5), "dwi": (0.18, 0.72, 0.5)}
# gamma, contrast scale, bias-field amplitude of each "scanner"
_SCANNER = {"ixi": (1.0, 1.0, 0.05), "hcp": (0.45, 0.9, 0.1), "simons": (2.0, 1.0, 0.15)}
SHAPE = (64, 64, 32)


def _tissue(rng):
    import numpy as np

    x, y, z = np.meshgrid(*(np.linspace(-1, 1, n) for n in SHAPE), indexing="ij")
    z = z * 1.3
    j = rng.uniform(0.9, 1.1, 3)
    r = np.sqrt((x / (0.85 * j[0])) ** 2 + (y / (0.75 * j[1])) ** 2 + (z / (0.95 * j[2])) ** 2)
    lab = np.zeros(SHAPE, np.int16)
    lab[r < 1.0] = 1  # CSF rim
    lab[r < 0.9] = 2  # GM shell
    lab[r < 0.6 + 0.05 * rng.standard_normal()] = 3  # WM core
    vx = rng.uniform(0.12, 0.2)
    vent = np.sqrt(((np.abs(x) - 0.15) / vx) ** 2 + (y / 0.3) ** 2 + (z / 0.4) ** 2) < 1
    lab[vent] = 1
    return lab


def _contrast(lab, c: str, dataset: str, rng):
    import numpy as np

    gamma, scale, bias = _SCANNER[dataset]
    v = np.zeros(lab.shape, np.float32)
    for t in (1, 2, 3):
        v[lab == t] = _LOOKUP[c][t - 1]
    v = v + rng.normal(0, 0.02, lab.shape).astype(np.float32) * (lab > 0)
    x = np.linspace(-1, 1, lab.shape[0])[:, None, None]
    y = np.linspace(-1, 1, lab.shape[1])[None, :, None]
    field = 1 + bias * (x * rng.uniform(-1, 1) + y * rng.uniform(-1, 1))
    v = scale * np.clip(v, 0, 1) ** gamma * field
    return np.where(lab > 0, np.clip(v, 0, None), 0).astype(np.float32)


def _save(path: Path, vol, affine=None) -> None:
    import nibabel as nib
    import numpy as np

    path.parent.mkdir(parents=True, exist_ok=True)
    data = vol if vol.dtype == np.int16 else np.round(vol * 1000).astype(np.int16)
    nib.save(nib.Nifti1Image(data, np.eye(4) if affine is None else affine), str(path))


def write_family(out_dir: Path, seed: int = 0, n_subjects: int = 6) -> dict[str, Path]:
    """The three miniatures under ``out_dir`` (``IXI/``, ``HCP/``, ``Simons/``); returns {name: root}."""
    import numpy as np

    out_dir = Path(out_dir)
    roots = {}
    for k, name in enumerate(("ixi", "hcp", "simons")):
        rng = np.random.default_rng([seed, k])
        root = roots[name] = out_dir / FOLDERS[name]
        for i in range(n_subjects):
            lab = _tissue(rng)
            vols = {c: _contrast(lab, c, name, rng) for c in CONTRASTS[name]}
            if name == "ixi":
                sid = f"IXI{i + 2:03d}-{('Guys', 'HH', 'IOP')[i % 3]}-{800 + i:04d}"
                for c, v in vols.items():
                    _save(root / f"IXI-{IXI_SUFFIX[c]}" / f"{sid}-{IXI_SUFFIX[c]}.nii.gz", v)
                _save(root / "IXI-T1" / f"{sid}-T1_seg.nii.gz", lab)
            elif name == "hcp":
                sub = root / f"{100206 + 101 * i}"
                _save(sub / HCP_FILES["t1"], vols["t1"])
                _save(sub / "T1w" / "T1w_acpc_dc_restore_brain_seg.nii.gz", lab)
                _save(sub / HCP_FILES["t2"], vols["t2"])
                b = np.array([5, 1000, 995, 2000, 1005])
                dwi = np.stack([_contrast(lab, "t2" if bv < 100 else ("dwi" if bv < 1500 else "dwi"), name, rng)
                                * (1.0 if bv < 1500 else 0.6) for bv in b], -1)
                (sub / "T1w" / "Diffusion").mkdir(parents=True, exist_ok=True)
                _save(sub / HCP_FILES["dwi"], dwi)
                (sub / "T1w" / "Diffusion" / "bvals").write_text(" ".join(map(str, b)) + "\n")
                bvecs = np.vstack([np.zeros(5), np.ones(5) / np.sqrt(3), np.ones(5) / np.sqrt(3)])
                (sub / "T1w" / "Diffusion" / "bvecs").write_text(
                    "\n".join(" ".join(f"{v:.6f}" for v in row) for row in bvecs) + "\n")
            else:
                sid = f"sub-{i + 1:02d}"
                for c, v in vols.items():
                    _save(root / sid / "anat" / f"{sid}_{SIMONS_SUFFIX[c]}.nii.gz", v)
                _save(root / sid / "anat" / f"{sid}_T1w_seg.nii.gz", lab)
    return roots


def fixture_ixi(out_dir: Path, seed: int = 0) -> Path:
    return write_family(out_dir, seed)["ixi"]


def fixture_hcp(out_dir: Path, seed: int = 0) -> Path:
    return write_family(out_dir, seed)["hcp"]


def fixture_simons(out_dir: Path, seed: int = 0) -> Path:
    return write_family(out_dir, seed)["simons"]
