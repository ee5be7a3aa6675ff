"""lorasam's data: frames with one mask per class, resized to the model's input, SAM's normalisation, and the
training augmentations (the card's colour and rotation set, or flips and transposes)."""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

from medrun.datasets import abdominal_us, chestxdet, cholecseg8k, endovis
from medrun.errors import UsageError, unknown_name

MEAN = torch.tensor([123.675, 116.28, 103.53]).view(3, 1, 1)
STD = torch.tensor([58.395, 57.12, 57.375]).view(3, 1, 1)


def dataset_classes(name: str) -> list[str]:
    return {"cholecseg8k": cholecseg8k.CLASSES, "endovis17": endovis.CLASSES17, "endovis18": endovis.CLASSES18,
            "chestxdet": chestxdet.CLASSES, "abdominal-us": abdominal_us.CLASSES}[name]


def loader_for(name: str):
    return {"cholecseg8k": cholecseg8k.load, "endovis17": endovis.load17, "endovis18": endovis.load18,
            "chestxdet": chestxdet.load, "abdominal-us": abdominal_us.load}[name]


def check_classes(names, known: list[str], where: str) -> list[str]:
    for n in names:
        if n not in known:
            err = unknown_name(f"class name (in {where})", n, known, fallback=f"choose from: {', '.join(known)}")
            raise UsageError(err.message, fix=err.fix)
    return list(names)


def resize_pair(image: np.ndarray, masks: np.ndarray | None, size: int):
    from PIL import Image

    img = np.asarray(Image.fromarray(image).resize((size, size), Image.BILINEAR))
    if masks is None:
        return img, None
    out = np.stack([np.asarray(Image.fromarray(m.astype(np.uint8)).resize((size, size), Image.NEAREST)) > 0
                    for m in masks]) if len(masks) else np.zeros((0, size, size), bool)
    return img, out


class FrameSet(torch.utils.data.Dataset):
    """Frames → (normalised image (3, S, S), masks (C, S, S) float). Resized frames are cached in memory."""

    def __init__(self, frames, load, classes, size, augment="none", colour_swap=False):
        self.frames, self.load, self.classes, self.size = frames, load, classes, size
        self.augment, self.colour_swap = augment, colour_swap
        self._cache: dict[int, tuple] = {}

    def __len__(self):
        return len(self.frames)

    def raw(self, i):
        if i not in self._cache:
            img, masks = self.load(self.frames[i], self.classes)
            self._cache[i] = resize_pair(img, masks, self.size)
        return self._cache[i]

    def __getitem__(self, i):
        img, masks = self.raw(i)
        x = torch.from_numpy(np.array(img)).permute(2, 0, 1).float()
        y = torch.from_numpy(np.array(masks)).float()
        if self.colour_swap:
            x = x[[2, 0, 1]]
        if self.augment == "card":
            x, y = augment(x, y)
        elif self.augment == "dihedral":
            x, y = dihedral(x, y)
        return (x - MEAN) / STD, y


def augment(x: torch.Tensor, y: torch.Tensor):
    """Card: rotation ±10° p 0.5 (image bilinear, mask nearest), saturation ×2 p 0.2, brightness ×2 p 0.5; x in
    0..255."""
    if torch.rand(()) < 0.5:
        a = math.radians(float(torch.empty(()).uniform_(-10, 10)))
        theta = torch.tensor([[math.cos(a), -math.sin(a), 0.0], [math.sin(a), math.cos(a), 0.0]]).unsqueeze(0)
        grid = F.affine_grid(theta, (1, 1, *x.shape[-2:]), align_corners=False)
        x = F.grid_sample(x[None], grid, mode="bilinear", align_corners=False)[0]
        if y.shape[0]:
            y = F.grid_sample(y[None], grid, mode="nearest", align_corners=False)[0]
    if torch.rand(()) < 0.2:
        grey = (0.299 * x[0] + 0.587 * x[1] + 0.114 * x[2])[None]
        x = (grey + 2.0 * (x - grey)).clamp(0, 255)
    if torch.rand(()) < 0.5:
        x = (2.0 * x).clamp(0, 255)
    return x, y


def dihedral(x: torch.Tensor, y: torch.Tensor):
    """A random element of the square's symmetry group (flips and a transpose), the same on image and masks."""
    if torch.rand(()) < 0.5:
        x, y = x.flip(-1), y.flip(-1)
    if torch.rand(()) < 0.5:
        x, y = x.flip(-2), y.flip(-2)
    if torch.rand(()) < 0.5:
        x, y = x.transpose(-1, -2), y.transpose(-1, -2)
    return x.contiguous(), y.contiguous()
