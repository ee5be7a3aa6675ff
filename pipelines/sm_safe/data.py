"""sm-safe's data: MSD cases preprocessed once per task (RAS, the task's median spacing, foreground crop, CT window
or MRI z-score), random training patches, and the patient-level folds."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from medrun.datasets import msd
from medrun.errors import DataError

_RAS = (("L", "R"), ("P", "A"), ("I", "S"))


@dataclass
class Item:
    """One preprocessed case: image (C, X, Y, Z) float32, label (1, X, Y, Z) int64 or None, on the target grid."""

    id: str
    image: torch.Tensor
    label: torch.Tensor | None
    spacing: tuple[float, float, float]
    source: Path
    meta: object = None  # the MetaTensor image (affine, applied operations) for mapping predictions back


class Prep:
    """A task's preprocessing: target spacing and intensity statistics from its training cases."""

    def __init__(self, task: msd.Task, spacing, ct_stats: dict | None = None):
        from monai import transforms as T

        self.task, self.spacing, self.ct_stats = task, tuple(float(s) for s in spacing), ct_stats
        self.T = T
        self._spatial: dict = {}

    def spatial(self, keys):
        """Orientation, spacing and foreground crop; one instance per key set (``Invertd`` needs the same objects)."""
        key = tuple(keys)
        if key not in self._spatial:
            self._spatial[key] = self._make_spatial(list(keys))
        return self._spatial[key]

    def _make_spatial(self, keys):
        T = self.T
        modes = ("bilinear", "nearest")[: len(keys)]
        return T.Compose([
            T.Orientationd(keys, axcodes="RAS", labels=_RAS),
            T.Spacingd(keys, pixdim=self.spacing, mode=modes),
            T.CropForegroundd(keys, source_key="image", select_fn=self._body, allow_smaller=True),
        ])

    def _body(self, x):
        return (x > -500).any(0, keepdim=True) if self.task.is_ct else (x != 0).any(0, keepdim=True)

    def load(self, case: msd.Case, with_label: bool = True, keep_meta: bool = False) -> Item:
        T = self.T
        keys = ["image", "label"] if with_label and case.label is not None else ["image"]
        data = {"image": str(case.image), **({"label": str(case.label)} if "label" in keys else {})}
        try:
            data = T.Compose([T.LoadImaged(keys, image_only=True), T.EnsureChannelFirstd(keys)])(data)
        except Exception as e:  # noqa: BLE001 - unreadable NIfTI
            raise DataError(f"cannot read {case.image} or its label: {e.__class__.__name__}: "
                            f"{str(e).splitlines()[0][:160]}",
                            fix="re-extract the task's tarball") from None
        if "label" in keys:
            lab = data["label"]
            if lab.shape[1:] != data["image"].shape[1:]:  # headers were checked; this catches a changed file
                raise DataError(f"{case.label} has shape {tuple(lab.shape[1:])} but its image has "
                                f"{tuple(data['image'].shape[1:])}", fix="a label map must lie on its image's grid")
            values = torch.unique(lab)
            if not torch.equal(values, values.round()):
                raise DataError(f"{case.label} holds non-integer label values", fix="labels must be integers")
            msd.check_label_values(self.task, case.label, values.tolist())
        data = self.spatial(keys)(data)
        image = data["image"].as_tensor().float()
        image = self.normalise(image)
        label = data["label"].as_tensor().round().long() if "label" in keys else None
        return Item(case.id, image, label, self.spacing, case.image, data["image"] if keep_meta else None)

    def normalise(self, image: torch.Tensor) -> torch.Tensor:
        if self.task.is_ct:
            s = self.ct_stats
            return (image.clamp(s["lo"], s["hi"]) - s["mean"]) / max(s["std"], 1e-6)
        return self.T.NormalizeIntensity(nonzero=True, channel_wise=True)(image).as_tensor().float()


def median_spacing(cases: list[msd.Case]) -> tuple[float, float, float]:
    """The median voxel size (RAS axes) of the cases, from their headers."""
    import nibabel as nib

    sp = []
    for c in cases:
        img = nib.load(str(c.image))
        ornt = nib.orientations.io_orientation(img.affine)
        zooms = np.array(img.header.get_zooms()[:3], dtype=float)
        sp.append(zooms[np.argsort(ornt[:, 0])])  # axis order after reorientation
    return tuple(float(v) for v in np.median(np.array(sp), axis=0))


def ct_statistics(prep: Prep, cases: list[msd.Case], percentiles, max_voxels: int = 2_000_000, seed: int = 0) -> dict:
    """Foreground HU of the training cases (a random sample of at most ``max_voxels``): clip range and moments."""
    rng = np.random.default_rng(seed)
    fg = []
    raw = Prep(prep.task, prep.spacing, {"lo": -1e9, "hi": 1e9, "mean": 0.0, "std": 1.0})
    per_case = max(1, max_voxels // max(1, len(cases)))
    for c in cases:
        item = raw.load(c)
        v = item.image[0][item.label[0] > 0].numpy()
        if v.size > per_case:
            v = rng.choice(v, per_case, replace=False)
        fg.append(v)
    v = np.concatenate(fg) if fg else np.zeros(1)
    if v.size < 2:
        raise DataError(f"{prep.task.dataset_json}: the training labels have no foreground to normalise CT with",
                        fix="check labelsTr")
    lo, hi = np.percentile(v, percentiles)
    clipped = np.clip(v, lo, hi)
    return {"lo": float(lo), "hi": float(hi), "mean": float(clipped.mean()), "std": float(clipped.std())}


class Patches(torch.utils.data.Dataset):
    """``steps × batch`` random training patches per epoch from the cases, in a shuffled round-robin."""

    def __init__(self, items: list[Item], length: int, patch, pos_neg, seed: int):
        from monai import transforms as T

        keys = ["image", "label"]
        rot = [T.RandRotate90d(keys, prob=0.5, max_k=3, spatial_axes=(0, 1))] if patch[0] == patch[1] else []
        self.items, self.length, self.seed = items, length, seed
        self.transform = T.Compose([
            T.RandCropByPosNegLabeld(keys, label_key="label", spatial_size=tuple(patch), pos=pos_neg[0],
                                     neg=pos_neg[1], num_samples=1, allow_smaller=False),
            T.RandFlipd(keys, prob=0.5, spatial_axis=0), T.RandFlipd(keys, prob=0.5, spatial_axis=1),
            T.RandFlipd(keys, prob=0.5, spatial_axis=2), *rot,
            T.RandScaleIntensityd("image", factors=0.1, prob=0.5),
            T.RandShiftIntensityd("image", offsets=0.1, prob=0.5),
        ]).set_random_state(seed=seed)

    def __len__(self) -> int:
        return self.length

    def reseed(self, worker_id: int) -> None:
        self.transform.set_random_state(seed=self.seed + 7919 * (worker_id + 1))

    def __getitem__(self, i: int) -> dict:
        item = self.items[i % len(self.items)]
        out = self.transform({"image": item.image, "label": item.label})
        out = out[0] if isinstance(out, list) else out
        return {"image": torch.as_tensor(out["image"]).float(), "label": torch.as_tensor(out["label"]).long()}


def worker_init(worker_id: int) -> None:  # each DataLoader worker draws its own patches
    torch.utils.data.get_worker_info().dataset.reseed(worker_id)


def folds(n: int, k: int, seed: int) -> list[np.ndarray]:
    """Patient-level k folds of ``n`` cases: the test indices of each fold."""
    from sklearn.model_selection import KFold

    if n < k:
        raise DataError(f"{n} training case(s) cannot be split into {k} folds", fix=f"-o dataset.folds={max(2, n)}")
    return [te for _, te in KFold(n_splits=k, shuffle=True, random_state=seed).split(np.zeros(n))]

