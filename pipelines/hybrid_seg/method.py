"""hybrid-seg's method pieces outside the network: target maps, augmentation, metadata vectors, the HoVer-Net loss,
instance post-processing, per-image metrics and the Lightning module (card: docs/papers/hybrid-seg.md)."""

from __future__ import annotations

import math
from dataclasses import dataclass

import lightning as L
import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from medrun.metrics import instance as inst_metrics
from medrun.metrics import segmentation as seg_metrics

N_TYPES = 6
CLASS_NAMES = ("neoplastic", "inflammatory", "connective", "dead", "epithelial")


# -- data in memory ---------------------------------------------------------------------------------------------
@dataclass
class Nuclei:
    """Patches in memory: ids, files (for data.lock.json), images (N,H,W,3) uint8, instance maps (N,H,W) int32,
    type maps (N,H,W) uint8 (PanNuke codes) and metadata vectors (N, M) float32."""

    ids: list[str]
    files: list[str]
    images: np.ndarray
    inst: np.ndarray
    types: np.ndarray
    meta: np.ndarray

    def take(self, idx) -> Nuclei:
        idx = list(idx)
        return Nuclei([self.ids[i] for i in idx], [self.files[i] for i in idx], self.images[idx], self.inst[idx],
                      self.types[idx], self.meta[idx])

    def __len__(self):
        return len(self.ids)


def hv_maps(inst: np.ndarray) -> np.ndarray:
    """(2, H, W) horizontal and vertical distances to each nucleus centre in [−1, 1] (MONAI ComputeHoVerMaps)."""
    from monai.transforms import ComputeHoVerMaps

    return np.asarray(ComputeHoVerMaps(dtype="float32")(inst[None].astype(np.int64)), np.float32)


def hed_jitter(img: np.ndarray, rng: np.random.Generator, amount: float = 0.05) -> np.ndarray:
    """Stain jitter in HED space (skimage ``rgb2hed``/``hed2rgb``): each channel scaled by 1 ± amount."""
    from skimage.color import hed2rgb, rgb2hed

    hed = rgb2hed(img.astype(np.float32) / 255)
    hed = hed * rng.uniform(1 - amount, 1 + amount, 3)
    return np.clip(hed2rgb(hed) * 255, 0, 255).astype(np.uint8)


def augment(img, inst, types, rng: np.random.Generator):
    """Flips, rot90, HED jitter ±5 %, brightness/contrast ±10 %, Gaussian blur σ ≤ 1 (p 0.5 each for the photometric
    ones); the label maps follow the geometric ones."""
    from scipy import ndimage

    k = int(rng.integers(4))
    img, inst, types = (np.rot90(a, k, (0, 1)) for a in (img, inst, types))
    if rng.random() < 0.5:
        img, inst, types = img[:, ::-1], inst[:, ::-1], types[:, ::-1]
    img = np.ascontiguousarray(img)
    if rng.random() < 0.5:
        img = hed_jitter(img, rng)
    if rng.random() < 0.5:
        f = img.astype(np.float32)
        f = (f - f.mean()) * rng.uniform(0.9, 1.1) + f.mean() * rng.uniform(0.9, 1.1)
        img = np.clip(f, 0, 255).astype(np.uint8)
    if rng.random() < 0.5:
        img = ndimage.gaussian_filter(img.astype(np.float32), (rng.uniform(0, 1),) * 2 + (0,)).astype(np.uint8)
    return img, np.ascontiguousarray(inst), np.ascontiguousarray(types)


def normalise(images: np.ndarray, mean, std) -> torch.Tensor:
    """(N,H,W,3) uint8 → (N,3,H,W) float32: scale to [0, 1], then per-channel mean/std."""
    x = (images.astype(np.float32) / 255 - np.asarray(mean, np.float32)) / np.asarray(std, np.float32)
    return torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2)))


class NucleiData(Dataset):
    """(x 3×H×W, meta M, targets {np one-hot 2×H×W, hv 2×H×W, nc one-hot 6×H×W}); train-time augmentation.
    ``synthetic`` (a Nuclei of generated pairs) replaces each item with probability ``rho``."""

    def __init__(self, data: Nuclei, mean, std, train: bool, synthetic: Nuclei | None = None, rho: float = 0.0,
                 repeats: int = 1, augment: bool = True):
        self.d, self.mean, self.std, self.train, self.augment = data, mean, std, train, train and augment
        self.syn, self.rho, self.repeats = synthetic, rho, repeats
        self._hv = None if self.augment else [hv_maps(m) for m in data.inst]

    def __len__(self):
        return len(self.d) * self.repeats

    def __getitem__(self, i):
        i %= len(self.d)
        src = self.d
        rng = np.random.default_rng(int(torch.randint(2**31 - 1, (1,)))) if self.train else None
        if self.train and self.syn is not None and len(self.syn) and rng.random() < self.rho:
            src, i = self.syn, int(rng.integers(len(self.syn)))
        img, ins, typ = src.images[i], src.inst[i], src.types[i]
        if self.augment:
            img, ins, typ = augment(img, ins, typ, rng)
        hv = self._hv[i] if self._hv is not None and src is self.d else hv_maps(ins)
        x = normalise(img[None], self.mean, self.std)[0]
        fg = torch.from_numpy((ins > 0).astype(np.int64))
        t = torch.from_numpy(typ.astype(np.int64))
        return x, torch.from_numpy(src.meta[i]), {"np": F.one_hot(fg, 2).permute(2, 0, 1).float(),
                                                 "hv": torch.from_numpy(hv), "nc": F.one_hot(t, N_TYPES).permute(
                                                     2, 0, 1).float(), "inst": torch.from_numpy(ins.astype(np.int64))}


# -- metadata ---------------------------------------------------------------------------------------------------
def metadata_vectors(tissue: list[str], ids: list[str], table: dict | None, tissues: tuple[str, ...]) -> np.ndarray:
    """[tissue one-hot (19); numeric columns z-scored with mean-imputation and a missing flag each; categorical
    columns one-hot with 'unknown'] per image. ``table``: {"rows": {image_id: {col: text}}, "numeric": {col: (mean,
    sd)}, "categorical": {col: [levels]}} (``read_metadata``)."""
    out = []
    for t, iid in zip(tissue, ids, strict=True):
        v = [1.0 if t == name else 0.0 for name in tissues]
        if table:
            row = table["rows"].get(iid, {})
            for col, (mu, sd) in table["numeric"].items():
                try:
                    x = float(row.get(col, ""))
                    ok = math.isfinite(x)
                except ValueError:
                    ok = False
                v += [(x - mu) / sd if ok else 0.0, 0.0 if ok else 1.0]
            for col, levels in table["categorical"].items():
                val = row.get(col) or "unknown"
                v += [1.0 if val == lev else 0.0 for lev in levels]
        out.append(v)
    return np.asarray(out, np.float32)


def read_metadata(path) -> dict:
    """metadata.csv: ``image_id`` plus any columns; numeric columns (every non-empty value a number) get mean/sd,
    the others are categorical with their sorted levels plus 'unknown'."""
    import pandas as pd

    from medrun.errors import DataError

    try:
        df = pd.read_csv(path, dtype=str, keep_default_na=False)
    except (OSError, ValueError) as e:
        raise DataError(f"cannot read {path}: {e}", fix="give a CSV with an image_id column") from None
    if "image_id" not in df.columns:
        raise DataError(f"{path} has no image_id column (columns: {', '.join(df.columns[:6])})",
                        fix="name the column of patch ids image_id (e.g. fold1_0000)")
    numeric, categorical = {}, {}
    for col in df.columns.drop("image_id"):
        vals = pd.to_numeric(df[col].replace("", np.nan), errors="coerce")
        if vals.notna().sum() and vals.notna().sum() == (df[col] != "").sum():
            numeric[col] = (float(vals.mean()), float(vals.std(ddof=0)) or 1.0)
        else:
            categorical[col] = sorted({v for v in df[col] if v}) + ["unknown"]
    rows = {r["image_id"]: r for r in df.to_dict("records")}
    return {"rows": rows, "numeric": numeric, "categorical": categorical}


# -- loss -------------------------------------------------------------------------------------------------------
def make_loss(c):
    from monai.apps.pathology.losses import HoVerNetLoss

    return HoVerNetLoss(lambda_hv_mse=c.hv_mse, lambda_hv_mse_grad=c.hv_msge, lambda_np_ce=c.np_ce,
                        lambda_np_dice=c.np_dice, lambda_nc_ce=c.nc_ce, lambda_nc_dice=c.nc_dice)


def monai_keys(d: dict) -> dict:
    from monai.utils.enums import HoVerNetBranch

    return {HoVerNetBranch.NP.value: d["np"], HoVerNetBranch.HV.value: d["hv"], HoVerNetBranch.NC.value: d["nc"]}


# -- post-processing --------------------------------------------------------------------------------------------
def _norm(a: np.ndarray) -> np.ndarray:
    lo, hi = float(a.min()), float(a.max())
    return (a - lo) / (hi - lo) if hi > lo else np.zeros_like(a)


def _drop_small(labels: np.ndarray, min_size: int) -> np.ndarray:
    """Labelled objects with fewer than ``min_size`` pixels set to 0."""
    if min_size <= 1 or not labels.any():
        return labels
    small = np.bincount(labels.ravel()) < min_size
    small[0] = False
    return np.where(small[labels], 0, labels)


def instances(p_np: np.ndarray, hv: np.ndarray, post) -> np.ndarray:
    """Instance map from NP probabilities and HV maps. mask = p_NP > t (objects < min_size dropped); S = max(1 −
    norm(Sobel_x h), 1 − norm(Sobel_y v)) on the signed Sobel responses (HoVer-Net's and MONAI's form: the card's
    norm|Sobel| loses small nuclei, whose interior slope is steep), zero outside the mask; markers = mask ∧
    (S < marker_threshold), opened, objects < min_size/2 dropped; E = Gaussian((1 − S)·mask);
    ``watershed(−E, markers, mask=mask)``; a mask component that holds no marker becomes one instance (ours: the
    reference drops it), and instances < min_size are dropped."""
    from scipy import ndimage
    from skimage.morphology import disk
    from skimage.segmentation import watershed

    mask = _drop_small(ndimage.label(p_np > post.np_threshold)[0], post.min_size) > 0
    if not mask.any():
        return np.zeros(mask.shape, np.int32)
    h, v = _norm(hv[0]), _norm(hv[1])
    s = np.maximum(1 - _norm(ndimage.sobel(h, axis=1)), 1 - _norm(ndimage.sobel(v, axis=0))) * mask
    markers = ndimage.binary_opening(mask & (s < post.marker_threshold), structure=disk(1))
    markers = _drop_small(ndimage.label(markers)[0], post.min_size // 2)
    energy = ndimage.gaussian_filter((1 - s) * mask, post.smooth_sigma) if post.smooth_sigma else (1 - s) * mask
    out = watershed(-energy, markers, mask=mask).astype(np.int32)
    rest = ndimage.label(mask & (out == 0))[0]  # mask components without a marker: one instance each (ours)
    out[rest > 0] = rest[rest > 0] + out.max()
    return _drop_small(out, post.min_size)


def instance_types(inst: np.ndarray, nc_prob: np.ndarray, p_np: np.ndarray) -> tuple[dict, dict]:
    """{instance: majority NC class among 1…5} and {instance: mean p_NP} (the instance score)."""
    cls = nc_prob[1:].argmax(0) + 1
    types, scores = {}, {}
    for i in np.unique(inst):
        if i == 0:
            continue
        sel = inst == i
        types[int(i)] = int(np.bincount(cls[sel], minlength=N_TYPES).argmax())
        scores[int(i)] = float(p_np[sel].mean())
    return types, scores


def split_by_type(inst: np.ndarray, types) -> np.ndarray:
    """(5, H, W) per-class instance maps from an instance map and its types (dict or a type map)."""
    out = np.zeros((5, *inst.shape), np.int32)
    for c in range(1, 6):
        if isinstance(types, dict):
            keep = [i for i, t in types.items() if t == c]
            sel = np.isin(inst, keep)
        else:
            sel = (types == c) & (inst > 0)
        out[c - 1][sel] = inst[sel]
    return out


def decode(out: dict, post) -> dict:
    """One image's network output (np 2×H×W logits, hv, nc logits) → probabilities, instances, types, scores."""
    p_np = torch.softmax(out["np"], 0)[1].numpy()
    nc = torch.softmax(out["nc"], 0).numpy()
    hv = out["hv"].numpy()
    inst = instances(p_np, hv, post)
    types, scores = instance_types(inst, nc, p_np)
    type_map = np.zeros(inst.shape, np.uint8)
    for i, t in types.items():
        type_map[inst == i] = t
    return {"p_np": p_np, "hv": hv, "inst": inst, "types": types, "scores": scores, "type_map": type_map}


def image_metrics(d: dict, gt_inst: np.ndarray, gt_types: np.ndarray) -> dict:
    """Per-image: NP Dice/IoU, HD95 (px) and boundary F1 (2 px) of the nucleus mask, bPQ (DQ, SQ), mPQ and per-class
    PQ, AJI, AP50/AP, per-class Dice and IoU of the type map."""
    pred_fg, gt_fg = d["inst"] > 0, gt_inst > 0
    inter, tot = (pred_fg & gt_fg).sum(), pred_fg.sum() + gt_fg.sum()
    union = (pred_fg | gt_fg).sum()
    row = {"np_dice": float(2 * inter / tot) if tot else 1.0, "np_iou": float(inter / union) if union else 1.0,
           "hd95": float(seg_metrics.hausdorff95(pred_fg, gt_fg)),
           "boundary_f1": float(seg_metrics.boundary_f1(pred_fg, gt_fg, tolerance=2.0))}
    pq = inst_metrics.panoptic_quality(d["inst"], gt_inst)
    row.update(bpq=pq["pq"], dq=pq["rq"], sq=pq["sq"], n_true=int(len(np.unique(gt_inst)) - 1),
               n_pred=len(d["types"]))
    mpq = inst_metrics.multiclass_panoptic_quality(split_by_type(d["inst"], d["types"]),
                                                   split_by_type(gt_inst, gt_types))
    row["mpq"] = mpq["mpq"]
    for c, name in enumerate(CLASS_NAMES):
        row[f"pq_{name}"] = mpq["per_class"][c]
        p, g = d["type_map"] == c + 1, gt_types == c + 1
        s = p.sum() + g.sum()
        row[f"dice_{name}"] = float(2 * (p & g).sum() / s) if s else math.nan
        u = (p | g).sum()
        row[f"iou_{name}"] = float((p & g).sum() / u) if u else math.nan
    row["aji"] = inst_metrics.aji(d["inst"], gt_inst)
    ap = inst_metrics.average_precision(d["inst"], gt_inst, d["scores"] or None)
    row["ap50"], row["ap"] = ap["ap50"], ap["ap"]
    return row


def summarise(rows: list[dict]) -> dict:
    """Mean over images of every numeric column (NaN left out: e.g. a class absent from an image)."""
    out = {"n_images": len(rows)}
    for k in rows[0] if rows else []:
        vals = np.array([r[k] for r in rows if isinstance(r.get(k), (int, float))], float)
        if vals.size:
            fin = vals[np.isfinite(vals)]
            out[k] = float(fin.mean()) if fin.size else math.nan
    return out


# -- Lightning module -------------------------------------------------------------------------------------------
class LitHybrid(L.LightningModule):
    def __init__(self, net, loss_cfg, train_cfg, post_cfg, use_meta: bool):
        super().__init__()
        self.net, self.t, self.post, self.use_meta = net, train_cfg, post_cfg, use_meta
        self.loss = make_loss(loss_cfg)
        self._val: list[float] = []

    def forward(self, x, meta=None):
        return self.net(x, meta if self.use_meta else None)

    def training_step(self, batch, _):
        x, meta, y = batch
        loss = self.loss(monai_keys(self(x, meta)), monai_keys(y))
        self.log("train_loss", loss, on_step=False, on_epoch=True, prog_bar=True, batch_size=len(x))
        return loss

    def validation_step(self, batch, _):
        x, meta, y = batch
        out = self(x, meta)
        self.log("val_loss", self.loss(monai_keys(out), monai_keys(y)), on_epoch=True, batch_size=len(x))
        for j in range(len(x)):
            d = decode({k: v[j].detach().float().cpu() for k, v in out.items()}, self.post)
            self._val.append(inst_metrics.panoptic_quality(d["inst"], y["inst"][j].cpu().numpy())["pq"])

    def on_validation_epoch_end(self):
        vals = [v for v in self._val if math.isfinite(v)]
        self.log("val_bpq", float(np.mean(vals)) if vals else 0.0, prog_bar=True)
        self._val = []

    def configure_optimizers(self):
        t = self.t
        opt = torch.optim.AdamW([p for p in self.net.parameters() if p.requires_grad], lr=t.lr,
                                weight_decay=t.weight_decay)
        warm, total = t.warmup_epochs, max(1, t.epochs)

        def factor(epoch: int) -> float:
            if epoch < warm:
                return (epoch + 1) / (warm + 1)
            return 0.5 * (1 + math.cos(math.pi * (epoch - warm) / max(1, total - warm)))

        sched = torch.optim.lr_scheduler.LambdaLR(opt, factor)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "epoch"}}

