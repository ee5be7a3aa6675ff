"""fusing-forces data: sides read once and preprocessed (high-pass of the depth, clipped, normalised over the mirror),
the overlapping training tiles, the held-out non-overlapping patches and their val/test halves, and the torch
datasets that cut and resize patches."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from medrun.datasets import etmira
from medrun.errors import DataError


@dataclass
class Mirror:
    key: str
    x: np.ndarray  # (H, W) float32: normalised high-pass, 0 outside the mirror; padded to a multiple of grid + 1
    gt: np.ndarray  # (H, W) bool lines
    mask: np.ndarray  # (H, W) bool mirror
    source: str  # sam | otsu
    size: tuple[int, int]  # original (H, W)
    files: tuple[str, ...]
    stats: dict


def high_pass(depth: np.ndarray, mask: np.ndarray, sigma: float, clip_std: float) -> tuple[np.ndarray, dict]:
    """depth − Gaussian(depth, σ), clipped to μ ± clip_std·σ and normalised with mean and sd over mirror pixels;
    0 outside the mirror."""
    from scipy.ndimage import gaussian_filter

    hp = depth - gaussian_filter(depth, sigma)
    vals = hp[mask]
    mu, sd = float(vals.mean()), float(vals.std())
    hp = np.clip(hp, mu - clip_std * sd, mu + clip_std * sd)
    m2, s2 = float(hp[mask].mean()), float(hp[mask].std()) or 1.0
    x = np.where(mask, (hp - m2) / s2, 0).astype(np.float32)
    return x, {"hp_mean": mu, "hp_sd": sd, "norm_mean": m2, "norm_sd": s2}


def _pad(a: np.ndarray, mult: int) -> np.ndarray:
    h, w = a.shape
    return np.pad(a, ((0, -h % mult), (0, -w % mult)))


def read(d, root) -> dict[str, Mirror]:
    """Every annotated side of the dataset section ``d`` that is not excluded, preprocessed, by key."""
    found = {s.key: s for s in etmira.sides(root, d.depth_suffix)}
    missing = [k for k in d.test_mirrors if k not in found]
    if missing:
        raise DataError(f"test side(s) {', '.join(missing)} have no drawing in {root}/GT_REL "
                        f"(found {', '.join(sorted(found)[:6])})", fix="set -o dataset.test_mirrors=[...] to sides "
                                                                      "that exist")
    out = {}
    for key, side in found.items():
        if key in d.exclude:
            continue
        depth, gt, mask, source = etmira.load(side)
        x, st = high_pass(depth, mask, d.hp_sigma_px, d.clip_std)
        g = d.tile_grid + 1
        files = tuple(str(p) for p in (side.depth, side.gt, side.mask or side.albedo))
        out[key] = Mirror(key, _pad(x, g), _pad(gt & mask, g), _pad(mask, g), source, depth.shape, files, st)
    train = [k for k in out if k not in d.test_mirrors]
    if not train:
        raise DataError(f"no training sides left in {root}: every annotated side is a test side or excluded",
                        fix="check dataset.test_mirrors and dataset.exclude")
    return out


def tiles(m: Mirror, grid: int) -> list[tuple[int, int, int, int]]:
    """(y0, x0, h, w) of the grid×grid tiles with half-tile stride that hold annotation."""
    H, W = m.x.shape
    sh, sw = H // (grid + 1), W // (grid + 1)
    return [(i * sh, j * sw, 2 * sh, 2 * sw) for i in range(grid) for j in range(grid)
            if m.gt[i * sh:i * sh + 2 * sh, j * sw:j * sw + 2 * sw].any()]


def grid_patches(m: Mirror, patch: int, min_mirror: float) -> list[tuple[int, int]]:
    """Top-left corners of the non-overlapping patches with at least ``min_mirror`` of mirror pixels."""
    H, W = m.x.shape
    return [(y, x) for y in range(0, H - patch + 1, patch) for x in range(0, W - patch + 1, patch)
            if m.mask[y:y + patch, x:x + patch].mean() >= min_mirror and m.mask[y:y + patch, x:x + patch].any()]


@dataclass(frozen=True)
class Patch:
    key: str
    y: int
    x: int

    @property
    def id(self) -> str:
        return f"{self.key}@{self.y},{self.x}"


def held_out(mirrors: dict[str, Mirror], d) -> dict[str, list[Patch]]:
    """The test sides' patches, shuffled (split_seed) and split in half: val (first half) and test."""
    pool = [Patch(k, y, x) for k in d.test_mirrors for y, x in grid_patches(mirrors[k], d.patch, d.min_mirror)]
    order = np.random.default_rng(d.split_seed).permutation(len(pool))
    pool = [pool[i] for i in order]
    half = len(pool) // 2
    if half < 1:
        raise DataError(f"the test sides {', '.join(d.test_mirrors)} hold {len(pool)} patch(es) of {d.patch} px",
                        fix="lower dataset.patch or add test sides")
    return {"val": pool[:half], "test": pool[half:]}


def crop(m: Mirror, y: int, x: int, patch: int, net: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(x (1, S, S) float, gt (1, S, S) float 0/1, mirror (1, S, S) float 0/1) of one patch resized to net size
    (area averaging; masks ≥ 0.5)."""
    t = [torch.from_numpy(np.ascontiguousarray(a[y:y + patch, x:x + patch], dtype=np.float32))[None]
         for a in (m.x, m.gt, m.mask)]
    if patch != net:
        t = [F.interpolate(a[None], size=(net, net), mode="area")[0] for a in t]
        t[1], t[2] = (t[1] >= 0.5).float(), (t[2] >= 0.5).float()
    return t[0], t[1], t[2]


class TrainPatches(Dataset):
    """``patches_per_tile`` random patches from every annotated tile of the training sides, per epoch; train-time
    rot90 and flips."""

    def __init__(self, mirrors: list[Mirror], d, augment: bool):
        self.items = [(m, t) for m in mirrors for t in tiles(m, d.tile_grid)]
        self.d, self.augment = d, augment
        if not self.items:
            raise DataError("no training tile holds annotation", fix="check the drawings in GT_REL")

    def __len__(self):
        return len(self.items) * self.d.patches_per_tile

    def __getitem__(self, i):
        m, (ty, tx, th, tw) = self.items[i // self.d.patches_per_tile]
        p = self.d.patch
        y = ty + int(torch.randint(max(1, th - p + 1), (1,)))
        x = tx + int(torch.randint(max(1, tw - p + 1), (1,)))
        y, x = min(y, m.x.shape[0] - p), min(x, m.x.shape[1] - p)
        xi, gt, _ = crop(m, y, x, p, self.d.net_size)
        if self.augment:
            k = int(torch.randint(4, (1,)))
            xi, gt = torch.rot90(xi, k, (1, 2)), torch.rot90(gt, k, (1, 2))
            if torch.rand(1) < 0.5:
                xi, gt = xi.flip(2), gt.flip(2)
            if torch.rand(1) < 0.5:
                xi, gt = xi.flip(1), gt.flip(1)
        return xi.contiguous(), gt.contiguous()


class HeldOut(Dataset):
    def __init__(self, mirrors: dict[str, Mirror], patches: list[Patch], d):
        self.m, self.p, self.d = mirrors, patches, d

    def __len__(self):
        return len(self.p)

    def __getitem__(self, i):
        p = self.p[i]
        x, gt, _ = crop(self.m[p.key], p.y, p.x, self.d.patch, self.d.net_size)
        return x, gt
