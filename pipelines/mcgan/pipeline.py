"""mcgan, the method (card: docs/papers/mcgan.md).

Roles: ``dataset.name`` is the recipient (it lacks ``dataset.contrast``), ``dataset.donor`` has it (PD, T2: IXI;
DWI: HCP; FLAIR, T2*: Simons). Each dataset's subjects are split once (seeded, ``test_fraction``; IXI 459/115 and
HCP 890/223 in the paper).

Stages:
- ``slice``: every volume → divided by its maximum → RAS-canonical axial slices, centre-padded/cropped to
  ``size``² (256 in the paper), keeping slices whose brain area is at least ``min_brain_fraction`` of the subject's
  largest; CSF/GM/WM masks from FSL FAST ``*_seg.nii.gz`` when present, else 3-class multi-Otsu (scikit-image)
  of the T1 inside its non-zero head mask, classes ordered by T1 intensity (CSF < GM < WM). Writes the slices
  (``slices/*.npz``), ``per_case.csv`` (per subject: slices, tissue fractions, mask source) and figures.
- ``train-da`` (``da.py``): CycleGAN between the donor's and the recipient's training T1 slices (Johnson ResNet
  generators, 70×70 PatchGANs, LSGAN, history pool 50, λ_adv 1, λ_cyc 100, Adam 2e-4 β (0.5, 0.999), 100 + 100
  epochs of constant then linearly decaying lr, batch 4, N(0, 0.02) init). Default: the released code's full
  two-sided CycleGAN; ``one_sided`` gives the paper's Eq. 1–3 (G1's adversarial term and the Ŝ cycle only).
- ``train-i2i`` (``i2i.py``): runs (or reuses, a sweep child) the train-da run of the same manifest, or loads
  ``da_weights``; then the Attention U-Net G3 on pairs (G1(donor T1), donor contrast) of the same slice, with a
  PatchGAN on concat(input, image), L = λ_adv·LSGAN + 100·L1 + 100·VGG16-relu2_2 L1 (whole batch: the released
  code's ``[0]`` indexing is the card's noted bug). Without ``vgg_weights`` λ_vgg is set to 0 and ``run.json`` /
  ``paper.md`` say the run is not faithful. ``use_da: false`` is the no-DA control (donor real T1 in).
- ``synthesize`` (``evaluate.py``, on a train-i2i run): the recipient's test T1 → G3 (G1 is not applied: the
  recipient is already in its own domain) → ``synthetic/<subject>.npz``, the attention maps, and figures.
- ``kl-eval`` (``evaluate.py``, on a train-i2i run): Eq. 11. Synthetic intensities (G3's output mapped from
  [−1, 1] to [0, 1], clipped) inside the recipient test subjects' tissue masks against the donor test subjects'
  real contrast inside their own masks; 256 bins on [0, 1], pooled over subjects and slices, KL(P_real ‖ P_syn)
  with ε = 1e-10, λ_r from the recipient's tissue voxel counts (they sum to 1). Controls on the same slices:
  copying the T1, and the same I2I without DA (a train-i2i child run with ``use_da: false``).

Choices where the paper and card are silent or leave options:
- No registration is run: contrasts must already share their subject's T1 grid (a different shape is a DataError
  naming the file); only HCP's DWI, on its own 1.25 mm grid by design, is resampled to the T1 grid (trilinear,
  nibabel) after averaging its b≈1000 volumes.
- The head mask (for the attention check) is the T1 > 0.02 after max-normalisation; the KL's brain is tissue > 0.
- The attention statistics (``attn_*``) are the finest gate's α, the map the released code returns and Fig. 6
  shows; ``attn_gates_*`` average all gates. The card's "α ≈ 0 outside the head" is reported, not checked: the
  gate's one-channel BatchNorm on ψ standardises the logits over the batch, so a constant background covering a
  fraction p of the pixels keeps α ≥ σ(β − γ·√((1 − p)/p)) (0.31 on the 64² fixture while γ ≈ 1, β ≈ 0), and
  smoke-length training barely moves γ and β (the paper's own maps are still broad after 2 and 6 epochs).
- The KL's real reference is the donor's test split (the card: "the donor dataset's own tissue masks").
- The card's ``--g3 resnet11-ag`` variant is not built; G3 is the released code's Attention U-Net.
- Resuming an interrupted GAN run restores networks and optimisers but starts the history pool empty.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from medrun.datasets import brain_mr
from medrun.errors import DataError
from medrun.models.mcgan import AttentionUNet

from ..base import Pipeline
from .config import donor_root

TISSUE_NAMES = ("csf", "gm", "wm")


@dataclass
class Slices:
    """Axial slices of one dataset's split: ``t1``/``target`` (N, S, S) float32 in [0, 1] (``target`` None when
    not loaded), ``tissue`` (N, S, S) int8 0–3, ``subject`` (N,) the subject of each slice."""

    t1: np.ndarray
    target: np.ndarray | None
    tissue: np.ndarray
    subject: np.ndarray
    mask_source: dict

    @property
    def head(self) -> np.ndarray:
        return self.t1 > 0.02

    def __len__(self):
        return len(self.t1)


def pad_crop(a: np.ndarray, size: int) -> np.ndarray:
    """Centre pad (zeros) or crop the last two axes to size×size."""
    out = np.zeros((*a.shape[:-2], size, size), a.dtype)
    h, w = a.shape[-2:]
    sh, sw = max(0, (h - size) // 2), max(0, (w - size) // 2)
    dh, dw = max(0, (size - h) // 2), max(0, (size - w) // 2)
    ch, cw = min(h, size), min(w, size)
    out[..., dh:dh + ch, dw:dw + cw] = a[..., sh:sh + ch, sw:sw + cw]
    return out


def otsu_tissue(t1: np.ndarray) -> np.ndarray:
    """3-class multi-Otsu of the T1 inside its head mask → 1 CSF, 2 GM, 3 WM (by increasing T1 intensity)."""
    from skimage.filters import threshold_multiotsu

    head = t1 > 0.02
    out = np.zeros(t1.shape, np.int8)
    if head.sum() < 10:
        return out
    th = threshold_multiotsu(t1[head], classes=3)
    out[head] = (np.digitize(t1[head], th) + 1).astype(np.int8)
    return out


def slices_of(subjects, contrast: str | None, size: int, min_fraction: float, tissue: str) -> Slices:
    t1s, targets, tissues, ids, source = [], [], [], [], {}
    for s in subjects:
        vols, seg = brain_mr.load_subject(s, ["t1"] + ([contrast] if contrast else []))
        if tissue == "seg" and seg is None:
            raise DataError(f"no FAST segmentation for subject {s.id} (looked for {s.id}_seg.nii.gz or "
                            f"{s.files['t1'].name.removesuffix('.nii.gz')}_seg.nii.gz)",
                            fix="pass dataset.seg_dir, or dataset.tissue=otsu / auto")
        if tissue == "otsu" or seg is None:
            seg, source[s.id] = otsu_tissue(vols["t1"]), "otsu"
        else:
            source[s.id] = "seg"
        area = (seg > 0).sum((0, 1))
        keep = np.flatnonzero(area >= max(1, min_fraction * area.max()))
        def tr(v, keep=keep):  # (X, Y, Z) → (Z, S, S)
            return pad_crop(np.moveaxis(v[:, :, keep], -1, 0), size)

        t1s.append(tr(vols["t1"]))
        tissues.append(tr(seg.astype(np.int8)))
        if contrast:
            targets.append(tr(vols[contrast]))
        ids += [s.id] * len(keep)
    cat = lambda xs: np.concatenate(xs) if xs else np.zeros((0, size, size), np.float32)  # noqa: E731
    return Slices(cat(t1s).astype(np.float32), cat(targets).astype(np.float32) if contrast else None,
                  cat(tissues).astype(np.int8), np.array(ids), source)


class Mcgan(Pipeline):
    def build_model(self) -> AttentionUNet:
        return AttentionUNet(1, 1, tuple(self.m.model.channels))

    # -- data -------------------------------------------------------------------------------------------------
    def roots(self) -> dict[str, Path]:
        d = self.m.dataset
        return {"recipient": self.ctx.data_roots.get(d.name, Path(d.root)),
                "donor": self.ctx.data_roots.get(d.donor, donor_root(self.m))}

    def subjects(self, role: str) -> dict[str, list]:
        """{train, test} subjects of the donor or recipient (seeded split of the sorted subjects)."""
        d = self.m.dataset
        name = d.name if role == "recipient" else d.donor
        subs = brain_mr.read(name, self.roots()[role], Path(d.seg_dir) if d.seg_dir else None)
        if d.max_subjects:
            subs = subs[:d.max_subjects]
        if len(subs) < 2:
            raise DataError(f"{name} at {self.roots()[role]} has {len(subs)} subject(s)",
                            fix="MCGAN needs at least one training and one test subject per dataset")
        order = np.random.default_rng(d.split_seed).permutation(len(subs))
        n_test = min(len(subs) - 1, max(1, round(d.test_fraction * len(subs))))
        test = sorted(order[:n_test].tolist())
        return {"train": [subs[i] for i in range(len(subs)) if i not in test], "test": [subs[i] for i in test]}

    def slices(self, role: str, split: str, with_target: bool = True) -> Slices:
        key = (role, split, with_target)
        cache = self.__dict__.setdefault("_slices", {})
        if key not in cache:
            d = self.m.dataset
            contrast = d.contrast if with_target else None
            cache[key] = slices_of(self.subjects(role)[split], contrast, d.size, d.min_brain_fraction, d.tissue)
        return cache[key]

    def record(self) -> None:
        splits = {f"{role}_{split}": [s.files["t1"] for s in subs] for role in ("donor", "recipient")
                  for split, subs in self.subjects(role).items()}
        self.ctx.record_splits(splits)

    # -- stages -------------------------------------------------------------------------------------------------
    def slice(self) -> dict:
        ctx, d = self.ctx, self.m.dataset
        self.record()
        rows, metrics = [], {"donor": d.donor, "recipient": d.name, "contrast": d.contrast}
        for role in ("donor", "recipient"):
            for split in ("train", "test"):
                s = self.slices(role, split, with_target=role == "donor")
                arrays = {"t1": s.t1, "tissue": s.tissue, "subject": s.subject.astype(str)}
                if s.target is not None:
                    arrays[d.contrast] = s.target
                ctx.write_npz(f"slices/{role}_{split}.npz", **arrays)
                metrics[f"slices_{role}_{split}"] = len(s)
                for sid in dict.fromkeys(s.subject.tolist()):
                    t = s.tissue[s.subject == sid]
                    n = max(1, int((t > 0).sum()))
                    rows.append({"role": role, "split": split, "subject": sid, "slices": int(len(t)),
                                 "mask": s.mask_source[sid],
                                 **{f"lambda_{k}": float((t == i + 1).sum() / n) for i, k in enumerate(TISSUE_NAMES)}})
        ctx.write_csv("per_case.csv", rows)
        self.slice_figure(self.slices("donor", "train"), "donor_slices")
        self.slice_figure(self.slices("recipient", "train", False), "recipient_slices")
        return metrics

    def slice_figure(self, s: Slices, name: str, n: int = 4) -> None:
        idx = np.linspace(0, len(s) - 1, min(n, len(s))).astype(int)
        rows = 3 if s.target is not None else 2
        with self.ctx.figure(name, nrows=rows, ncols=len(idx), figsize=(2 * len(idx), 2 * rows), squeeze=False,
                             dpi=80) as (_, ax):
            for j, i in enumerate(idx):
                panels = [("T1", s.t1[i], "gray"), ("tissue", s.tissue[i], "viridis")]
                if s.target is not None:
                    panels.insert(1, (self.m.dataset.contrast, s.target[i], "gray"))
                for r, (title, img, cmap) in enumerate(panels):
                    ax[r, j].imshow(img, cmap=cmap)
                    ax[r, j].set_title(f"{title} {s.subject[i]}", fontsize=6)
                    ax[r, j].axis("off")

    def train_da(self) -> dict:
        from .da import train_da

        return train_da(self)

    def train_i2i(self) -> dict:
        from .i2i import train_i2i

        return train_i2i(self)

    def synthesize(self) -> dict:
        from .evaluate import synthesize

        return synthesize(self)

    def kl_eval(self) -> dict:
        from .evaluate import kl_eval

        return kl_eval(self)
