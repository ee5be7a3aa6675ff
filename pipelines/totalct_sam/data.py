"""totalct-sam's data: a TotalSegmentator case as image and label volumes, the preprocessing (RAS, isotropic
spacing, CT window, z-score) and the class-balanced random training crops."""

from __future__ import annotations

import warnings

import numpy as np
import torch

from medrun.datasets import totalsegmentator as ts

warnings.filterwarnings("ignore", message=".*no available indices of class.*")
warnings.filterwarnings("ignore", message=".*num_classes.*")


class LoadCase:
    """{"case": Case} → {"image", "label"} MetaTensors (1, X, Y, Z) with the CT's affine (deterministic, cached)."""

    def __init__(self, classes: list[str]):
        self.classes = classes

    def __call__(self, item: dict) -> dict:
        from monai.data import MetaTensor

        ct, label, affine = ts.load_case(item["case"], self.classes)
        return {"id": item["case"].id, "image": MetaTensor(ct[None], affine=torch.as_tensor(affine)),
                "label": MetaTensor(label[None].astype(np.int16), affine=torch.as_tensor(affine))}


def preprocess_transforms(d, keys=("image", "label")):
    """RAS, isotropic spacing, CT window, per-volume z-score (MONAI)."""
    from monai.transforms import NormalizeIntensityd, Orientationd, ScaleIntensityRanged, Spacingd

    keys = list(keys)
    out = [Orientationd(keys=keys, axcodes="RAS", labels=None),
           Spacingd(keys=keys, pixdim=(d.spacing,) * 3, mode=("bilinear", "nearest")[: len(keys)])]
    if d.hu_window is not None:
        lo, hi = d.hu_window
        out.append(ScaleIntensityRanged(keys="image", a_min=lo, a_max=hi, b_min=lo, b_max=hi, clip=True))
    out.append(NormalizeIntensityd(keys="image"))
    return out


def train_transforms(d, classes: list[str], size: int, seed: int):
    """Load, preprocess, pad and index (deterministic: cached by CacheDataset), then random crops and flips."""
    from monai.transforms import ClassesToIndicesd, Compose, RandCropByLabelClassesd, RandFlipd, SpatialPadd

    num_classes = len(classes) + 1
    tf = Compose([
        LoadCase(classes),
        *preprocess_transforms(d),
        SpatialPadd(keys=["image", "label"], spatial_size=(size,) * 3),
        ClassesToIndicesd(keys="label", num_classes=num_classes),
        RandCropByLabelClassesd(keys=["image", "label"], label_key="label", spatial_size=(size,) * 3,
                                num_classes=num_classes, num_samples=d.crops_per_volume,
                                indices_key="label_cls_indices", warn=False),
        *[RandFlipd(keys=["image", "label"], prob=d.flip_prob, spatial_axis=a) for a in range(3)],
    ])
    tf.set_random_state(seed=seed)
    return tf


def _strip(batch_item: dict) -> dict:
    return {"image": batch_item["image"].as_tensor().float(), "label": batch_item["label"].as_tensor().long()}


class Crops(torch.utils.data.Dataset):
    """Training crops: every volume gives `crops_per_volume` crops per epoch (the preprocessed volume is cached)."""

    def __init__(self, cases, classes, d, size, seed, cache: bool):
        from monai.data import CacheDataset, Dataset

        tf = train_transforms(d, classes, size, seed)
        items = [{"case": c} for c in cases]
        self.ds = CacheDataset(items, tf, cache_rate=1.0, progress=False) if cache else Dataset(items, tf)
        self.k = d.crops_per_volume

    def __len__(self):
        return len(self.ds)

    def __getitem__(self, i):
        return [_strip(c) for c in self.ds[i]]


def collate(items):
    flat = [c for crops in items for c in crops]
    return {k: torch.stack([c[k] for c in flat]) for k in ("image", "label")}
